"""Tests of the log parser (hpo/logparse.py), the log-line writers it reads
(hpo/logfmt.py) and the command line scripts/parse_logs.py.

Run: .venv/bin/python -m pytest tests/test_logparse.py -q

The fixture logs under tests/fixtures/logs/ look like real job output (HF/torch/
DeepSpeed noise, tqdm redraws with carriage returns, one [eval] line glued behind
a progress bar); the CSVs under tests/fixtures/expected/ were written by hand from
the numbers in those logs (gpu_hours = 4 GPUs x wall_s / 3600, e.g. 4 x 1260 / 3600 = 1.4).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from hpo import logfmt
from hpo.logparse import LogError, parse_log
from hpo.plots import read_job_log
from hpo.report import format_summary, job_summary
from hpo.schema import csv_text, make_row, read_csv, write_csv, write_records
from rows import ray_row

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "tests" / "fixtures" / "logs"
EXPECTED = ROOT / "tests" / "fixtures" / "expected"
PARSE_LOGS = ROOT / "scripts" / "parse_logs.py"


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(PARSE_LOGS), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def _write_log(tmp_path, lines, name="job.out"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _job_lines(job_id="77", gpus=2, cpus=8):
    return [f"===== JOB {job_id} START : 2025-01-01 10:00:00 UTC =====",
            f"[job] method=manual job_id={job_id} job_name=t tier=cluster profile=tiny "
            f"nodes=1 gpus={gpus} cpus={cpus} host=n1 log=x.out"]


def _run_start(k=1, n=1, trial="t1", when="10:00:10", gpus=2, cpus=8):
    return (f"===== RUN {k}/{n} START trial={trial} learning_rate=1e-05 batch_size=8 weight_decay=0.01 "
            f"seed=1 epochs_planned=2 gpus={gpus} cpus={cpus} : 2025-01-01 {when} UTC =====")


# --------------------------------------------------------------------------- fixtures -> CSV

@pytest.mark.parametrize("log, expected", [
    ("manual_normal.out", "manual_normal.csv"),
    # the same job with every [eval]/[result] printed by two ranks: must give the SAME CSV
    ("manual_ranks.out", "manual_normal.csv"),
    ("manual_truncated.out", "manual_truncated.csv"),
    ("manual_crashed.out", "manual_crashed.csv"),
])
def test_fixture_log_gives_expected_csv(tmp_path, log, expected):
    parsed = parse_log(LOGS / log)
    out = write_csv(parsed.rows, tmp_path / "out.csv")
    assert out.read_text(encoding="utf-8") == (EXPECTED / expected).read_text(encoding="utf-8")


def test_normal_log_job_info_and_no_warnings():
    parsed = parse_log(LOGS / "manual_normal.out")
    assert parsed.warnings == []
    job = parsed.job
    assert (job["job_id"], job["method"], job["nodes"], job["gpus"], job["cpus"]) == ("4815162", "manual", 1, 4, 32)
    assert job["start"] == "2025-03-14 09:00:03 UTC"
    assert job["finish"] == "2025-03-14 10:19:25 UTC"
    assert (job["rc"], job["elapsed_s"], job["runs_planned"]) == (0, 4762.3, 4)


def test_result_json_wins_over_eval_lines():
    row = parse_log(LOGS / "manual_normal.out").rows[0]
    # [eval] epoch 2 says 1.3021; the [result] JSON has the full-precision 1.30214276…
    assert row["eval_loss"] == pytest.approx(1.3021427631378173)
    assert row["train_runtime_s"] == pytest.approx(1201.553)


def test_rank_duplicates_count_once():
    normal, ranks = parse_log(LOGS / "manual_normal.out"), parse_log(LOGS / "manual_ranks.out")
    text = (LOGS / "manual_ranks.out").read_text(encoding="utf-8")
    assert text.count("[rank1]: [eval]") == 8 and text.count("[rank1]: [result]") == 4  # really duplicated
    assert ranks.warnings == []                 # identical duplicates are not a problem
    assert len(ranks.rows) == len(normal.rows) == 4
    assert ranks.rows == normal.rows
    # the learning curves' reader (hpo.plots) of the same logs: two evaluations per trial, not four
    curves, curves_ranks = read_job_log(LOGS / "manual_normal.out"), read_job_log(LOGS / "manual_ranks.out")
    assert curves.warnings == curves_ranks.warnings == []
    assert {t: [p["epoch"] for p in h] for t, h in curves_ranks.history.items()} == {
        r["trial_id"]: [1, 2] for r in normal.rows}
    assert curves_ranks.history == curves.history
    assert {k: curves.history["grid02_lr1e-05_bs16"][0][k] for k in ("epoch", "step", "eval_loss", "exact_match", "f1")} \
        == {"epoch": 1, "step": 19, "eval_loss": 1.521, "exact_match": 35, "f1": 46.03}   # the glued line


def test_truncated_log_gives_incomplete_row_and_unfinished_summary():
    parsed = parse_log(LOGS / "manual_truncated.out")
    assert [r["status"] for r in parsed.rows] == ["completed", "completed", "incomplete"]
    last = parsed.rows[-1]
    # START 09:40:18 -> last timestamped line (DeepSpeed, 09:52:18) = 720 s on 4 GPUs
    assert last["wall_s"] == 720 and last["gpu_hours"] == pytest.approx(0.8)
    assert (last["eval_loss"], last["exact_match"], last["f1"]) == (1.2544, 44, 55.61)   # last [eval]
    assert last["train_runtime_s"] is None
    assert any(w.lineno == 48 and "no END" in w.message for w in parsed.warnings)
    assert any(w.lineno is None and "FINISH" in w.message for w in parsed.warnings)
    s = job_summary(parsed.job, parsed.rows)
    assert s["finish"] is None and s["finished"] is False
    assert s["elapsed_s"] == 3135 and s["elapsed_source"] == "last timestamped line"   # 09:00:03 -> 09:52:18
    assert s["n_trials"]["incomplete"] == 1 and s["runs_planned"] == 4
    assert "no FINISH line" in s["note"]
    assert "no FINISH line" in format_summary(s)


def test_crashed_combination_is_error_and_later_runs_complete():
    parsed = parse_log(LOGS / "manual_crashed.out")
    assert [r["status"] for r in parsed.rows] == ["completed", "error", "completed", "completed"]
    err = parsed.rows[1]
    # the crashed run keeps its last [eval] (epoch 1; glued behind a tqdm bar in the log)
    assert (err["eval_loss"], err["exact_match"], err["f1"], err["wall_s"]) == (1.521, 35, 46.03, 612)
    assert err["gpu_hours"] == pytest.approx(4 * 612 / 3600)


def test_malformed_lines_are_warnings_with_line_numbers(tmp_path):
    parsed = parse_log(LOGS / "manual_crashed.out")
    assert [(w.lineno, w.message.split(":")[0]) for w in parsed.warnings] == [
        (96, "malformed [eval] line"), (97, "bad JSON in [result] line (Expecting ',' delimiter at column 116)")]
    # run 4: its epoch-2 [eval] and its [result] were skipped -> the epoch-1 [eval] is what is left
    row = parsed.rows[3]
    assert (row["eval_loss"], row["status"], row["tokens_per_s"]) == (1.331, "completed", None)
    # ... and the CLI still writes the CSV, reports the line numbers, and exits 0
    log = shutil.copy(LOGS / "manual_crashed.out", tmp_path / "hpo-manual-4815199.out")
    res = _cli(log, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "manual_crashed" not in res.stderr and "hpo-manual-4815199.out:96:" in res.stderr
    assert "hpo-manual-4815199.out:97:" in res.stderr
    assert (tmp_path / "hpo-manual-4815199.csv").read_text() == (EXPECTED / "manual_crashed.csv").read_text()


def test_non_numeric_value_is_warned_and_skipped(tmp_path):
    log = _write_log(tmp_path, _job_lines() + [
        _run_start(),
        "[eval] trial=t1 epoch=1.00 step=5 eval_loss=2.5000 exact_match=10.00 f1=20.00 "
        "learning_rate=1e-05 batch_size=8 weight_decay=0.01",
        "[eval] trial=t1 epoch=2.00 step=10 eval_loss=2.1000 exact_match=12.00 f1=n/a "
        "learning_rate=1e-05 batch_size=8 weight_decay=0.01",
        '[result] {"trial_id": "t1", "eval_loss": "low", "exact_match": 1, "f1": 2}',
        "===== RUN 1/1 END trial=t1 rc=0 wall_s=90 : 2025-01-01 10:01:40 UTC =====",
        "===== RUN 9/9 BEGIN what=ever : 2025-01-01 10:01:41 UTC =====",
        "===== JOB 77 FINISH : 2025-01-01 10:02:00 UTC (rc=0, elapsed=120.0s) ====="])
    parsed = parse_log(log)
    assert [w.lineno for w in parsed.warnings] == [5, 6, 8]
    assert "f1='n/a' is not a number" in parsed.warnings[0].message
    assert "eval_loss='low'" in parsed.warnings[1].message
    assert "malformed RUN marker" in parsed.warnings[2].message
    (row,) = parsed.rows
    assert (row["status"], row["eval_loss"], row["f1"]) == ("completed", 2.5, 20)   # epoch-1 [eval]
    assert row["gpu_hours"] == pytest.approx(2 * 90 / 3600) and row["cpu_hours"] == pytest.approx(8 * 90 / 3600)


def test_run_killed_at_finish_and_run_without_any_later_time(tmp_path):
    # scancel: FINISH printed by the EXIT trap while RUN 2 is open -> wall up to FINISH
    killed = _write_log(tmp_path, _job_lines() + [
        _run_start(1, 2, "t1", "10:00:10"),
        "===== RUN 1/2 END trial=t1 rc=0 wall_s=50 : 2025-01-01 10:01:00 UTC =====",
        _run_start(2, 2, "t2", "10:01:05"),
        "[job] received SIGTERM (scancel or walltime): stopping",
        "===== JOB 77 FINISH : 2025-01-01 10:03:05 UTC (rc=143, elapsed=185.0s) ====="], "killed.out")
    rows = parse_log(killed).rows
    assert [r["status"] for r in rows] == ["error", "incomplete"]      # t1: rc=0 but no metrics
    assert rows[1]["wall_s"] == 120 and rows[1]["gpu_hours"] == pytest.approx(2 * 120 / 3600)
    # killed hard (no FINISH, no later timestamp): wall time unknown -> empty cells
    hard = _write_log(tmp_path, _job_lines() + [_run_start(), "loading checkpoint shards ..."], "hard.out")
    (row,) = parse_log(hard).rows
    assert row["status"] == "incomplete" and row["wall_s"] is None and row["gpu_hours"] is None
    assert csv_text([row]).splitlines()[1].endswith(",,2,,8,,,,2,,,,,,")  # epochs_planned=2 from RUN START


def test_error_row_with_nonzero_rc_and_no_eval(tmp_path):
    log = _write_log(tmp_path, _job_lines() + [
        _run_start(), "Traceback (most recent call last):", "ValueError: boom",
        "===== RUN 1/1 END trial=t1 rc=1 wall_s=30 : 2025-01-01 10:00:40 UTC ====="])
    (row,) = parse_log(log).rows
    assert row["status"] == "error" and row["eval_loss"] is None and row["wall_s"] == 30


def test_logfmt_lines_round_trip(tmp_path):
    """The parser reads what hpo.logfmt writes (the contract), including a rank prefix."""
    hp = {"learning_rate": 1e-5, "batch_size": 8, "weight_decay": 0.01}
    rec = {"trial_id": "t1", "learning_rate": 1e-5, "batch_size": 8, "weight_decay": 0.01, "seed": 1,
           "epochs": 2, "eval_loss": 0.987654321, "exact_match": 50.0, "f1": 61.25,
           "train_runtime_s": 77.5, "tokens_per_s": 1234.5, "device": "cpu", "num_devices": 1,
           "history": []}
    eval_text = logfmt.eval_line("t1", 1.0, 3, {"eval_loss": 1.1, "exact_match": 40, "f1": 50}, hp)
    # every key is a CSV column name (or the trial/epoch/step of the evaluation)
    assert eval_text == ("[eval] trial=t1 epoch=1.00 step=3 eval_loss=1.1000 exact_match=40.00 f1=50.00 "
                         "learning_rate=1e-05 batch_size=8 weight_decay=0.01")
    log = _write_log(tmp_path, _job_lines(gpus=0) + [
        _run_start(gpus=0),
        "[rank0]: " + eval_text,
        "0: " + logfmt.result_line(rec),
        "===== RUN 1/1 END trial=t1 rc=0 wall_s=90 : 2025-01-01 10:01:40 UTC =====",
        "===== JOB 77 FINISH : 2025-01-01 10:02:00 UTC (rc=0, elapsed=120.0s) ====="])
    parsed = parse_log(log)
    assert parsed.warnings == []
    (row,) = parsed.rows
    assert row["eval_loss"] == pytest.approx(0.987654321) and row["tokens_per_s"] == 1234.5
    assert row["gpu_hours"] == 0 and row["cpu_hours"] == pytest.approx(8 * 90 / 3600)
    assert read_job_log(log).history["t1"] == [{"epoch": 1, "step": 3, "eval_loss": 1.1, "exact_match": 40, "f1": 50,
                                                "learning_rate": 1e-5, "batch_size": 8, "weight_decay": 0.01}]


def test_run_start_and_end_lines_round_trip(tmp_path):
    """What a Python driver writes with run_start_line / run_end_line is read back as the row."""
    fields = {"learning_rate": 3e-05, "batch_size": 16, "weight_decay": 0.0, "seed": 42, "epochs_planned": 2,
              "gpus": 4, "cpus": 32}
    start = logfmt.run_start_line(2, 3, "grid02_lr3e-05_bs16", fields, "2025-01-01 10:00:10 UTC")
    assert start == ("===== RUN 2/3 START trial=grid02_lr3e-05_bs16 learning_rate=3e-05 batch_size=16 "
                     "weight_decay=0 seed=42 epochs_planned=2 gpus=4 cpus=32 : 2025-01-01 10:00:10 UTC =====")
    end = logfmt.run_end_line(2, 3, "grid02_lr3e-05_bs16", 0, 1259.96, "2025-01-01 10:21:10 UTC")
    assert end == "===== RUN 2/3 END trial=grid02_lr3e-05_bs16 rc=0 wall_s=1260.0 : 2025-01-01 10:21:10 UTC ====="
    hp = {k: fields[k] for k in ("learning_rate", "batch_size", "weight_decay")}
    metrics = {"eval_loss": 1.25, "exact_match": 44.5, "f1": 55.25}
    log = _write_log(tmp_path, _job_lines("88", gpus=4, cpus=32) + [
        logfmt.run_start_line(1, 3, "grid01_lr1e-05_bs16", dict(fields, learning_rate=1e-05),
                              "2025-01-01 09:50:00 UTC"),
        logfmt.run_end_line(1, 3, "grid01_lr1e-05_bs16", 0, 600, "2025-01-01 10:00:00 UTC"),
        start, logfmt.eval_line("grid02_lr3e-05_bs16", 2.0, 38, metrics, hp), end,
        logfmt.run_start_line(3, 3, "grid03_crash", fields, "2025-01-01 10:21:11 UTC"),
        logfmt.run_end_line(3, 3, "grid03_crash", 1, 9.04, "2025-01-01 10:21:20 UTC"),
        "===== JOB 88 FINISH : 2025-01-01 10:22:00 UTC (rc=0, elapsed=1320.0s) ====="])
    parsed = parse_log(log)
    # run 1 ended rc=0 without metrics: that is its only warning
    assert [w.message for w in parsed.warnings] == [
        "RUN 1/3 (trial grid01_lr1e-05_bs16) ended with rc=0 but printed no [result] or [eval] metrics: "
        "status error"]
    assert parsed.rows[0]["learning_rate"] == 1e-05 and parsed.rows[0]["wall_s"] == 600
    assert parsed.rows[1:] == [
        make_row(method="manual", job_id="88", trial_id="grid02_lr3e-05_bs16", status="completed",
                 wall_s=1260.0, epochs=2, **fields, **metrics),   # epochs reached: from [eval]
        make_row(method="manual", job_id="88", trial_id="grid03_crash", status="error", wall_s=9.0, **fields)]
    assert parsed.rows[1]["gpu_hours"] == pytest.approx(1.4)          # 4 GPUs x 1260 s
    assert parsed.job["runs_planned"] == 3


def test_log_date_reads_back():
    when = datetime(2025, 3, 14, 9, 0, 3)
    assert logfmt.log_date(when) == "2025-03-14 09:00:03"             # naive: no zone name
    assert logfmt.parse_date(logfmt.log_date()) is not None            # now, with the local zone
    assert logfmt.parse_date(logfmt.log_date(when) + " UTC") == when
    assert logfmt.parse_date("no date here") is None


def test_short_run_start_keys_are_not_read(tmp_path):
    """The keys are the column names: an old-style `lr=` is reported, not guessed."""
    log = _write_log(tmp_path, _job_lines() + [
        "===== RUN 1/1 START trial=t1 lr=1e-05 bs=8 wd=0.01 seed=1 epochs=2 gpus=2 cpus=8 "
        ": 2025-01-01 10:00:10 UTC =====",
        "===== RUN 1/1 END trial=t1 rc=1 wall_s=30 : 2025-01-01 10:00:40 UTC =====",
        "===== JOB 77 FINISH : 2025-01-01 10:01:00 UTC (rc=1, elapsed=60.0s) ====="])
    parsed = parse_log(log)
    (row,) = parsed.rows
    assert (row["learning_rate"], row["batch_size"], row["weight_decay"], row["seed"]) == (None, None, None, 1)
    (w,) = parsed.warnings
    assert w.lineno == 3 and "unknown key(s) lr, bs, wd" in w.message and "learning_rate" in w.message


def test_reparse_after_summary_was_appended(tmp_path):
    """The launcher prints the parser's output into the same .out; parsing again reads the same rows."""
    log = shutil.copy(LOGS / "manual_crashed.out", tmp_path / "job.out")
    res = _cli(log)
    assert res.returncode == 0
    with open(log, "a", encoding="utf-8") as f:
        f.write(res.stderr + res.stdout)
    again = parse_log(log)
    assert again.rows == parse_log(LOGS / "manual_crashed.out").rows
    assert [w.lineno for w in again.warnings] == [96, 97]


