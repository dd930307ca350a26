"""Every process a job started, and whether any outlived it; used after every launcher test.

Run:  imported by tests/test_methods.py (laptop tier) and tests/slurm_util.py (SLURM tests).

How a process is known to belong to job J (all nodes of practice/local_slurm.sh are this machine,
in one PID namespace, so /proc shows them all):
  * its environment: experiments/common.sh exports HPO_JOB_TAG=<J>-<random> before it starts
    anything, so the driver, `ray start` in the srun steps and the raylets, `ray::…` workers, Ray
    Train workers, the trials' children and torchrun ranks inherit it (command lines do not carry
    the job: a Ray worker is `ray::ImplicitFunc.train`). Inside a SLURM job every process also has
    SLURM_JOB_ID=J, even those started before common.sh ran;
  * its ancestry: a descendant of such a process. Needed because /proc/PID/environ is the memory
    the process started with, and setproctitle (Ray's agents and some `ray::IDLE` workers) zeroes
    it to make room for the new title: those carry the marker in getenv() but not in /proc;
  * having been seen as one of the above while the job ran (`Watch`, by pid + start time): a child
    reparented to init after its parent died has no ancestry left.

    with Watch(job_id) as watch:          # during the job: a scan every 0.5 s
        run the job
    assert_gone(job_id, watch)            # after it: fail, naming each process still running

`Watch.seen` is also the positive control: it shows that the marker reached the processes the
check relies on (Ray workers, trials), so an empty result after the job means something.
Linux only (/proc); as root every process is readable, otherwise one's own (the job's are).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "HPO_JOB_TAG"
_KEYS = {MARKER.encode(): "tag", b"SLURM_JOB_ID": "slurm_job", b"SLURMD_NODENAME": "node"}


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int          # start time in clock ticks since boot: (pid, start) names one process for good
    state: str          # R, S, D, Z, ... (/proc/PID/stat)
    name: str           # comm, e.g. raylet, ray::IDLE (setproctitle), python
    cmdline: str
    tag: str = ""       # HPO_JOB_TAG in /proc/PID/environ ('' if none or unreadable)
    slurm_job: str = "" # SLURM_JOB_ID
    node: str = ""      # SLURMD_NODENAME (inside a SLURM job step)
    why: str = ""       # how it was matched to the job: marker, child of PID, seen during the job

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start

    def describe(self) -> str:
        cmd = self.cmdline if len(self.cmdline) <= 160 else self.cmdline[:157] + "..."
        where = f" node={self.node}" if self.node else ""
        return (f"pid {self.pid} (ppid {self.ppid}, state {self.state}{where}, {self.why}) {self.name!r}: {cmd}  "
                f"[{MARKER}={self.tag or '-'} SLURM_JOB_ID={self.slurm_job or '-'}]")


def available() -> bool:
    return Path("/proc/self/environ").exists()


def _read(pid: int) -> Proc | None:
    base = Path(f"/proc/{pid}")
    try:
        stat = (base / "stat").read_text(errors="replace")
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        found = {}
        try:
            for item in (base / "environ").read_bytes().split(b"\0"):
                key, _, value = item.partition(b"=")
                if key in _KEYS:
                    found[_KEYS[key]] = value.decode(errors="replace")
        except PermissionError:          # not ours: its ancestry still counts
            pass
    except (OSError, ValueError, IndexError):     # gone meanwhile
        return None
    return Proc(pid=pid, ppid=int(rest[1]), start=int(rest[19]), state=rest[0], name=name,
                cmdline=cmdline or f"[{name}]", **found)


def snapshot() -> dict[int, Proc]:
    """Every live process (zombies left out: they hold nothing, and their parent is checked)."""
    me = os.getpid()
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me:
            p = _read(int(d.name))
            if p is not None and p.state != "Z":
                out[p.pid] = p
    return out


def marked(p: Proc, job_id: str) -> bool:
    """Carries job `job_id`'s marker: HPO_JOB_TAG `<job id>-<random>`, or SLURM_JOB_ID = the id."""
    job_id = str(job_id)
    return p.tag == job_id or p.tag.startswith(job_id + "-") or p.slurm_job == job_id


