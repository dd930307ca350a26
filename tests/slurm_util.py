"""Helpers for the tests that submit jobs to the local SLURM cluster (practice/local_slurm.sh).

Run:  imported by tests/test_slurm_*.py; `slurm_cluster` is the session fixture that brings the
cluster up (or SKIPS with the reason; HPO_TEST_REQUIRE_SLURM=1, or CI=true on a root Debian-like
machine, turns that into a failure). Every job `submit` starts is watched until it leaves squeue,
so `_assert_no_leftovers` finds every process it started (tests/leftovers.py), not only Ray's daemons.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import leftovers as _lo

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SLURM = ROOT / "practice" / "local_slurm.sh"
VENV_BIN = Path(sys.executable).parent
JOB_WAIT_S = 150                  # bound on any wait for a job to leave squeue


def _run(cmd, timeout=30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _job_env(**extra) -> dict:
    """The submitting shell's environment: venv first on PATH, no stray Ray/container settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "SLURM_", "APPTAINER_", "HPO_"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HPO_PLOTS"] = "0"                # ~1 s of CPU per job; tests/test_methods.py checks a job's plots
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _in_queue(job_id: str) -> str:
    """squeue state letter(s) of the job, '' once it has left the queue."""
    r = _run(["squeue", "-h", "-j", job_id, "-o", "%t"])
    return r.stdout.strip()


def _wait_gone(*job_ids: str, timeout: float = JOB_WAIT_S, on_poll=None) -> float:
    """Poll squeue every 0.25 s until every job has left it; return the seconds waited."""
    t0 = time.time()
    pending = set(job_ids)
    while pending:
        states = {j: _in_queue(j) for j in pending}
        if on_poll:
            on_poll(states)
        pending = {j for j, s in states.items() if s}
        for j in set(job_ids) - pending:          # gone: its process watch has seen all it will see
            if j in _WATCHES:
                _WATCHES[j].stop()
        if not pending:
            break
        if time.time() - t0 > timeout:
            for j in pending:
                _run(["scancel", j])
            raise AssertionError(f"jobs {sorted(pending)} still in squeue after {timeout}s (cancelled)")
        time.sleep(0.25)
    return time.time() - t0


def _job_info(job_id: str) -> dict:
    r = _run(["scontrol", "show", "job", "-o", job_id])
    assert r.returncode == 0, f"scontrol show job {job_id}: {r.stderr}"
    return dict(re.findall(r"(\w+)=(\S*)", r.stdout))


def _text(out: Path) -> str:
    try:
        return out.read_text(errors="replace")
    except FileNotFoundError:
        return f"<no output file {out}>"


# One process watch per submitted job (tests/leftovers.py): from sbatch until the job leaves squeue
# it records every process of the job -- SLURM_JOB_ID or HPO_JOB_TAG in its environment, a
# descendant of such a process, or a command line naming the job's Ray temp dir /tmp/ray-<job>-<node>.
_WATCHES: dict[str, _lo.Watch] = {}


def _ray_cmdline(job_id: str):
    return lambda p: f"/ray-{job_id}-" in p.cmdline


def watch_of(job_id: str) -> _lo.Watch | None:
    return _WATCHES.get(str(job_id))


def _leftovers(job_id: str, wait_s: float = 0.0) -> list[str]:
    """What of the job is still alive/present: its processes on any node (the Ray daemons and `ray::`
    workers, srun steps, trials and their children: see tests/leftovers.py), Ray temp dirs, job steps."""
    left = [p.describe() for p in _lo.leftovers(job_id, _WATCHES.get(job_id), wait_s=wait_s,
                                                 extra=_ray_cmdline(job_id))]
    left += [str(p) for p in Path("/tmp").glob(f"ray-{job_id}-*")]
    steps = _run(["squeue", "-h", "-s", "-j", job_id]).stdout.strip()
    if steps:
        left.append(f"squeue -s: {steps}")
    return left


def _assert_no_leftovers(job_id: str, out: Path, wait_s: float = 10.0):
    watch = _WATCHES.get(job_id)
    if watch is not None:
        watch.stop()
    deadline = time.time() + wait_s     # the job left squeue; give the kernel a moment to reap
    while (left := _leftovers(job_id)) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"job {job_id} left processes/dirs behind:\n  " + "\n  ".join(left) + f"\n--- {out}:\n{_text(out)}"


def _assert_completed(job_id: str, out: Path):
    info = _job_info(job_id)
    assert (info.get("JobState"), info.get("ExitCode")) == ("COMPLETED", "0:0"), \
        f"job {job_id}: JobState={info.get('JobState')} ExitCode={info.get('ExitCode')}\n--- {out}:\n{_text(out)}"


def _json_lines(text: str, tag: str) -> list[dict]:
    """The JSON objects printed after `TAG ` at the start of a line. Ray forwards the workers' output
    into the same job log without waiting for a line to end, so a worker's message can follow the
    object on the same line: decode the object and ignore what follows it."""
    import json
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(line[len(tag) + 1:])[0] for line in text.splitlines() if line.startswith(tag + " ")]




def submit(script: str, out: Path, sbatch_args: list[str], time_min: int = 5,
           script_args: list[str] = (), **env) -> str:
    """sbatch [sbatch_args] SCRIPT [script_args] from the repository root with the test's venv on
    PATH (a learner's override of a launcher's options goes after the script); returns the job id."""
    cmd = ["sbatch", "--parsable", f"--output={out}", f"--chdir={ROOT}", f"--time={time_min}",
           *sbatch_args, script, *script_args]
    r = _run(cmd, cwd=ROOT, env=_job_env(**env))
    assert r.returncode == 0, f"sbatch failed: {r.stderr}"
    job_id = r.stdout.strip().split(";")[0]
    _WATCHES[job_id] = _lo.Watch(job_id, extra=_ray_cmdline(job_id)).start()
    return job_id


# ----------------------------------------------------------------------------- cluster
def on_ci() -> bool:
    """CI (CI=true, as GitHub/GitLab set it) on the machine the cluster is made for (root, Linux, apt):
    there a cluster that cannot start is a failure, not a skip (.ci/run stops before the tests)."""
    return (os.environ.get("CI", "").lower() in ("true", "1") and sys.platform.startswith("linux")
            and os.geteuid() == 0 and bool(shutil.which("apt-get") or shutil.which("slurmctld")))


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local two-node cluster (practice/local_slurm.sh up); down again at the end if we started it."""
    def cannot(reason: str):
        if os.environ.get("HPO_TEST_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPO_TEST_REQUIRE_SLURM=1 but {reason}")
        if on_ci():
            pytest.fail(f"CI={os.environ['CI']} on a root Linux machine with apt: the cluster tier must run, but {reason}")
        pytest.skip(reason)

    if not sys.platform.startswith("linux"):
        cannot("the local SLURM cluster needs Linux")
    if os.geteuid() != 0:
        cannot("the local SLURM cluster needs root (it starts slurmctld/slurmd/munged): run as root or in CI")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        cannot("SLURM is not installed and there is no apt-get to install it")
    was_up = _run(["bash", str(LOCAL_SLURM), "status"]).returncode == 0
    r = _run(["bash", str(LOCAL_SLURM), "up"], timeout=600)
    if r.returncode != 0:
        cannot(f"practice/local_slurm.sh up failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    yield
    if not was_up:
        _run(["bash", str(LOCAL_SLURM), "down"], timeout=120)