# --------------------------------------------------------------------------- missing / empty log

@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_missing_or_empty_log_is_a_clear_error_and_keeps_csv(tmp_path, content):
    log = tmp_path / "hpo-manual-1.out"
    if content is not None:
        log.write_text(content)
    with pytest.raises(LogError, match="not found" if content is None else "empty"):
        parse_log(log)
    csv_path = tmp_path / "hpo-manual-1.csv"          # the default CSV path of that log
    csv_path.write_text("an earlier, good CSV\n")
    res = _cli(log)
    assert res.returncode == 2
    assert "ERROR" in res.stderr and str(log) in res.stderr
    assert csv_path.read_text() == "an earlier, good CSV\n"


# --------------------------------------------------------------------------- scripts/parse_logs.py

def test_cli_usage_error_exits_2():
    res = _cli()                                      # no LOG argument
    assert res.returncode == 2 and "usage" in res.stderr


@pytest.mark.parametrize("script", ["parse_logs.py", "compare.py"])
def test_scripts_say_clearly_when_hpo_is_not_installed(tmp_path, script):
    # -S: no site-packages, so not the venv's `pip install -e .` either; the script adds nothing itself
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-S", str(ROOT / "scripts" / script), "x"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == ("the hpo package is not importable: run `make venv` or "
                                  "`pip install -e .` in the repository root")