def job_processes(job_id: str, seen: dict | None = None, extra=None) -> list[Proc]:
    """The job's live processes: marked, descendants of marked ones, ones in `seen` (pid + start
    time) and ones for which extra(proc) is true (e.g. a command line naming the job's Ray temp dir)."""
    procs = snapshot()
    hits: dict[int, str] = {}
    for p in procs.values():
        if marked(p, job_id):
            hits[p.pid] = "marker"
        elif seen and p.key in seen:
            hits[p.pid] = "seen during the job"
        elif extra is not None and extra(p):
            hits[p.pid] = "command line"
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    todo = list(hits)
    while todo:                                   # descendants of every hit
        parent = todo.pop()
        for c in children.get(parent, ()):
            if c not in hits:
                hits[c] = f"child of {parent}"
                todo.append(c)
    return sorted((_with(procs[pid], why) for pid, why in hits.items()), key=lambda p: p.pid)


def _with(p: Proc, why: str) -> Proc:
    from dataclasses import replace
    return replace(p, why=why)


class Watch:
    """While the job runs, a background scan every `interval` s records every process of the job
    (`seen`: (pid, start time) -> Proc): the processes the leftovers check must find afterwards,
    even those whose parent is gone by then."""

    def __init__(self, job_id: str, interval: float = 0.5, extra=None):
        self.job_id, self.interval, self.extra = str(job_id), interval, extra
        self.seen: dict[tuple[int, int], Proc] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job_id}", daemon=True)

    def scan(self) -> None:
        if available():
            for p in job_processes(self.job_id, self.seen, self.extra):
                self.seen[p.key] = p          # the latest view: Ray workers retitle themselves

    def _run(self):
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(self.interval)

    def start(self) -> "Watch":
        self._thread.start()
        return self

    def stop(self) -> "Watch":
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=10)
        return self

    def __enter__(self) -> "Watch":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def matching(self, needle: str, marker_only: bool = False) -> list[Proc]:
        """Processes seen whose name or command line contains `needle` (marker_only: only those whose
        /proc environ carried the job's marker themselves)."""
        return [p for p in self.seen.values() if (needle in p.name or needle in p.cmdline)
                and (not marker_only or marked(p, self.job_id))]

    def summary(self, limit: int = 40) -> str:
        procs = sorted(self.seen.values(), key=lambda p: p.pid)
        lines = [p.describe() for p in procs[:limit]]
        if len(procs) > limit:
            lines.append(f"... and {len(procs) - limit} more")
        return "\n".join(lines) or "(none)"


def leftovers(job_id: str, watch: Watch | None = None, wait_s: float = 20.0, poll_s: float = 0.25,
              extra=None) -> list[Proc]:
    """The job's processes still alive after up to `wait_s` s (they may take a moment: Ray's daemons
    stop asynchronously once the driver is gone); [] as soon as none is left."""
    seen = watch.seen if watch is not None else None
    extra = extra or (watch.extra if watch is not None else None)
    deadline = time.time() + wait_s
    while True:
        left = job_processes(job_id, seen, extra)
        if not left or time.time() >= deadline:
            return left
        time.sleep(poll_s)


def assert_gone(job_id: str, watch: Watch | None = None, wait_s: float = 20.0, context: str = "",
                kill: bool = True, extra=None) -> None:
    """Fail, naming each one, if a process of the job still runs `wait_s` s after the job ended.
    With kill=True they are then SIGKILLed by pid, so one failing test does not hand them on to
    the next (they belong to this job: nothing else is touched)."""
    if watch is not None:
        watch.stop()
    if not available():
        return
    left = leftovers(job_id, watch, wait_s, extra=extra)
    if not left:
        return
    msg = (f"job {job_id} left {len(left)} process(es) running {wait_s:g} s after it ended "
           f"({MARKER}={job_id}-…, SLURM_JOB_ID={job_id}, their children, or seen during the job):\n  "
           + "\n  ".join(p.describe() for p in left))
    if kill:
        for p in left:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except OSError:
                pass
    raise AssertionError(msg + (f"\n{context}" if context else ""))
