"""Walltime and preemption: USR1 stops a search cleanly, `--resume <job id>` continues it.

Run:  .venv/bin/python -m pytest -q tests/test_resume.py          (~4 min, laptop tier, CPU)

USR1 is what every run.slurm asks SLURM to send 5 minutes before the time limit
(`#SBATCH --signal=B:USR1@300`); here the test sends it to the launcher, as SLURM does to the batch shell.
"""
import csv
import json
import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.slow


def _env(tmp_path, job_id):
    env = dict(os.environ)
    env.update(HPO_LOG_ROOT=str(tmp_path), HPO_JOB_ID=job_id, HPO_PLOTS="0", RAY_AUTH_MODE="disabled", SLURM_JOB_ID="")
    return env


def _start(root, tmp_path, method, job_id, *args):
    log = tmp_path / method / f"hpo-{method}-{job_id}.out"
    proc = subprocess.Popen(["bash", str(root / f"experiments/{method}/run.slurm"), *args], cwd=root,
                            env=_env(tmp_path, job_id), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, log


def _usr1_when(proc, log, needle, timeout=300, also=(), settle_s=0.0):
    """USR1 to the launcher as soon as `needle` is in `log` (and each (file, text) of `also` in its
    file; a file given as a glob pattern under the log's folder: any match), `settle_s` after that."""
    waits = [(log, needle), *also]

    def found(f, text):
        files = sorted(log.parent.glob(f)) if isinstance(f, str) else [f]
        return any(g.exists() and text in g.read_text(errors="replace") for g in files)

    def seen():
        return all(found(f, text) for f, text in waits)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not seen():
        time.sleep(0.2)
    assert proc.poll() is None, log.read_text()[-3000:]
    assert seen(), log.read_text()[-3000:]
    time.sleep(settle_s)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def _rows(path):
    with open(path, newline="") as f:
        return {r["trial_id"]: r for r in csv.DictReader(f)}


def _resume(root, tmp_path, method, args):
    """Job "second": the same options + --resume first; returns (log, its text, its CSV rows)."""
    p = subprocess.run(["bash", str(root / f"experiments/{method}/run.slurm"), *args, "--resume", "first"],
                       cwd=root, env=_env(tmp_path, "second"), capture_output=True, text=True, timeout=900)
    log = tmp_path / method / f"hpo-{method}-second.out"
    out = log.read_text()
    assert p.returncode == 0, out[-4000:]
    return log, out, _rows(log.with_suffix(".csv"))


def test_ray_search_stopped_by_usr1_resumes_where_it_stopped(root, tmp_path):
    args = ["--smoke", "--num-samples", "2", "--epochs", "4", "--grace-period", "4"]
    proc, log = _start(root, tmp_path, "asha", "first", *args)
    # A trial's checkpoint is written (checkpoint_*/trial_state.json) before Tune's driver registers
    # it (one more message from the trial); USR1 before that would leave nothing to resume from.
    _usr1_when(proc, log, "[eval] trial=", also=[("hpo-asha-first/**/checkpoint_*/trial_state.json", '"epochs_done"')],
               settle_s=1.0)
    out = log.read_text()
    first = _rows(log.with_suffix(".csv"))
    assert len(first) == 2 and "incomplete" in {r["status"] for r in first.values()}
    resume_line = [line for line in out.splitlines() if "RESUME this search with:" in line][-1]
    assert resume_line.endswith("--resume first") and " ".join(args) in resume_line

    log2, out2, second = _resume(root, tmp_path, "asha", args)
    # the whole search, each trial once, none incomplete; the resumed trials continued from a checkpoint
    assert set(second) == set(first) and {r["status"] for r in second.values()} == {"completed"}
    assert all(r["epochs"] == "4" for r in second.values())
    assert "RESUMED from job first" in out2 and "[trial] resuming from" in out2
    for tid, r in first.items():       # the time of both jobs is in the row
        if r["wall_s"]:
            assert float(second[tid]["wall_s"]) > float(r["wall_s"])
    summary = json.loads(log2.with_suffix(".summary.json").read_text())
    assert summary["resumed_from"] == "first"


def test_manual_grid_resume_skips_finished_runs_and_continues_the_interrupted_one(root, tmp_path):
    """Two runs at a time (the laptop tier: one per CPU): USR1 once runs 1 and 2 have ended and run 3
    has passed its first evaluation; the resumed job does not train runs 1 and 2 again and continues
    run 3 from its epoch-1 checkpoint."""
    args = ["--smoke", "--learning-rates", "5e-3,1e-3,2e-3", "--epochs", "4"]
    proc, log = _start(root, tmp_path, "manual", "first", *args)
    run3 = tmp_path / "manual" / "hpo-manual-first" / "run03_lr0.002_bs8_wd0"
    # the [eval] line is printed before the checkpoint is saved: wait for both, or USR1 can land in between
    _usr1_when(proc, log, "===== RUN 2/3 END", also=[(run3 / "run.log", "[eval] trial=run03_lr0.002_bs8_wd0 epoch=1.00"),
                                                    (run3 / "checkpoint" / "trial_state.json", '"epochs_done"')])
    first = _rows(log.with_suffix(".csv"))
    assert [r["status"] for r in first.values()] == ["completed", "completed", "incomplete"]
    assert "stopped=1" in log.read_text()                                      # run 3's block, marked stopped
    assert "RESUME this search with: bash experiments/manual/run.slurm" in log.read_text()

    log2, out2, second = _resume(root, tmp_path, "manual", args)
    assert list(second) == ["run01_lr0.005_bs8_wd0", "run02_lr0.001_bs8_wd0", "run03_lr0.002_bs8_wd0"]
    assert {r["status"] for r in second.values()} == {"completed"}
    assert out2.count("finished in the earlier job: not run again") == 2     # runs 1 and 2 are not trained again
    assert "run03_lr0.002_bs8_wd0 was interrupted in the earlier job: continuing from" in out2
    assert "[trial] resuming from" in out2 and "epochs done" in out2          # from its latest checkpoint
    for trial in ("run01_lr0.005_bs8_wd0", "run02_lr0.001_bs8_wd0"):           # the same result, counted once
        assert (second[trial]["eval_loss"], second[trial]["wall_s"]) == (first[trial]["eval_loss"], first[trial]["wall_s"])
    spent = json.loads((run3 / "run.json").read_text())
    assert float(second["run03_lr0.002_bs8_wd0"]["wall_s"]) > spent["wall_s"] > 0     # both jobs' time
