"""A rehearsal of the cluster tier on the CPU: BLOOM-560M's real architecture, stored in fp16.

Run:  .venv/bin/python -m pytest -q tests/test_cluster_tier.py          (~5 min on 2 cores, 12 GB RAM)

Nothing loads from the hub here, so the cluster tier is rehearsed with what the project builds:
configs/bloom-560m/config.json (250,880-token vocabulary, 24 layers, 559 M parameters) with random
weights saved in fp16 like the hub's checkpoint (hpo.tiny.ensure_rehearsal_model), and real SQuAD
v2 questions (tests/fixtures/squad/). Both go through `--profile workshop`: the trial on its own
(scripts/train.py) and inside one Ray method's driver in smoke mode. Before fp32 master weights,
this path trained 16-bit weights and gave eval_loss=nan on the CPU.
"""
import csv
import json
import math
import shutil
import sys

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow
UNIFORM = math.log(250880)          # the loss of a uniform guess over BLOOM's vocabulary


@pytest.fixture(scope="module")
def rehearsal_model():
    from hpo.tiny import ensure_rehearsal_model
    path = ensure_rehearsal_model()
    assert json.loads((path / "config.json").read_text())["dtype"] == "float16"
    return path


def _workshop_args(root, model):
    return ["--profile", "workshop", "--model", str(model),
            "--dataset", str(root / "tests/fixtures/squad/squad-v2-sample.json"),
            "--train-samples", "8", "--eval-samples", "4", "--epochs", "1", "--max-length", "128",
            "--max-new-tokens", "4"]


def test_workshop_trial_from_an_fp16_checkpoint(root, tmp_path, rehearsal_model):
    p = run_cli([sys.executable, str(root / "scripts/train.py"), *_workshop_args(root, rehearsal_model),
                 "--batch-size", "2", "--output-dir", str(tmp_path / "o")], timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    rec = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert rec["weights_dtype"] == "float32" and rec["stored_dtype"] == "float16"
    assert rec["precision"] == "fp32" and rec["num_devices"] == 1
    assert math.isfinite(rec["eval_loss"]) and rec["eval_loss"] < UNIFORM - 0.5, rec["eval_loss"]
    # real SQuAD v2: the single file was split by article, unanswerable questions skipped and counted,
    # long contexts cut around the answer
    assert "split by article" in rec["dataset"] and rec["skipped_unanswerable"]["train"] > 0
    assert "context truncated (answer kept): train 8" in p.stdout
    assert "weights_dtype=float32 (stored as float16)" in p.stdout


def test_workshop_profile_through_a_ray_driver(root, tmp_path, rehearsal_model):
    env = {"HPO_LOG_ROOT": str(tmp_path), "HPO_JOB_ID": "rehearsal", "HPO_PLOTS": "0", "RAY_AUTH_MODE": "disabled",
           "SLURM_JOB_ID": ""}
    p = run_cli(["bash", str(root / "experiments/asha/run.slurm"), "--smoke", *_workshop_args(root, rehearsal_model),
                 "--num-samples", "1", "--batch-sizes", "2", "--cpus-per-trial", "2"], env=env, timeout=900)
    log = tmp_path / "asha" / "hpo-asha-rehearsal.out"
    out = log.read_text()
    try:
        assert p.returncode == 0, out[-4000:]
        assert "profile workshop" in out and "weights_dtype=float32 (stored as float16)" in out
        with open(log.with_suffix(".csv"), newline="") as f:
            (row,) = list(csv.DictReader(f))
        assert row["status"] == "completed" and row["epochs"] == "1"
        assert math.isfinite(float(row["eval_loss"])) and float(row["eval_loss"]) < UNIFORM - 0.5
        assert row["global_batch_size"] == "2" and row["data_fingerprint"]
    finally:
        shutil.rmtree(tmp_path / "asha", ignore_errors=True)      # ~7 GB of checkpoints
