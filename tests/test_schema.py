"""Tests of the results schema and its files (hpo/schema.py).

Run: .venv/bin/python -m pytest tests/test_schema.py -q
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hpo import schema
from hpo.logparse import parse_log
from hpo.schema import (COLUMNS, STATUSES, csv_text, format_value, make_row, read_csv, read_records,
                        write_csv, write_records)
from rows import ray_row

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "tests" / "fixtures" / "logs"
EXPECTED = ROOT / "tests" / "fixtures" / "expected"


def test_statuses_and_columns_contract():
    assert STATUSES == ("completed", "stopped_early", "error", "incomplete")
    assert COLUMNS[:4] == ["method", "job_id", "trial_id", "status"] and len(COLUMNS) == 27
    # appended after tokens_per_s, in this order: older readers keep their columns
    assert COLUMNS[18:] == ["tokens_per_s", "global_batch_size", "epochs_planned", "setup_s", "train_s", "eval_s",
                            "checkpoint_s", "data_fingerprint", "retries"]
    assert (EXPECTED / "manual_normal.csv").read_text().splitlines()[0] == ",".join(COLUMNS)


def test_make_row_coerces_and_derives_hours():
    row = make_row(method="m", trial_id="t", status="completed", batch_size="8", epochs=2.0,
                   gpus=2, cpus="4", wall_s="1800")
    assert list(row) == COLUMNS
    assert row["batch_size"] == 8 and isinstance(row["epochs"], int) and row["gpu_hours"] == 1.0
    assert row["cpu_hours"] == 2.0 and row["eval_loss"] is None
    with pytest.raises(ValueError, match="not a whole number"):
        make_row(method="m", trial_id="t", status="completed", batch_size=8.5)
    with pytest.raises(ValueError, match="missing"):
        make_row(trial_id="t", status="completed")


def test_write_csv_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.csv"
    path.write_text("old\n")

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(schema.os, "replace", crash)
    with pytest.raises(OSError):
        write_csv(parse_log(LOGS / "manual_normal.out").rows, path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]     # no temp file left behind


def test_csv_round_trip():
    """read_csv then csv_text gives the same text back (format_value is stable)."""
    path = EXPECTED / "manual_crashed.csv"
    rows = read_csv(path)
    assert csv_text(rows) == path.read_text(encoding="utf-8")
    # other columns (the best-of-each CSV of scripts/compare.py) through the same writer
    assert csv_text(rows, ["trial_id", "status"]).splitlines()[:3] == [
        "trial_id,status", "grid01_lr1e-05_bs8,completed", "grid02_lr1e-05_bs16,error"]


def test_format_value_is_stable():
    fv = format_value
    assert [fv(None), fv(8), fv(2.0), fv(1e-05), fv(1.3021427631378173), fv(float("nan")),
            fv(1234567.891), fv(0.68)] == ["", "8", "2", "1e-05", "1.30214", "nan", "1234567.9", "0.68"]


# --------------------------------------------------------------------------- records (Ray route)

def test_records_round_trip(tmp_path):
    path = tmp_path / "trials.jsonl"
    write_records([ray_row()], path)
    write_records([ray_row(trial_id="trial_00002", status="completed", eval_loss=float("nan"))],
                  path, append=True)
    rows = read_records(path)
    assert [r["trial_id"] for r in rows] == ["trial_00001", "trial_00002"]
    assert rows[0]["status"] == "stopped_early"
    assert rows[0]["gpu_hours"] == pytest.approx(120 / 3600)       # derived: 1 GPU x 120 s
    assert rows[0]["cpu_hours"] == pytest.approx(4 * 120 / 3600)
    assert math.isnan(rows[1]["eval_loss"])
    assert list(rows[0]) == COLUMNS
    assert [json.loads(line)["trial_id"] for line in path.read_text().splitlines()] == ["trial_00001", "trial_00002"]


def test_records_reject_bad_status_and_unknown_keys(tmp_path):
    path = tmp_path / "trials.jsonl"
    with pytest.raises(ValueError, match="status 'TERMINATED' is not one of"):
        write_records([ray_row(status="TERMINATED")], path)
    with pytest.raises(ValueError, match="unknown column"):
        write_records([ray_row(eval_los=1.0)], path)
    with pytest.raises(ValueError, match="not a number"):
        write_records([ray_row(eval_loss="low")], path)
    assert not path.exists()                                        # nothing half-written
    path.write_text(json.dumps(ray_row()) + "\n" + '{"method": "asha", "trial_id": "x", "status": "done"}\n'
                    + '{"method": "asha", "trial_id": "y", "sta')   # half a line: driver killed mid-append
    with pytest.raises(ValueError, match=r"trials.jsonl:2"):
        read_records(path)
    warnings = []
    assert len(read_records(path, warnings=warnings)) == 1
    assert [w.lineno for w in warnings] == [2, 3]
    assert str(warnings[0]).startswith(f"WARNING {path}:2: bad record")


def test_result_files_are_readable_by_the_group_like_any_file(tmp_path):
    """atomic_write_text goes through mkstemp (owner-only 0600): the result must get the umask's mode,
    so an instructor can read a learner's CSV on a shared filesystem."""
    import os
    from hpo.schema import atomic_write_text
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "x.csv", "a\n")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644
