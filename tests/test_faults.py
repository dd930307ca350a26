"""A crashed trial is retried from its last checkpoint; one that keeps crashing ends as error.

Run:  .venv/bin/python -m pytest -q tests/test_faults.py          (~2 min, laptop tier, CPU)

Faults are injected with HPO_INJECT_FAULT (hpo/search/trainable.py): trial 0 raises once at its
second evaluation, trial 1 every time; trial 2 is left alone.
"""
import csv
import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_crashed_trials_are_retried_then_recorded_as_error(root, tmp_path):
    env = {"HPO_LOG_ROOT": str(tmp_path), "HPO_JOB_ID": "faults", "HPO_PLOTS": "0", "RAY_AUTH_MODE": "disabled", "SLURM_JOB_ID": "",
           "HPO_INJECT_FAULT": "once:0,always:1"}
    p = run_cli(["bash", str(root / "experiments/asha/run.slurm"), "--smoke", "--num-samples", "3",
                 "--epochs", "3", "--grace-period", "3", "--max-failures", "2"], env=env, timeout=900)
    log = tmp_path / "asha" / "hpo-asha-faults.out"
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    with open(log.with_suffix(".csv"), newline="") as f:
        rows = {r["trial_id"].rsplit("_", 1)[-1]: r for r in csv.DictReader(f)}
    assert len(rows) == 3
    once, always, clean = rows["00000"], rows["00001"], rows["00002"]
    assert once["status"] == "completed" and once["retries"] == "1" and once["epochs"] == "3"
    assert always["status"] == "error" and always["retries"] == "2"
    assert clean["status"] == "completed" and clean["retries"] == "0"
    # the retried trial continued from its epoch-1 checkpoint (its reports after the retry say whose
    # weights it loaded), and the failure and its reason are in the log
    resumed = [json.loads(line) for res in (log.with_suffix("") / "asha").glob("*_00000_*/result.json")
               for line in res.read_text().splitlines()]
    assert any(r.get("loaded_weights_fingerprint") is not None and r["epoch"] >= 2 for r in resumed), resumed
    assert "retry 1 of 2, from its last checkpoint" in out
    assert "ERROR trial" in out and "RuntimeError: injected fault" in out