def test_cli_default_outputs_next_to_log(tmp_path):
    log = shutil.copy(LOGS / "manual_normal.out", tmp_path / "hpo-manual-4815162.out")
    res = _cli(log, cwd=tmp_path)                     # works from any directory
    assert res.returncode == 0, res.stderr
    csv_path = tmp_path / "hpo-manual-4815162.csv"
    assert csv_path.read_text() == (EXPECTED / "manual_normal.csv").read_text()
    assert "JOB SUMMARY" in res.stdout and f"CSV: {csv_path}" in res.stdout
    assert len([ln for ln in res.stdout.splitlines() if ln.startswith("| ") and "grid0" in ln]) == 4
    summary = json.loads((tmp_path / "hpo-manual-4815162.summary.json").read_text())
    assert summary["n_trials"]["completed"] == 4 and summary["csv"] == str(csv_path)
    assert summary["job_gpu_hours"] == pytest.approx(4 * 4762.3 / 3600)


def test_cli_summary_json_goes_next_to_the_csv(tmp_path):
    log = shutil.copy(LOGS / "manual_truncated.out", tmp_path / "job.out")
    res = _cli(log, "--csv", tmp_path / "out" / "t.csv", "--quiet")
    assert res.returncode == 0 and "JOB SUMMARY" not in res.stdout
    assert "job.out:48:" in res.stderr                              # warnings even with --quiet
    summary = json.loads((tmp_path / "out" / "t.summary.json").read_text())
    assert summary["finish"] is None and summary["elapsed_s"] == 3135
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.out", "out"]


