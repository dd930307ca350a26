"""The results schema: one row per trial, the same columns for every method, and its files.

Use (nothing to run):
    from hpo.schema import COLUMNS, make_row, write_csv, read_csv, write_records, read_records
    row = make_row(method="asha", trial_id="trial_00001", status="stopped_early",
                   learning_rate=3e-5, eval_loss=1.5, gpus=1, wall_s=120)
    write_records([row], "logs/asha/hpo-asha-900/trials.jsonl")   # a Ray driver, as trials end
    write_csv([row], "logs/asha/hpo-asha-900.csv")                 # scripts/parse_logs.py

What is here:
  * COLUMNS (the CSV header, in this order) and STATUSES (how a trial ended);
  * make_row: a dict checked against the schema, numbers coerced (to_number);
  * format_value: a number as CSV text, stable so expected CSVs compare exactly;
  * the files: CSV (write_csv / read_csv / csv_text) and the JSON-lines records a
    Ray driver writes (write_records / read_records), both written atomically
    (atomic_write_text), so a reader or a crash never sees half a file.

The log parser (hpo.logparse) and the reports (hpo.report) build on this module;
it imports nothing else from hpo.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

COLUMNS = [
    "method", "job_id", "trial_id", "status",
    "learning_rate", "batch_size", "weight_decay", "seed", "epochs",
    "eval_loss", "exact_match", "f1", "train_runtime_s",
    "wall_s", "gpus", "gpu_hours", "cpus", "cpu_hours", "tokens_per_s",
    # what ran and where the time went (appended, so older readers keep their columns):
    # global_batch_size = batch_size x devices x gradient accumulation; epochs = epochs reached,
    # epochs_planned = epochs asked for; setup/train/eval/checkpoint seconds of the trial (train_s:
    # optimizer steps only); data_fingerprint: which questions it trained and was scored on.
    "global_batch_size", "epochs_planned", "setup_s", "train_s", "eval_s", "checkpoint_s", "data_fingerprint",
    # how often the trial crashed and was restarted from its last checkpoint (Ray methods, --max-failures)
    "retries",
]
# completed: ran all its epochs; stopped_early: a scheduler (ASHA, PBT) stopped it;
# error: it crashed; incomplete: the job ended (scancel, walltime) while it ran.
STATUSES = ("completed", "stopped_early", "error", "incomplete")

# Text columns; every other column is a number (or empty).
_STR_COLUMNS = ("method", "job_id", "trial_id", "status", "data_fingerprint")
# Must be whole numbers (a batch size of 8.5 is a bug upstream, not a value to keep).
_INT_COLUMNS = ("batch_size", "seed", "global_batch_size", "retries")
# Whole numbers are stored and written as ints ("2", not "2.0"); Ray may give
# fractional GPUs per trial, so gpus/cpus/epochs stay floats when they are not whole.
_INTEGRAL_OK = ("batch_size", "seed", "epochs", "gpus", "cpus", "global_batch_size", "epochs_planned")
_REQUIRED = ("method", "trial_id", "status")


@dataclass(frozen=True)
class LogWarning:
    """A problem in one line of a file (a job log or a records file), reported and
    skipped; `lineno` is 1-based (None: the file as a whole)."""
    path: str
    lineno: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.lineno}" if self.lineno is not None else self.path
        return f"WARNING {where}: {self.message}"


# --------------------------------------------------------------------------- values

def to_number(value, col: str):
    """int/float for the numeric column `col`; None for missing ('' or None);
    ValueError (naming the column and the value) for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):          # JSON true/false is not a number here
        raise ValueError(f"{col}={value!r} is not a number")
    if isinstance(value, (int, float)):
        x = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            x = int(text)
        except ValueError:
            try:
                x = float(text)          # accepts nan/inf: a diverged run is a result
            except ValueError:
                raise ValueError(f"{col}={value!r} is not a number") from None
    else:
        raise ValueError(f"{col}={value!r} is not a number")
    if col in _INT_COLUMNS and not (isinstance(x, int) or (math.isfinite(x) and float(x).is_integer())):
        raise ValueError(f"{col}={value!r} is not a whole number")
    if col in _INTEGRAL_OK and isinstance(x, float) and math.isfinite(x) and x.is_integer():
        x = int(x)
    return x


