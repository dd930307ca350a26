"""Walltime warning, resume and a lost node, on the local 2-node SLURM cluster (tiny profile).

Run:  .venv/bin/python -m pytest -m slurm tests/test_slurm_resume.py -q        (~6 min, root)

SLURM sends the batch shell USR1 five minutes before the time limit (`#SBATCH --signal=B:USR1@300`);
the test sends the same with `scancel --batch --signal=USR1 <id>`, then resubmits with `--resume <id>`.
"""
import csv
import subprocess
import time

import pytest

from slurm_util import (_assert_completed, _assert_no_leftovers, _in_queue, _run, _text,  # noqa: F401
                        _wait_gone, slurm_cluster, submit)

pytestmark = pytest.mark.slurm
SMALL = ["-c2", "--mem=4G", "--gres=gpu:2"]


def _rows(path, log):
    assert path.exists(), f"no CSV {path}\n--- {log}:\n{_text(log)[-4000:]}"
    with open(path, newline="") as f:
        return {r["trial_id"]: r for r in csv.DictReader(f)}


def _wait_for(log, needle, jid, timeout=240):
    deadline = time.time() + timeout
    while needle not in _text(log) and time.time() < deadline and _in_queue(jid):
        time.sleep(0.5)
    assert needle in _text(log), _text(log)[-3000:]


def test_usr1_then_resume_on_slurm(slurm_cluster, tmp_path):
    args = ["--smoke", "--num-samples", "2", "--epochs", "4", "--grace-period", "4"]
    jid = submit("experiments/asha/run.slurm", tmp_path / "hpo-asha-%j.out", ["-N1", *SMALL], time_min=10,
                 script_args=args, HPO_PROFILE="tiny", HPO_LOG_ROOT=str(tmp_path))
    log = tmp_path / f"hpo-asha-{jid}.out"
    _wait_for(log, "[eval] trial=", jid)
    _run(["scancel", "--batch", "--signal=USR1", jid])
    _wait_gone(jid, timeout=240)
    text = _text(log)
    assert "received USR1" in text and f"--resume {jid}" in text, text[-3000:]
    first = _rows(log.with_suffix(".csv"), log)
    assert "incomplete" in {r["status"] for r in first.values()}
    _assert_no_leftovers(jid, log)

    jid2 = submit("experiments/asha/run.slurm", tmp_path / "hpo-asha-%j.out", ["-N1", *SMALL], time_min=10,
                  script_args=[*args, "--resume", jid], HPO_PROFILE="tiny", HPO_LOG_ROOT=str(tmp_path))
    _wait_gone(jid2, timeout=420)
    log2 = tmp_path / f"hpo-asha-{jid2}.out"
    _assert_completed(jid2, log2)
    second = _rows(log2.with_suffix(".csv"), log2)
    assert set(second) == set(first) and {r["status"] for r in second.values()} == {"completed"}
    assert f"RESUMED from job {jid}" in _text(log2) and "resumed from       : job" in _text(log2)
    _assert_no_leftovers(jid2, log2)


def test_lost_worker_node_is_named_and_its_trial_retried(slurm_cluster, tmp_path):
    jid = submit("experiments/asha/run.slurm", tmp_path / "hpo-asha-%j.out", ["-N2", *SMALL], time_min=10,
                 # long enough (20 epochs) to outlast Ray's own detection of the dead node (~30 s)
                 script_args=["--smoke", "--num-samples", "2", "--epochs", "20", "--grace-period", "20",
                              "--gpus-per-trial", "1", "--max-failures", "2"],
                 HPO_PROFILE="tiny", HPO_LOG_ROOT=str(tmp_path))
    log = tmp_path / f"hpo-asha-{jid}.out"
    _wait_for(log, "[eval] trial=", jid)
    # the worker node's raylet (node index 1, n2) dies, as when a node is lost
    raylets = subprocess.run(["pgrep", "-f", f"raylet.*ray-{jid}-1"], capture_output=True, text=True).stdout.split()
    assert raylets, _text(log)[-3000:]
    t_kill = time.time()
    _run(["kill", "-9", *raylets])
    _wait_for(log, "[ray] NODE LOST", jid, timeout=120)
    assert time.time() - t_kill < 60 + 15
    _wait_gone(jid, timeout=420)
    text = _text(log)
    lost = [line for line in text.splitlines() if "[ray] NODE LOST" in line][0]
    assert "n2" in lost or "127.0.1.2" in lost, lost
    rows = _rows(log.with_suffix(".csv"), log)           # the CSV is still written
    assert len(rows) == 2 and "JOB SUMMARY" in text
    assert {r["status"] for r in rows.values()} <= {"completed", "error"}
    assert any(r["status"] == "completed" and int(r["retries"]) >= 1 for r in rows.values()) or \
        all(r["status"] == "completed" for r in rows.values()), rows
    _assert_no_leftovers(jid, log)


def test_requeue_mode_resumes_under_the_same_job_id(slurm_cluster, tmp_path):
    """--requeue (preemptible partitions): on USR1 the job requeues itself and continues its own search."""
    jid = submit("experiments/asha/run.slurm", tmp_path / "hpo-asha-%j.out", ["-N1", *SMALL], time_min=10,
                 script_args=["--smoke", "--num-samples", "2", "--epochs", "4", "--grace-period", "4", "--requeue"],
                 HPO_PROFILE="tiny", HPO_LOG_ROOT=str(tmp_path))
    log = tmp_path / f"hpo-asha-{jid}.out"
    _wait_for(log, "[eval] trial=", jid)
    _run(["scancel", "--batch", "--signal=USR1", jid])
    # SLURM holds a requeued job for about two minutes (BeginTime); the test does not wait for that
    deadline = time.time() + 120
    while time.time() < deadline:
        info = _run(["scontrol", "show", "job", jid]).stdout
        if "Restarts=1" in info and "JobState=PENDING" in info:
            _run(["scontrol", "update", f"JobId={jid}", "StartTime=now"])
            break
        time.sleep(0.5)
    _wait_gone(jid, timeout=420)
    _assert_completed(jid, log)
    info = _run(["scontrol", "show", "job", jid]).stdout
    assert "Restarts=1" in info, info
    text = _text(log)                      # SLURM starts the log afresh for the requeued run
    assert f"RESUMED from job {jid}" in text, text[-3000:]
    rows = _rows(log.with_suffix(".csv"), log)
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"completed"}
    _assert_no_leftovers(jid, log)
