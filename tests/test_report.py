"""Tests of the reports (hpo/report.py): job summary, the one best-trial rule,
the tables, and the best of each method (scripts/compare.py).

Run: .venv/bin/python -m pytest tests/test_report.py -q
"""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.logparse import parse_log
from hpo.report import (best_of_each, best_row, describe_best, format_summary, job_summary,
                        load_csvs, markdown_table)
from hpo.schema import make_row, write_csv

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "tests" / "fixtures" / "logs"
COMPARE = ROOT / "scripts" / "compare.py"


def _compare(*args):
    return subprocess.run([sys.executable, str(COMPARE), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


# --------------------------------------------------------------------------- job summary and table

def test_job_summary_arithmetic():
    job = {"job_id": "1", "method": "manual", "start": "2025-01-01 10:00:00 UTC",
           "finish": "2025-01-01 12:00:00 UTC", "rc": 0, "elapsed_s": 7200.0, "nodes": 2, "gpus": 8, "cpus": 64}
    rows = [make_row(method="manual", trial_id="a", status="completed", gpus=4, cpus=32, wall_s=3600, eval_loss=1),
            make_row(method="manual", trial_id="b", status="error", gpus=4, cpus=32, wall_s=1800)]
    assert rows[0]["gpu_hours"] == 4.0 and rows[1]["gpu_hours"] == 2.0        # gpus x hours
    s = job_summary(job, rows)
    assert s["job_gpu_hours"] == 16.0          # 8 GPUs x 2 h
    assert s["job_cpu_hours"] == 128.0         # 64 CPUs x 2 h
    assert s["trial_gpu_hours"] == 6.0 and s["trial_cpu_hours"] == 48.0
    assert s["training_share"] == pytest.approx(6 / 16) and s["share_basis"] == "GPU"
    assert s["n_trials"] == {"completed": 1, "stopped_early": 0, "error": 1, "incomplete": 0, "total": 2}
    text = format_summary(s)
    assert "JOB SUMMARY" in text and "16.000" in text and "6.000" in text and "37.5 %" in text
    # laptop tier: no GPUs -> the share is of CPU-hours
    laptop = job_summary(dict(job, gpus=0), rows)
    assert laptop["job_gpu_hours"] == 0 and laptop["share_basis"] == "CPU"
    assert laptop["training_share"] == pytest.approx(48 / 128)


def test_markdown_table_one_row_per_trial():
    rows = parse_log(LOGS / "manual_crashed.out").rows
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| # | trial | status | lr | batch size | weight decay | epochs | eval loss | EM | F1 ")
    assert table[0].endswith("| wall (s) | GPU-h | CPU-h |")
    body = table[2:]
    assert len(body) == len(rows) == 4
    assert body[1].split(" | ")[:3] == ["| 2", "grid02_lr1e-05_bs16", "error"]
    assert "**grid03_lr5e-05_bs8**" in body[2] and "| 0.680 | 5.440 |" in body[1]


# --------------------------------------------------------------------------- the best trial

def _mk(t, loss, f1, **kw):
    return make_row(method="m", trial_id=t, status="completed", eval_loss=loss, f1=f1, **kw)


def _old_tuning_rule(rows):
    """How hpo/tuning.py picked the best trial before best_row was the one rule (kept here to
    show where the two differ: a NaN F1 made the comparison depend on the row order)."""
    ok = [r for r in rows if r["eval_loss"] is not None and math.isfinite(r["eval_loss"])]
    return min(ok, key=lambda r: (r["eval_loss"], -(r["f1"] or 0)))


def test_best_row_rules():
    rows = [_mk("nan", float("nan"), 99), _mk("a", 1.2, 50), _mk("b", 1.1, 40), _mk("c", 1.1, 45),
            _mk("none", None, 90)]
    assert best_row(rows)["trial_id"] == "c"                # lowest loss; tie -> higher F1
    assert best_row(rows, metric="f1")["trial_id"] == "nan" # highest F1 for an F1 metric
    assert best_row([_mk("x", None, 1)]) is None
    assert best_row(parse_log(LOGS / "manual_normal.out").rows)["trial_id"] == "grid03_lr5e-05_bs8"


@pytest.mark.parametrize("missing_f1", [None, float("nan")])
def test_best_row_missing_f1_loses_a_tie(missing_f1):
    first, second = _mk("no_f1", 1.0, missing_f1), _mk("f1_zero", 1.0, 0.0)
    assert best_row([first, second]) is second              # even against F1 = 0, whatever the order
    assert best_row([second, first]) is second
    # the old rule `-(f1 or 0)` kept the first row here: None counted as 0, NaN compared as "equal"
    assert _old_tuning_rule([first, second]) is first


def test_best_row_non_finite_eval_loss_never_wins():
    rows = [_mk("nan", float("nan"), 99), _mk("minus_inf", float("-inf"), 99), _mk("ok", 2.5, None)]
    assert best_row(rows)["trial_id"] == "ok"
    assert best_row(rows[:2]) is None


def test_best_row_earlier_row_keeps_a_full_tie():
    rows = [_mk("x", 1.0, 50), _mk("y", 1.0, 50), _mk("z", 1.0, None)]
    assert best_row(rows) is rows[0]
    assert best_row(rows[1:]) is rows[1]


def test_describe_best_text():
    row = make_row(method="asha", trial_id="trial_00002", status="stopped_early", learning_rate=3e-05,
                   batch_size=8, weight_decay=0.0, epochs=1.5, eval_loss=1.23456, exact_match=30, f1=40.5)
    assert describe_best(row) == ("BEST trial trial_00002 (stopped_early): learning_rate=3e-05 batch_size=8 "
                                  "weight_decay=0 epochs=1.5 eval_loss=1.2346 exact_match=30.00 f1=40.50")
    gaps = make_row(method="asha", trial_id="t", status="completed", eval_loss=float("nan"))
    assert describe_best(gaps) == ("BEST trial t (completed): learning_rate=- batch_size=- weight_decay=- "
                                   "epochs=- eval_loss=nan exact_match=- f1=-")


# --------------------------------------------------------------------------- best of each (compare.py)

def _csv_for(tmp_path, name, method, specs, mtime):
    rows = [make_row(method=method, job_id=name, trial_id=t, status="completed", learning_rate=lr,
                     batch_size=8, weight_decay=0.0, epochs=1, eval_loss=loss, exact_match=10, f1=f1,
                     gpus=1, cpus=2, wall_s=3600)
            for t, lr, loss, f1 in specs]
    path = write_csv(rows, tmp_path / f"{name}.csv")
    os.utime(path, (mtime, mtime))
    return path


def test_compare_picks_best_per_method(tmp_path):
    manual = _csv_for(tmp_path, "manual-1", "manual", [("m1", 1e-5, 1.3, 50), ("m2", 5e-5, 1.1, 55)], 1000)
    asha_old = _csv_for(tmp_path, "asha-1", "asha", [("old", 1e-4, 0.5, 90)], 1000)
    asha_new = _csv_for(tmp_path, "asha-2", "asha",
                        [("a1", 3e-5, 1.2, 52), ("a2", 2e-5, 1.05, 56), ("a3", 4e-5, 1.05, 58)], 2000)
    out = tmp_path / "cmp"
    res = _compare(manual, asha_old, asha_new, "--out-dir", out)
    assert res.returncode == 0, res.stderr
    with open(out / "best_of_each.csv", newline="") as f:
        best = list(csv.DictReader(f))
    assert [(r["method"], r["trial_id"], r["eval_loss"]) for r in best] == [
        ("manual", "m2", "1.1"), ("asha", "a3", "1.05")]            # newest asha CSV; tie -> higher F1
    assert best[1]["method_gpu_hours"] == "3" and best[1]["method_cpu_hours"] == "6"   # 3 trials x 1 GPU x 1 h
    assert best[1]["source"] == str(asha_new)
    assert f"asha: using {asha_new} (newest of 2" in res.stdout
    md = (out / "best_of_each.md").read_text()
    assert md.startswith("# Best trial of each method\n\n| method | job | trial | lr |")
    assert md.count("| manual |") == 1 and md.count("| asha |") == 1 and "m2" in md
    assert f"- asha: using {asha_new}" in md

    rows, notes = best_of_each(load_csvs([manual, asha_old, asha_new]), use_all=True)
    assert [r["trial_id"] for r in rows] == ["m2", "old"]          # --all: best over both asha CSVs
    assert rows[1]["method_gpu_hours"] == 4


def test_compare_uses_the_one_best_rule(tmp_path):
    """A tie on eval_loss where the first trial has no F1 (NaN in its CSV): best_row picks the
    measured one; the old tuning rule would have kept the first."""
    pbt = _csv_for(tmp_path, "pbt-1", "pbt", [("p_nan", 1e-5, 0.9, float("nan")), ("p_ok", 2e-5, 0.9, 30)], 1000)
    rows, _ = best_of_each(load_csvs([pbt]))
    assert rows[0]["trial_id"] == "p_ok"
    from hpo.schema import read_csv
    assert _old_tuning_rule(read_csv(pbt))["trial_id"] == "p_nan"
    res = _compare(pbt, "--out-dir", tmp_path / "cmp")
    assert res.returncode == 0, res.stderr
    assert "| pbt | pbt-1 | p_ok |" in res.stdout


def test_compare_skips_a_csv_without_rows(tmp_path):
    empty = write_csv([], tmp_path / "bayesopt-1.csv")
    manual = _csv_for(tmp_path, "manual-1", "manual", [("m1", 1e-5, 1.3, 50)], 1000)
    res = _compare(empty, manual, "--out-dir", tmp_path / "cmp")
    assert res.returncode == 0 and f"note: {empty} has no trial rows; skipped" in res.stderr
    res = _compare(empty, "--out-dir", tmp_path / "cmp2")
    assert res.returncode == 2 and "none of the CSVs has any trial rows" in res.stderr


def test_compare_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("trial,loss\nx,1\n")
    res = _compare(bad, "--out-dir", tmp_path / "o")
    assert res.returncode == 2 and "not the results schema" in res.stderr
    res = _compare("--out-dir", tmp_path / "o")
    assert res.returncode == 2 and "no CSV files" in res.stderr
    res = _compare(tmp_path / "logs/*/*.csv")
    assert res.returncode == 2 and "no such CSV" in res.stderr
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- fair comparison

def _fp_csv(tmp_path, method, fp, loss=1.0):
    p = tmp_path / f"{method}.csv"
    write_csv([make_row(method=method, trial_id=f"{method}1", status="completed", learning_rate=1e-3,
                        batch_size=8, weight_decay=0.0, eval_loss=loss, f1=10, data_fingerprint=fp)], p)
    return p


def test_compare_refuses_methods_scored_on_different_questions(tmp_path):
    a, b = _fp_csv(tmp_path, "asha", "aaaaaaaaaaaa"), _fp_csv(tmp_path, "pbt", "bbbbbbbbbbbb", 0.5)
    r = _compare(a, b, "--out-dir", tmp_path / "out")
    assert r.returncode == 2 and "different questions" in r.stderr and "aaaaaaaaaaaa: asha" in r.stderr
    assert not (tmp_path / "out" / "best_of_each.csv").exists()
    r = _compare(a, b, "--out-dir", tmp_path / "out", "--allow-mixed-data")
    assert r.returncode == 0 and "WARNING: the trials were trained and scored on different questions" in r.stdout
    c = _fp_csv(tmp_path, "manual", "aaaaaaaaaaaa")
    r = _compare(a, c, "--out-dir", tmp_path / "out2")
    assert r.returncode == 0 and "same questions (data fingerprint aaaaaaaaaaaa)" in r.stdout
    assert "| aaaaaaaaaaaa |" in r.stdout                      # the table shows which data


def test_job_summary_says_where_the_allocation_went():
    """4 GPUs for 1 h: 2 trials on 1 GPU each; the rest idle. Ray boot holds all 4 GPUs."""
    job = {"job_id": "1", "method": "asha", "start": "2025-01-01 10:00:00 UTC", "finish": "x", "rc": 0,
           "elapsed_s": 3600.0, "nodes": 1, "gpus": 4, "cpus": 16, "ray_boot_s": 36.0}
    rows = [make_row(method="asha", trial_id=t, status="completed", gpus=1, cpus=4, wall_s=1800, setup_s=60,
                     train_s=1200, eval_s=300, checkpoint_s=120) for t in ("a", "b")]
    s = job_summary(job, rows)
    b = s["breakdown"]
    assert b["hours"] == 4.0
    assert b["train"] == pytest.approx(2 * 1200 / 3600) and b["eval"] == pytest.approx(2 * 300 / 3600)
    assert b["checkpoint"] == pytest.approx(2 * 120 / 3600) and b["setup"] == pytest.approx(2 * 60 / 3600)
    assert b["ray_boot"] == pytest.approx(4 * 36 / 3600)
    assert b["idle"] == pytest.approx(4.0 - (2 * 1680 + 4 * 36) / 3600)
    text = format_summary(s)
    assert "in training steps  : 16.7 % of the job's GPU-hours" in text
    assert "Ray boot 1.0 % | trial setup 0.8 % | training 16.7 % | evaluation 4.2 % | checkpoints 1.7 %" in text


def test_ray_boot_time_is_read_from_the_log(tmp_path):
    log = tmp_path / "j.out"
    log.write_text("===== JOB 5 START : 2025-01-01 10:00:00 UTC =====\n"
                   "[job] method=asha job_id=5 job_name=x tier=cluster profile=tiny nodes=2 gpus=4 cpus=16 host=n1 log=x\n"
                   "[ray] cluster up: 2 node(s), 16 CPUs, 4 GPUs at 1.2.3.4:1; boot 4.8 s after job start "
                   "(ray_cluster_up 4.1 s)\n"
                   "===== JOB 5 FINISH : 2025-01-01 10:01:00 UTC (rc=0, elapsed=60.0s) =====\n")
    assert parse_log(log).job["ray_boot_s"] == 4.8