def test_cli_records_route(tmp_path):
    log = _write_log(tmp_path, _job_lines("900", gpus=4, cpus=16) + [
        "[eval] trial=trial_00001 epoch=1.00 step=5 eval_loss=1.5 exact_match=30 f1=40 "
        "learning_rate=3e-05 batch_size=8 weight_decay=0",
        "===== JOB 900 FINISH : 2025-01-01 10:10:00 UTC (rc=0, elapsed=600.0s) ====="], "hpo-asha-900.out")
    rec = write_records([ray_row(), ray_row(trial_id="trial_00002", status="completed", eval_loss=1.2)],
                        tmp_path / "trials.jsonl")
    res = _cli(log, "--records", rec)
    assert res.returncode == 0, res.stderr
    rows = read_csv(tmp_path / "hpo-asha-900.csv")
    assert [(r["trial_id"], r["status"]) for r in rows] == [("trial_00001", "stopped_early"),
                                                           ("trial_00002", "completed")]
    assert "WARNING" not in res.stderr
    assert "**trial_00002**" in res.stdout                          # best row highlighted
    assert _cli(log, "--records", tmp_path / "nope.jsonl").returncode == 2


def test_ray_log_reparse_finds_its_records_and_never_shrinks_a_csv(tmp_path):
    """The README's re-parse command on a Ray method's log used to rewrite its CSV header-only."""
    log = _write_log(tmp_path, _job_lines("901", gpus=4, cpus=16) + [
        "===== JOB 901 FINISH : 2025-01-01 10:10:00 UTC (rc=0, elapsed=600.0s) ====="], "hpo-asha-901.out")
    job_dir = tmp_path / "hpo-asha-901"
    job_dir.mkdir()
    write_records([ray_row(job_id="901"), ray_row(job_id="901", trial_id="trial_00002")], job_dir / "trials.jsonl")
    res = _cli(log, "--quiet")
    assert res.returncode == 0, res.stderr
    assert len(read_csv(tmp_path / "hpo-asha-901.csv")) == 2            # found trials.jsonl by itself
    # the records gone (moved, deleted): the re-parse finds no rows and must not replace the CSV
    (job_dir / "trials.jsonl").rename(tmp_path / "moved.jsonl")
    before = (tmp_path / "hpo-asha-901.csv").read_text()
    res = _cli(log, "--quiet")
    assert res.returncode == 1 and "NOT replaced" in res.stderr
    assert (tmp_path / "hpo-asha-901.csv").read_text() == before
    assert read_csv(tmp_path / "hpo-asha-901.reparsed.csv") == []
    # more rows than before: replaced as usual
    res = _cli(log, "--quiet", "--records", tmp_path / "moved.jsonl")
    assert res.returncode == 0 and len(read_csv(tmp_path / "hpo-asha-901.csv")) == 2


def test_eval_line_carries_the_peak_memory_when_measured():
    from hpo import logfmt
    hp = {"learning_rate": 1e-3, "batch_size": 8, "weight_decay": 0.0}
    m = {"eval_loss": 1.0, "exact_match": 2.0, "f1": 3.0}
    assert "peak_memory_gib" not in logfmt.eval_line("t", 1.0, 10, m, hp)
    line = logfmt.eval_line("t", 1.0, 10, {**m, "peak_memory_gib": 0.587}, hp)
    assert logfmt.parse_kv(line[len(logfmt.EVAL):])["peak_memory_gib"] == "0.59"
