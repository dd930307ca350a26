"""The real launchers submitted with `sbatch` to the local 2-node SLURM cluster (tiny profile).

Run:  .venv/bin/python -m pytest -m slurm tests/test_slurm_experiments.py -q      (~3 min, root)

The cluster's GPUs are emulated (scheduled, CUDA_VISIBLE_DEVICES set, nothing computes on them):
trials run on the CPU with the tiny model; otherwise this is the code path of a GPU cluster.
"""
import csv
import json
import math
import re
import time

import pytest

from slurm_util import (_assert_completed, _assert_no_leftovers, _in_queue, _run, _text,  # noqa: F401
                        _wait_gone, slurm_cluster, submit, watch_of)

pytestmark = pytest.mark.slurm
SMALL = ["-c2", "--mem=4G", "--gres=gpu:2"]      # fits the local nodes with room for a second job


def rows_of(csv_path, log):
    assert csv_path.exists(), f"no CSV {csv_path}\n--- {log}:\n{_text(log)[-4000:]}"
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def finite(x):
    return x not in ("", None) and math.isfinite(float(x))


def check_gpu_hours(log, rows, summary, gpus, nodes):
    """The JOB SUMMARY's cost, recomputed: job GPU-h = allocated GPUs x elapsed (the FINISH line),
    every trial's GPU-h = its GPUs x its wall time, and their sum is the summary's (trials.jsonl /
    the parser's records at full precision; the CSV's cells hold 6 significant digits)."""
    text = _text(log)
    fin = re.search(r"===== JOB \S+ FINISH : .* \(rc=0, elapsed=([\d.]+)s\) =====", text)
    assert fin, text[-3000:]
    elapsed = float(fin.group(1))
    assert (summary["nodes"], summary["gpus"]) == (nodes, gpus), summary
    assert summary["elapsed_s"] == pytest.approx(elapsed, abs=1e-9)
    assert summary["job_gpu_hours"] == pytest.approx(gpus * elapsed / 3600, rel=1e-12)
    for r in rows:
        assert float(r["wall_s"]) > 0 and float(r["gpus"]) > 0, r
        assert float(r["gpu_hours"]) == pytest.approx(float(r["gpus"]) * float(r["wall_s"]) / 3600, rel=2e-5), r
    assert summary["trial_gpu_hours"] == pytest.approx(sum(float(r["gpu_hours"]) for r in rows), rel=1e-4)
    assert 0 < summary["trial_gpu_hours"] <= summary["job_gpu_hours"] * (1 + 1e-9)
    assert summary["training_share"] == pytest.approx(summary["trial_gpu_hours"] / summary["job_gpu_hours"])


def test_sbatch_manual_grid(slurm_cluster, tmp_path):
    jid = submit("experiments/manual/run.slurm", tmp_path / "hpo-manual-%j.out", SMALL, time_min=10,
                 script_args=["--learning-rates", "5e-3", "--batch-sizes", "16", "--weight-decays", "0.0,0.01",
                              "--epochs", "1", "--train-samples", "160", "--eval-samples", "16"],
                 HPO_PROFILE="tiny")
    _wait_gone(jid, timeout=300)
    log = tmp_path / f"hpo-manual-{jid}.out"
    _assert_completed(jid, log)
    text = _text(log)
    assert f"===== JOB {jid} START" in text and f"===== JOB {jid} FINISH" in text
    assert "emulated GPUs?" in text and "LAPTOP TIER" not in text
    rows = rows_of(log.with_suffix(".csv"), log)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    for r in rows:
        assert r["job_id"] == jid and r["gpus"] == "2" and float(r["gpu_hours"]) > 0
        assert finite(r["eval_loss"]) and finite(r["f1"])
    summary = json.loads(log.with_suffix(".summary.json").read_text())
    # allocated >= used; both come from 0.1 s-rounded times, so equal within float rounding is allowed
    check_gpu_hours(log, rows, summary, gpus=2, nodes=1)
    _assert_no_leftovers(jid, log)


def test_sbatch_asha_two_nodes(slurm_cluster, tmp_path):
    jid = submit("experiments/asha/run.slurm", tmp_path / "hpo-asha-%j.out", ["-N2", *SMALL], time_min=10,
                 script_args=["--smoke", "--gpus-per-trial", "1", "--num-samples", "4"], HPO_PROFILE="tiny")
    _wait_gone(jid, timeout=420)
    log = tmp_path / f"hpo-asha-{jid}.out"
    _assert_completed(jid, log)
    _assert_no_leftovers(jid, log)
    rows = rows_of(log.with_suffix(".csv"), log)
    assert len(rows) == 4 and all(r["status"] in ("completed", "stopped_early") for r in rows)
    assert all(finite(r["eval_loss"]) and finite(r["f1"]) and r["gpus"] == "1" for r in rows)
    # trials ran on both nodes: every Tune result records the node it came from
    nodes = set()
    for res in (tmp_path / f"hpo-asha-{jid}" / "asha").glob("*/result.json"):
        nodes |= {json.loads(line).get("node") for line in res.read_text().splitlines() if line.strip()}
    assert {"n1", "n2"} <= nodes, f"trials ran on {nodes}\n{_text(log)[-3000:]}"
    assert "[tune] BEST trial" in _text(log) and "JOB SUMMARY" in _text(log)
    # the cost of 2 nodes x 2 GPUs, exactly: 4 GPUs x elapsed; each trial 1 GPU x its wall time
    summary = json.loads(log.with_suffix(".summary.json").read_text())
    check_gpu_hours(log, rows, summary, gpus=4, nodes=2)
    # the leftovers check (above) is not vacuous: the job's marker reached the Ray workers that ran
    # the trials, on both nodes (they inherit it from `ray start` in the srun steps)
    workers = [p for p in watch_of(jid).matching("ray::") if p.tag.startswith(f"{jid}-")]
    assert {p.node for p in workers} >= {"n1", "n2"}, watch_of(jid).summary()


def test_scancel_still_writes_finish_and_csv(slurm_cluster, tmp_path):
    """scancel mid-run: the trap prints FINISH and the parser writes the CSV (running trials: incomplete)."""
    jid = submit("experiments/asha/run.slurm", tmp_path / "hpo-asha-%j.out", ["-N1", *SMALL], time_min=10,
                 # grace period = epochs: no rung before the end, so ASHA itself stops no trial
                 script_args=["--num-samples", "2", "--epochs", "20", "--grace-period", "20",
                              "--train-samples", "160", "--eval-samples", "16"], HPO_PROFILE="tiny")
    log = tmp_path / f"hpo-asha-{jid}.out"
    deadline = time.time() + 180
    while "[eval]" not in _text(log) and time.time() < deadline and _in_queue(jid):
        time.sleep(0.5)
    assert "[eval]" in _text(log), _text(log)[-3000:]
    _run(["scancel", jid])
    _wait_gone(jid, timeout=120)
    text = _text(log)
    assert f"===== JOB {jid} FINISH" in text, text[-3000:]
    rows = rows_of(log.with_suffix(".csv"), log)
    # both trials were cut off mid-run (20 epochs): incomplete, with the metrics of their last evaluation
    assert [r["status"] for r in rows] == ["incomplete", "incomplete"], rows
    assert any(finite(r["eval_loss"]) for r in rows)
    _assert_no_leftovers(jid, log)