def device_hours(n, wall_s):
    """Allocation-hours: n devices (GPUs or CPUs) held for wall_s seconds; None if either is unknown."""
    if n is None or wall_s is None:
        return None
    return n * wall_s / 3600.0


def make_row(**fields) -> dict:
    """One row in the schema: validated, numbers coerced, missing keys None.

    gpu_hours / cpu_hours are filled from gpus/cpus x wall_s when not given, so
    a driver only reports what it knows. Raises ValueError on an unknown key, a
    missing method/trial_id/status, a status not in STATUSES or a non-numeric value.
    """
    unknown = [k for k in fields if k not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the schema is {COLUMNS}")
    row = {}
    for col in COLUMNS:
        value = fields.get(col)
        if col in _STR_COLUMNS:
            row[col] = None if value is None or value == "" else str(value)
        else:
            row[col] = to_number(value, col)
    missing = [c for c in _REQUIRED if row[c] is None]
    if missing:
        raise ValueError(f"row is missing {missing}: {fields!r}")
    if row["status"] not in STATUSES:
        raise ValueError(f"status {row['status']!r} is not one of {STATUSES} (trial {row['trial_id']})")
    if row["gpu_hours"] is None:
        row["gpu_hours"] = device_hours(row["gpus"], row["wall_s"])
    if row["cpu_hours"] is None:
        row["cpu_hours"] = device_hours(row["cpus"], row["wall_s"])
    return row


def format_value(value) -> str:
    """CSV cell text. Stable across runs so expected CSVs can be compared exactly:
    ints as ints, whole floats without '.0', others to 6 significant digits
    (no exponent above 1e6, where 6 digits would drop the units)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 1e6:
            return f"{value:.1f}"
        return f"{value:.6g}"
    return str(value)


# --------------------------------------------------------------------------- atomic write

def atomic_write_text(path, text: str) -> Path:
    """Write via a temp file in the same directory + rename: readers (and a crash)
    see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file owner-only (0600); a results file on a shared filesystem is
        # readable like any file the user writes (the umask decides: usually 0644)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


# --------------------------------------------------------------------------- CSV

def csv_text(rows, columns=COLUMNS) -> str:
    """CSV text: the header `columns`, then each row's cells in that order (format_value).
    The results CSV uses COLUMNS; scripts/compare.py's best-of-each CSV its own columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([format_value(row.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(rows, path) -> Path:
    """COLUMNS in order, one line per row in the given order, empty cell = missing."""
    return atomic_write_text(path, csv_text(rows))


def read_csv(path) -> list[dict]:
    """Rows back from a CSV written by `write_csv`; ValueError if the header is not COLUMNS."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            raise ValueError(f"{path}: columns {header} are not the results schema {COLUMNS}")
        rows = []
        for lineno, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(COLUMNS):
                raise ValueError(f"{path}:{lineno}: {len(cells)} cells, expected {len(COLUMNS)}")
            try:
                rows.append(make_row(**dict(zip(COLUMNS, cells))))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
    return rows


# --------------------------------------------------------------------------- records (Ray drivers)

def _record_json(row: dict) -> str:
    # NaN stays NaN (Python's json reads it back): a diverged trial is a result.
    return json.dumps({c: row[c] for c in COLUMNS})


def write_records(rows, path, *, append: bool = False) -> Path:
    """Write trial rows as JSON lines (keys = COLUMNS). Every row is validated first
    (ValueError names the bad key/status), so a bad row never reaches the file.

    append=False replaces the file atomically; append=True adds lines (a driver
    that records each trial as it finishes).
    """
    clean = [make_row(**row) for row in rows]
    text = "".join(_record_json(r) + "\n" for r in clean)
    path = Path(path)
    if append:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)                 # one write per call: lines stay whole
            f.flush()
            os.fsync(f.fileno())
    else:
        atomic_write_text(path, text)
    return path


def read_records(path, warnings: list | None = None) -> list[dict]:
    """Rows from a JSONL records file. A bad line raises ValueError (file:line),
    or, when a `warnings` list is given, is added to it as a LogWarning and skipped
    (a driver killed mid-append leaves a half line)."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                rows.append(make_row(**obj))
            except (ValueError, TypeError) as e:
                if warnings is None:
                    raise ValueError(f"{path}:{lineno}: bad record: {e}") from None
                warnings.append(LogWarning(str(path), lineno, f"bad record: {e}: skipped"))
    return rows
