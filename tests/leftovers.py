"""Every process a job started, found by its environment marker; used after every launcher test.

Run:  imported by tests/test_methods.py (laptop tier) and tests/slurm_util.py (SLURM tests).

experiments/common.sh exports HPO_JOB_TAG=<job id>-<random> before it starts anything, so every
process of the job inherits it: the driver, the Ray head and workers (`ray start` in the srun
steps, or the local runtime `ray.init()` starts on the laptop tier), the `ray::…` worker processes
the raylets fork, Ray Train workers, the trials' children and `torchrun` ranks. Command lines do
not carry the job (a Ray worker is called `ray::ImplicitFunc.train`), the environment does. Inside
a SLURM job every process also has SLURM_JOB_ID, even those started before common.sh ran.

This module scans /proc/*/environ (all nodes of practice/local_slurm.sh are this machine, in one
PID namespace) for processes whose HPO_JOB_TAG is `<job id>-…` or whose SLURM_JOB_ID is the job id:

    with Watch(job_id) as seen:          # during the job: what carried the marker (proves it is
        run the job                      #   inherited, so the check below cannot pass vacuously)
    assert_gone(job_id, context=log)     # after the job: nothing of it may still run

Linux only (/proc); as root every process is readable, otherwise only one's own (the job's are).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "HPO_JOB_TAG"
_KEYS = (MARKER.encode(), b"SLURM_JOB_ID", b"SLURMD_NODENAME")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str          # R, S, D, Z, ... (/proc/PID/stat)
    name: str           # comm, e.g. raylet, ray::IDLE (setproctitle), python
    cmdline: str
    tag: str            # its HPO_JOB_TAG ('' if none)
    slurm_job: str      # its SLURM_JOB_ID ('' if none)
    node: str           # SLURMD_NODENAME inside a SLURM job step ('' elsewhere)

    def describe(self) -> str:
        cmd = self.cmdline if len(self.cmdline) <= 160 else self.cmdline[:157] + "..."
        where = f" node={self.node}" if self.node else ""
        return (f"pid {self.pid} (ppid {self.ppid}, state {self.state}{where}) {self.name!r}: {cmd}  "
                f"[{MARKER}={self.tag or '-'} SLURM_JOB_ID={self.slurm_job or '-'}]")


def available() -> bool:
    return Path("/proc/self/environ").exists()


def _read(pid: int) -> Proc | None:
    base = Path(f"/proc/{pid}")
    try:
        env = (base / "environ").read_bytes()
        if not env:                      # kernel threads, zombies
            return None
        found = {}
        for item in env.split(b"\0"):
            key, _, value = item.partition(b"=")
            if key in _KEYS:
                found[key] = value.decode(errors="replace")
        if not found:
            return None
        stat = (base / "stat").read_text(errors="replace")
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, ValueError):        # gone meanwhile, or not ours to read
        return None
    return Proc(pid=pid, ppid=int(rest[1]), state=rest[0], name=name, cmdline=cmdline or f"[{name}]",
                tag=found.get(_KEYS[0], ""), slurm_job=found.get(_KEYS[1], ""), node=found.get(_KEYS[2], ""))


def belongs(p: Proc, job_id: str) -> bool:
    """Started by job `job_id`: its HPO_JOB_TAG is `<job id>-<random>`, or its SLURM_JOB_ID is the id."""
    job_id = str(job_id)
    return p.tag == job_id or p.tag.startswith(job_id + "-") or p.slurm_job == job_id


def job_processes(job_id: str) -> list[Proc]:
    """The live processes of the job (zombies excluded: they hold nothing and their parent is checked)."""
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        p = _read(int(d.name))
        if p is not None and p.state != "Z" and belongs(p, job_id):
            out.append(p)
    return sorted(out, key=lambda p: p.pid)


def processes_with_marker() -> list[Proc]:
    """Every live process that carries an HPO_JOB_TAG (any job)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            p = _read(int(d.name))
            if p is not None and p.state != "Z" and p.tag:
                out.append(p)
    return out


class Watch:
    """While the job runs, record every process that carries its marker (a background scan every
    `interval` s): `seen` maps pid -> Proc. Shows that the marker reached the processes the
    leftovers check relies on (Ray workers, trials), so an empty check after the job means something."""

    def __init__(self, job_id: str, interval: float = 0.5):
        self.job_id, self.interval = str(job_id), interval
        self.seen: dict[int, Proc] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job_id}", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            if available():
                for p in job_processes(self.job_id):
                    self.seen.setdefault(p.pid, p)
            self._stop.wait(self.interval)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        return False

    def names(self) -> set[str]:
        return {p.name for p in self.seen.values()}

    def matching(self, needle: str) -> list[Proc]:
        """Processes whose name or command line contains `needle`."""
        return [p for p in self.seen.values() if needle in p.name or needle in p.cmdline]

    def summary(self, limit: int = 40) -> str:
        procs = sorted(self.seen.values(), key=lambda p: p.pid)
        lines = [p.describe() for p in procs[:limit]]
        if len(procs) > limit:
            lines.append(f"... and {len(procs) - limit} more")
        return "\n".join(lines) or "(none)"


def leftovers(job_id: str, wait_s: float = 20.0, poll_s: float = 0.25) -> list[Proc]:
    """The job's processes still alive after up to `wait_s` s (they may take a moment to exit:
    Ray's daemons stop asynchronously once the driver is gone). [] as soon as none is left."""
    deadline = time.time() + wait_s
    while True:
        left = job_processes(job_id)
        if not left or time.time() >= deadline:
            return left
        time.sleep(poll_s)


def assert_gone(job_id: str, wait_s: float = 20.0, context: str = "", kill: bool = True) -> None:
    """Fail, naming each one, if any process the job started is still running `wait_s` s after it
    ended. With kill=True the leftovers are then SIGKILLed by pid (so one failing test does not
    leave them to the next); they carry this job's marker, so nothing else is touched."""
    if not available():
        return
    left = leftovers(job_id, wait_s)
    if not left:
        return
    msg = (f"job {job_id} left {len(left)} process(es) running ({MARKER}={job_id}-… or SLURM_JOB_ID={job_id}) "
           f"{wait_s:g} s after it ended:\n  " + "\n  ".join(p.describe() for p in left))
    if kill:
        for p in left:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except OSError:
                pass
    raise AssertionError(msg + (f"\n{context}" if context else ""))
