"""One results parser for every method: a job's log (and Ray records) -> one CSV schema.

Run:
    python scripts/parse_logs.py logs/manual/hpo-manual-4815162.out
    python scripts/parse_logs.py logs/asha/hpo-asha-4815170.out --records logs/asha/hpo-asha-4815170/trials.jsonl
    python -m hpo.results LOG ...            (same CLI; `main(argv)` below)

Where the rows come from:
  * manual grid: the `===== RUN k/n START/END =====` blocks of the job's .out file,
    with the trial's `[eval]` lines and its `[result]` JSON in between;
  * Ray methods (ASHA, PBT, BayesOpt): the driver writes one JSON line per trial
    with `write_records` (status decided by the driver, e.g. `stopped_early`);
    `read_records` reads them back. The log still gives the job facts either way
    (JOB START/FINISH, the `[job]` line with the allocation).

Every method therefore ends in the same CSV (`COLUMNS`, in this order), the same
JOB SUMMARY block (GPU-hours of the allocation vs. GPU-hours spent in trials) and
the same markdown table; `scripts/compare.py` lines the methods up side by side.

The line formats are defined in `hpo.logfmt` (the contract with the launchers).
Log text is never `eval`-ed: `json.loads` for `[result]`, `key=value` for the rest.
A line that does not parse is reported as a warning (with its line number) and
skipped; the parser still writes what it could read. Nothing runs at import time.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hpo import logfmt

COLUMNS = [
    "method", "job_id", "trial_id", "status",
    "learning_rate", "batch_size", "weight_decay", "seed", "epochs",
    "eval_loss", "exact_match", "f1", "train_runtime_s",
    "wall_s", "gpus", "gpu_hours", "cpus", "cpu_hours", "tokens_per_s",
]
STATUSES = ("completed", "stopped_early", "error", "incomplete")

_STR_COLUMNS = ("method", "job_id", "trial_id", "status")
_NUM_COLUMNS = tuple(c for c in COLUMNS if c not in _STR_COLUMNS)
# Must be whole numbers (a batch size of 8.5 is a bug upstream, not a value to keep).
_INT_COLUMNS = ("batch_size", "seed")
# Whole numbers are stored and written as ints ("2", not "2.0"); Ray may give
# fractional GPUs per trial, so gpus/cpus/epochs stay floats when they are not whole.
_INTEGRAL_OK = ("batch_size", "seed", "epochs", "gpus", "cpus")
_REQUIRED = ("method", "trial_id", "status")

# RUN START key -> CSV column (the launcher's short names, see logfmt's docstring).
_START_KEYS = {"lr": "learning_rate", "bs": "batch_size", "wd": "weight_decay",
               "seed": "seed", "epochs": "epochs", "gpus": "gpus", "cpus": "cpus"}
_HPARAMS = ("learning_rate", "batch_size", "weight_decay", "seed", "epochs")
_METRICS = ("eval_loss", "exact_match", "f1")
_RESULT_NUMERIC = _HPARAMS + _METRICS + ("train_runtime_s", "tokens_per_s")
_EVAL_REQUIRED = ("trial", "epoch", "eval_loss", "exact_match", "f1")

# `date '+%F %T %Z'` in the markers; DeepSpeed/logging lines start with
# `[YYYY-MM-DD HH:MM:SS,mmm]`. The zone name is ignored: every line of one job log
# comes from the same node clock and zone (a DST switch mid-job is off by 1 h).
_TS = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
_LINE_TS = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
# A marker can end up glued behind a progress bar: tqdm writes "\r 50%|…| 19/38"
# to stderr without a newline and the next stdout line lands behind it in the
# merged .out file. These needles find such markers mid-line.
_NEEDLES = ("===== JOB ", "===== RUN ", logfmt.JOB_INFO + "method=",
            logfmt.EVAL + "trial=", logfmt.RESULT + "{")


class LogError(Exception):
    """The log cannot be parsed at all (missing, unreadable or empty)."""


@dataclass(frozen=True)
class LogWarning:
    """A problem in one line of a file; `lineno` is 1-based (None: the file as a whole)."""
    path: str
    lineno: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.lineno}" if self.lineno is not None else self.path
        return f"WARNING {where}: {self.message}"


@dataclass
class ParsedLog:
    """What `parse_log` read: job facts, one row per RUN block, warnings, and each
    RUN block's evaluations (trial_id -> [{epoch, step, eval_loss, exact_match, f1}],
    in log order, a line printed by several ranks once) for learning curves."""
    path: str
    job: dict
    rows: list[dict] = field(default_factory=list)
    warnings: list[LogWarning] = field(default_factory=list)
    history: dict[str, list[dict]] = field(default_factory=dict)


# --------------------------------------------------------------------------- values

def _to_number(value, col: str):
    """int/float for a numeric column; None for missing; ValueError for anything else."""
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


def _hours(n, wall_s):
    """Allocation-hours: n devices held for wall_s seconds."""
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
            row[col] = _to_number(value, col)
    missing = [c for c in _REQUIRED if row[c] is None]
    if missing:
        raise ValueError(f"row is missing {missing}: {fields!r}")
    if row["status"] not in STATUSES:
        raise ValueError(f"status {row['status']!r} is not one of {STATUSES} (trial {row['trial_id']})")
    if row["gpu_hours"] is None:
        row["gpu_hours"] = _hours(row["gpus"], row["wall_s"])
    if row["cpu_hours"] is None:
        row["cpu_hours"] = _hours(row["cpus"], row["wall_s"])
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


def _parse_time(text: str | None) -> datetime | None:
    m = _TS.search(text or "")
    if not m:
        return None
    try:
        return datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --------------------------------------------------------------------------- log parser

def _read_lines(path) -> list[str]:
    """The log's lines as an editor numbers them (split on \\n only)."""
    p = Path(path)
    if not p.exists():
        raise LogError(f"log file not found: {p}")
    if not p.is_file():
        raise LogError(f"not a log file: {p}")
    try:
        # errors="replace": a stray binary byte (tqdm, a crashed rank) must not
        # cost the whole log.
        text = p.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise LogError(f"cannot read log file {p}: {e}") from e
    if not text.strip():
        raise LogError(f"log file is empty: {p} (did the job start? check `sacct -j <id>`)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _normalise(raw: str) -> str:
    """What a terminal would show, without the rank prefix; a glued marker is cut out."""
    line = raw.rstrip("\r")
    if "\r" in line:                          # progress-bar redraws: keep the last one
        line = line.rsplit("\r", 1)[-1]
    line = logfmt.strip_rank(line)
    if line.startswith(_NEEDLES):
        return line
    hits = [i for i in (line.find(n) for n in _NEEDLES) if i > 0]
    if hits:
        return logfmt.strip_rank(line[min(hits):])
    return line


class _Run:
    """One open `===== RUN k/n START … =====` block."""

    def __init__(self, lineno, text, k, n, kv, date):
        self.lineno, self.text, self.k, self.n = lineno, text, k, n
        self.kv, self.start_time = kv, _parse_time(date)
        self.trial = kv.get("trial")
        self.params: dict = {}
        self.evals: dict = {}        # (epoch, step) -> (text, metrics); dicts keep order
        self.result: dict | None = None
        self.result_text: str | None = None
        self.last_time: datetime | None = None   # latest timestamp seen inside the block

    @property
    def label(self) -> str:
        return f"RUN {self.k}/{self.n} (trial {self.trial})"


class _Parser:
    def __init__(self, path, method=None):
        self.path = str(path)
        self.method_hint = method
        self.job = {k: None for k in (
            "job_id", "method", "job_name", "tier", "profile", "nodes", "gpus", "cpus",
            "host", "log", "start", "finish", "rc", "elapsed_s", "last_time", "runs_planned")}
        self.rows: list[dict] = []
        self.history: dict[str, list[dict]] = {}
        self.warnings: list[LogWarning] = []
        self.run: _Run | None = None
        self.last_end_text: str | None = None
        self.last_time: datetime | None = None
        self.last_time_text: str | None = None
        self.finished = False
        self.n_runs = 0

    def warn(self, lineno, message):
        self.warnings.append(LogWarning(self.path, lineno, message))

    # -- timestamps
    def saw_time(self, text):
        """Remember the latest time the log reached (until FINISH: later lines are
        the after-finish hooks, not the job)."""
        t = _parse_time(text)
        if t is None or self.finished:
            return
        if self.last_time is not None and t < self.last_time:
            return                        # never run the clock backwards
        self.last_time, self.last_time_text = t, text
        if self.run is not None:
            self.run.last_time = t

    # -- main loop
    def parse(self, lines):
        for lineno, raw in enumerate(lines, start=1):
            line = _normalise(raw)
            try:
                self.line(lineno, line)
            except ValueError as e:       # a value that doesn't parse: warn, skip the line
                self.warn(lineno, str(e))
        if self.run is not None:
            self.warn(self.run.lineno, f"{self.run.label} has no END line (job cut off or killed): "
                                       f"status incomplete")
            self.close_incomplete()
        self.finish_job()
        return ParsedLog(self.path, self.job, self.rows, self.warnings, self.history)

    def line(self, lineno, line):
        if line.startswith("===== JOB "):
            self.job_marker(lineno, line)
        elif line.startswith("===== RUN "):
            self.run_marker(lineno, line)
        elif line.startswith(logfmt.JOB_INFO):
            self.job_info(lineno, line)
        elif line.startswith(logfmt.EVAL):
            if self.run is not None:      # outside RUN blocks (Ray logs): not ours to read
                self.eval_line(lineno, line)
        elif line.startswith(logfmt.RESULT):
            if self.run is not None:
                self.result_line(lineno, line)
        elif _LINE_TS.match(line):
            self.saw_time(line)

    # -- JOB markers and the [job] line
    def job_marker(self, lineno, line):
        m = logfmt.JOB_START.match(line)
        if m:
            if self.job["start"] is not None:
                if m.group("job_id") != self.job["job_id"] or m.group("date") != self.job["start"]:
                    self.warn(lineno, "a second JOB START line; keeping the first")
                return
            self.job["job_id"], self.job["start"] = m.group("job_id"), m.group("date")
            self.saw_time(m.group("date"))
            return
        m = logfmt.JOB_FINISH.match(line)
        if m:
            if self.finished:
                return                    # printed twice: the first one is the job's end
            try:
                elapsed = float(m.group("elapsed"))
            except ValueError:
                self.warn(lineno, f"JOB FINISH with elapsed={m.group('elapsed')!r}: skipped")
                return
            self.saw_time(m.group("date"))
            self.finished = True
            self.job["finish"], self.job["rc"] = m.group("date"), int(m.group("rc"))
            self.job["elapsed_s"] = elapsed
            if self.job["job_id"] is None:
                self.job["job_id"] = m.group("job_id")
            if self.run is not None:
                # scancel / walltime: the EXIT trap prints FINISH with a RUN still open
                self.warn(self.run.lineno, f"{self.run.label} has no END before JOB FINISH "
                                           f"(killed?): status incomplete")
                self.close_incomplete()
            return
        self.warn(lineno, "malformed JOB marker line (neither START nor FINISH layout): skipped")

    def job_info(self, lineno, line):
        kv = logfmt.parse_kv(line[len(logfmt.JOB_INFO):])
        if "method" not in kv:
            return                        # other [job] lines: site setup, laptop tier notes, SIGTERM
        if self.job["method"] is not None:
            return                        # first one wins (rank/step duplicates)
        for key in ("method", "job_name", "tier", "profile", "host", "log"):
            self.job[key] = kv.get(key)
        if kv.get("job_id"):
            if self.job["job_id"] is None:
                self.job["job_id"] = kv["job_id"]
            elif kv["job_id"] != self.job["job_id"]:
                self.warn(lineno, f"[job] job_id={kv['job_id']} differs from the JOB START id "
                                  f"{self.job['job_id']}; keeping the START id")
        for key in ("nodes", "gpus", "cpus"):
            try:
                self.job[key] = _to_number(kv.get(key), key)
            except ValueError as e:
                self.warn(lineno, f"[job] line: {e}")

    # -- RUN blocks
    def run_marker(self, lineno, line):
        m = logfmt.RUN_START.match(line)
        if m:
            if self.run is not None:
                if line == self.run.text:
                    return                # the same START printed twice
                self.warn(self.run.lineno, f"{self.run.label} has no END before the next RUN START "
                                           f"(line {lineno}): status incomplete")
                self.close_incomplete()
            self.open_run(lineno, line, m)
            return
        m = logfmt.RUN_END.match(line)
        if m:
            self.end_run(lineno, line, m)
            return
        self.warn(lineno, "malformed RUN marker line (neither START nor END layout): skipped")

    def open_run(self, lineno, line, m):
        kv = logfmt.parse_kv(m.group("kv"))
        run = _Run(lineno, line, int(m.group("k")), int(m.group("n")), kv, m.group("date"))
        if not run.trial:
            self.warn(lineno, "RUN START without trial=: skipped")
            return
        for key, col in _START_KEYS.items():
            try:
                run.params[col] = _to_number(kv.get(key), col)
            except ValueError as e:       # keep the trial, lose only the bad value
                self.warn(lineno, f"RUN START: {e} (left empty)")
                run.params[col] = None
        self.run = run
        self.n_runs += 1
        self.job["runs_planned"] = max(self.job["runs_planned"] or 0, run.n)
        self.saw_time(m.group("date"))

    def end_run(self, lineno, line, m):
        if self.run is None:
            if line != self.last_end_text:
                self.warn(lineno, "RUN END without an open RUN START: skipped")
            return
        run = self.run
        kv = logfmt.parse_kv(m.group("kv"))
        if kv.get("trial") != run.trial:
            self.warn(lineno, f"RUN END for trial {kv.get('trial')} but the open block is "
                              f"{run.label}: skipped")
            return
        try:
            rc = int(kv["rc"])
        except (KeyError, ValueError):
            self.warn(lineno, f"RUN END without a valid rc= (rc={kv.get('rc')!r}): skipped")
            return
        self.saw_time(m.group("date"))
        wall = None
        if "wall_s" in kv:
            try:
                wall = _to_number(kv["wall_s"], "wall_s")
            except ValueError as e:
                self.warn(lineno, f"RUN END: {e}; wall time taken from the timestamps")
        if wall is None:
            end_time = _parse_time(m.group("date"))
            if run.start_time and end_time:
                wall = (end_time - run.start_time).total_seconds()
        metrics = self.metrics(run)
        if rc == 0 and metrics.get("eval_loss") is not None:
            status = "completed"
        else:
            status = "error"
            if rc == 0:
                self.warn(lineno, f"{run.label} ended with rc=0 but printed no [result] or "
                                  f"[eval] metrics: status error")
        self.add_row(run, status, wall, metrics)
        self.run, self.last_end_text = None, line

    def close_incomplete(self):
        """A RUN without END: wall time up to the last time the log reached, if any."""
        run = self.run
        wall = None
        if run.start_time and run.last_time and run.last_time > run.start_time:
            wall = (run.last_time - run.start_time).total_seconds()
        self.add_row(run, "incomplete", wall, self.metrics(run))
        self.run = None

    def eval_line(self, lineno, line):
        run = self.run
        kv = logfmt.parse_kv(line[len(logfmt.EVAL):])
        missing = [k for k in _EVAL_REQUIRED if k not in kv]
        if missing:
            self.warn(lineno, f"malformed [eval] line: missing {', '.join(missing)}: skipped")
            return
        if kv["trial"] != run.trial:
            self.warn(lineno, f"[eval] line for trial {kv['trial']} inside {run.label}: skipped")
            return
        try:
            metrics = {k: _to_number(kv[k], k) for k in _METRICS}
            point = {"epoch": _to_number(kv["epoch"], "epoch"),
                     "step": _to_number(kv.get("step"), "step"), **metrics}
        except ValueError as e:
            raise ValueError(f"malformed [eval] line: {e}: skipped") from None
        key = (kv["epoch"], kv.get("step"))
        if key in run.evals:
            if run.evals[key][0] != line:
                self.warn(lineno, f"a different [eval] line for trial {run.trial} epoch {kv['epoch']} "
                                  f"was already read; keeping the first")
            return                        # printed by several ranks: counts once
        run.evals[key] = (line, metrics)
        self.history.setdefault(run.trial, []).append(point)

    def result_line(self, lineno, line):
        run = self.run
        payload = line[len(logfmt.RESULT):].strip()
        try:
            # raw_decode: the object, even when progress-bar junk got glued behind it
            record, _ = json.JSONDecoder().raw_decode(payload)
        except json.JSONDecodeError as e:
            self.warn(lineno, f"bad JSON in [result] line ({e.msg} at column {e.colno}): skipped")
            return
        if not isinstance(record, dict):
            self.warn(lineno, "[result] payload is not a JSON object: skipped")
            return
        if str(record.get("trial_id")) != run.trial:
            self.warn(lineno, f"[result] for trial {record.get('trial_id')} inside {run.label}: skipped")
            return
        try:
            clean = {k: _to_number(record.get(k), k) for k in _RESULT_NUMERIC}
        except ValueError as e:
            raise ValueError(f"[result] line: {e}: skipped") from None
        if run.result is not None:
            if payload != run.result_text:
                self.warn(lineno, f"a different [result] line for trial {run.trial} was already "
                                  f"read; keeping the first")
            return                        # printed by several ranks: counts once
        # epochs is left out: the trial records the epochs it reached (e.g. 1.9737),
        # RUN START the epochs it was given.
        for col in ("learning_rate", "batch_size", "weight_decay", "seed"):
            a, b = run.params.get(col), clean.get(col)
            if a is not None and b is not None and not math.isclose(a, b, rel_tol=1e-6):
                self.warn(lineno, f"[result] {col}={b} differs from RUN START's {a}; "
                                  f"keeping the RUN START value")
        run.result, run.result_text = clean, payload

    @staticmethod
    def metrics(run) -> dict:
        """Final metrics: the [result] JSON wins, the last [eval] line is the fallback."""
        if run.result is not None and run.result.get("eval_loss") is not None:
            return dict(run.result)
        if run.evals:
            last = list(run.evals.values())[-1][1]
            return dict(last)
        return {}

    def add_row(self, run, status, wall, metrics):
        fields = dict(method=self.job["method"] or self.method_hint, job_id=self.job["job_id"],
                      trial_id=run.trial, status=status, wall_s=wall)
        fields.update({k: v for k, v in run.params.items() if v is not None})
        for col in _HPARAMS:              # [result] fills what RUN START did not say
            if fields.get(col) is None and metrics.get(col) is not None:
                fields[col] = metrics[col]
        for col in _METRICS + ("train_runtime_s", "tokens_per_s"):
            fields[col] = metrics.get(col)
        if fields["method"] is None:
            fields["method"] = "unknown"
        self.rows.append(make_row(**fields))

    def finish_job(self):
        job = self.job
        if job["start"] is None:
            self.warn(None, "no '===== JOB <id> START' line: is this a job log?")
        if job["method"] is None:
            job["method"] = self.method_hint or _method_from_path(self.path)
            self.warn(None, f"no '[job] method=…' line; method taken as {job['method']!r}")
            for row in self.rows:
                row["method"] = job["method"]
        if job["finish"] is None:
            self.warn(None, "no '===== JOB <id> FINISH' line: the job was killed hard or is "
                            "still running")
        job["last_time"] = self.last_time_text and _TS.search(self.last_time_text).group(0)
        if self.n_runs and job["runs_planned"] and self.n_runs < job["runs_planned"]:
            self.warn(None, f"{self.n_runs} of {job['runs_planned']} planned runs appear in the log")


def _method_from_path(path) -> str:
    """logs/<method>/<job>.out -> <method>; the fallback when the [job] line is missing."""
    parent = Path(path).resolve().parent.name
    return parent if parent in ("manual", "asha", "pbt", "bayesopt") else "unknown"


def parse_log(path, method: str | None = None) -> ParsedLog:
    """Parse one job log. Raises LogError if the file is missing or empty.

    `method` is used only if the log has no `[job] method=…` line.
    """
    lines = _read_lines(path)
    return _Parser(path, method).parse(lines)


# --------------------------------------------------------------------------- records (Ray)

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


# --------------------------------------------------------------------------- CSV

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
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def csv_text(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in rows:
        w.writerow([format_value(row.get(c)) for c in COLUMNS])
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


# --------------------------------------------------------------------------- summary

def job_summary(job: dict, rows) -> dict:
    """Cost of the job vs. the cost of its trials, from the job facts and the rows.

    job_*_hours = allocated GPUs/CPUs x elapsed; trial_*_hours = sum over rows;
    training_share = trial hours / job hours (GPU-hours if the job had GPUs, else
    CPU-hours, so the laptop tier reports a share too).
    """
    start_t = _parse_time(job.get("start"))
    elapsed, source = job.get("elapsed_s"), None
    if elapsed is not None:
        source = "FINISH line"
    else:
        last_t = _parse_time(job.get("last_time"))
        if start_t and last_t:
            elapsed, source = (last_t - start_t).total_seconds(), "last timestamped line"
    gpus, cpus = job.get("gpus"), job.get("cpus")
    job_gpu_h, job_cpu_h = _hours(gpus, elapsed), _hours(cpus, elapsed)

    def total(col):
        vals = [r.get(col) for r in rows if _finite(r.get(col))]
        return sum(vals) if vals else (0.0 if rows else None)

    trial_gpu_h, trial_cpu_h = total("gpu_hours"), total("cpu_hours")
    basis = "GPU" if gpus else "CPU"
    num, den = (trial_gpu_h, job_gpu_h) if basis == "GPU" else (trial_cpu_h, job_cpu_h)
    share = num / den if num is not None and den else None
    counts = {s: 0 for s in STATUSES}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    counts["total"] = len(rows)
    finished = job.get("finish") is not None
    note = None
    if not finished:
        note = ("no FINISH line: the job was killed hard (or is still running); "
                + (f"elapsed measured to the last timestamped line ({job.get('last_time')})"
                   if elapsed is not None else "elapsed unknown"))
    return {
        "job_id": job.get("job_id"), "method": job.get("method"), "job_name": job.get("job_name"),
        "tier": job.get("tier"), "start": job.get("start"), "finish": job.get("finish"),
        "finished": finished, "rc": job.get("rc"), "elapsed_s": elapsed, "elapsed_source": source,
        "nodes": job.get("nodes"), "gpus": gpus, "cpus": cpus,
        "job_gpu_hours": job_gpu_h, "job_cpu_hours": job_cpu_h,
        "trial_gpu_hours": trial_gpu_h, "trial_cpu_hours": trial_cpu_h,
        "training_share": share, "share_basis": basis,
        "n_trials": counts, "runs_planned": job.get("runs_planned"), "note": note,
    }


def _f(x, spec, missing="-"):
    if x is None:
        return missing
    if isinstance(x, float) and not math.isfinite(x):
        return format_value(x)
    return format(x, spec)


def format_summary(summary: dict) -> str:
    """The readable JOB SUMMARY block printed into the .out file after FINISH.

    Its lines never start with '=====' or '[eval]'/'[result]', so re-parsing a log
    that already contains a summary reads the same rows.
    """
    s = summary
    head = f"----- JOB SUMMARY: {s.get('method') or '?'} job {s.get('job_id') or '?'} -----"
    if s["finished"]:
        finish = f"{s['finish']} (rc={s['rc']})"
    else:
        finish = "- (no FINISH line: killed hard or still running)"
    if s["elapsed_s"] is not None:
        elapsed = f"{s['elapsed_s']:.1f} s = {s['elapsed_s'] / 3600:.3f} h (from the {s['elapsed_source']})"
    else:
        elapsed = "unknown"
    n = s["n_trials"]
    planned = f" of {s['runs_planned']} planned" if s.get("runs_planned") else ""
    share = s["training_share"]
    share_txt = (f"{100 * share:.1f} % of the job's {s['share_basis']}-hours were spent in trials "
                 f"(the rest: start-up, data/model loading, gaps, idle)"
                 if share is not None else "-")
    lines = [
        head,
        f"start              : {s['start'] or '-'}",
        f"finish             : {finish}",
        f"elapsed            : {elapsed}",
        f"allocation         : {_f(s['nodes'], 'g')} node(s), {_f(s['gpus'], 'g')} GPU(s), "
        f"{_f(s['cpus'], 'g')} CPU(s)",
        f"job GPU-h          : {_f(s['job_gpu_hours'], '.3f')}  (allocated GPUs x elapsed)",
        f"sum of trial GPU-h : {_f(s['trial_gpu_hours'], '.3f')}",
        f"job CPU-h          : {_f(s['job_cpu_hours'], '.3f')}  (allocated CPUs x elapsed)",
        f"sum of trial CPU-h : {_f(s['trial_cpu_hours'], '.3f')}",
        f"training share     : {share_txt}",
        f"trials             : {n['total']}{planned} (" + ", ".join(f"{k} {n[k]}" for k in STATUSES) + ")",
    ]
    if s.get("note"):
        lines.append(f"note               : {s['note']}")
    lines.append("-" * len(head))
    return "\n".join(lines)


# --------------------------------------------------------------------------- tables

_LOWER_IS_BETTER = {"eval_loss": True, "exact_match": False, "f1": False}


def best_row(rows, metric: str = "eval_loss") -> dict | None:
    """The best row by `metric` among rows where it is finite (any status: an
    early-stopped or crashed trial's last evaluation was measured too).
    eval_loss: lowest wins; exact_match/f1: highest. Ties: higher f1, then the
    earlier row. None if no row has a finite value."""
    if metric not in _LOWER_IS_BETTER:
        raise ValueError(f"metric must be one of {sorted(_LOWER_IS_BETTER)}, not {metric!r}")
    sign = 1 if _LOWER_IS_BETTER[metric] else -1
    best, best_key = None, None
    for row in rows:
        value = row.get(metric)
        if not _finite(value):
            continue
        f1 = row.get("f1") if _finite(row.get("f1")) else -math.inf
        key = (sign * value, -f1)
        if best_key is None or key < best_key:     # strict: the earlier row keeps a full tie
            best, best_key = row, key
    return best


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(rows, highlight_best: bool = True) -> str:
    """The README's result table, one line per row (the best trial's id in bold)."""
    best = best_row(rows) if highlight_best else None
    header = ("| # | trial | status | lr | batch size | weight decay | epochs | eval loss | EM | F1 "
              "| wall (s) | GPU-h | CPU-h |")
    sep = "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    out = [header, sep]
    for i, r in enumerate(rows, start=1):
        trial = _cell(r.get("trial_id") or "-")
        if best is not None and r is best:
            trial = f"**{trial}**"
        cells = [str(i), trial, r.get("status") or "-",
                 _f(r.get("learning_rate"), "g"), _f(r.get("batch_size"), "g"),
                 _f(r.get("weight_decay"), "g"), _f(r.get("epochs"), "g"),
                 _f(r.get("eval_loss"), ".4f"), _f(r.get("exact_match"), ".2f"),
                 _f(r.get("f1"), ".2f"), _f(r.get("wall_s"), ".0f"),
                 _f(r.get("gpu_hours"), ".3f"), _f(r.get("cpu_hours"), ".3f")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- CLI

def default_outputs(log_path) -> tuple[Path, Path]:
    """logs/<method>/<job-name>-<id>.out (or .csv) -> (.csv, .summary.json) next to it."""
    p = Path(log_path)
    return p.with_suffix(".csv"), p.with_suffix(".summary.json")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="parse_logs.py",
        description="Parse a job log (and Ray trial records) into the results CSV, "
                    "print the JOB SUMMARY and the markdown result table.")
    ap.add_argument("log", help="the job's .out file, e.g. logs/manual/hpo-manual-<id>.out")
    ap.add_argument("--records", help="trials.jsonl written by a Ray driver; rows come from it "
                                      "instead of the log's RUN blocks")
    ap.add_argument("--csv", help="output CSV (default: the log path with .csv)")
    ap.add_argument("--summary-json", help="output summary JSON (default: the CSV path with .summary.json)")
    ap.add_argument("--quiet", action="store_true", help="print only warnings and the CSV path")
    args = ap.parse_args(argv)           # usage errors exit 2 (argparse)

    csv_path = Path(args.csv) if args.csv else default_outputs(args.log)[0]
    # the summary goes next to the CSV (with --csv elsewhere, not next to the log)
    json_path = Path(args.summary_json) if args.summary_json else default_outputs(csv_path)[1]
    if csv_path.resolve() == Path(args.log).resolve():
        print(f"ERROR: the CSV path {csv_path} is the log itself; pass --csv", file=sys.stderr)
        return 2

    try:
        parsed = parse_log(args.log)
    except LogError as e:
        # Nothing is written: an existing CSV from an earlier parse stays as it was.
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    warnings = list(parsed.warnings)
    rows = parsed.rows
    if args.records:
        try:
            rows = read_records(args.records, warnings=warnings)
        except OSError as e:
            print(f"ERROR: cannot read records file {args.records}: {e.strerror or e}", file=sys.stderr)
            return 2
        if parsed.rows:
            warnings.append(LogWarning(parsed.path, None, f"the log has {len(parsed.rows)} RUN "
                                       f"block(s); using the rows of {args.records} instead"))
        if not rows:
            warnings.append(LogWarning(args.records, None, "no trial records"))
        ids = {r["job_id"] for r in rows} - {None}
        if parsed.job.get("job_id") and ids and ids != {parsed.job["job_id"]}:
            warnings.append(LogWarning(args.records, None, f"records are from job(s) {sorted(ids)}, "
                                       f"the log is job {parsed.job['job_id']}: right files?"))
    elif not rows:
        warnings.append(LogWarning(parsed.path, None, "no RUN blocks in the log (a Ray method? "
                                   "pass --records <job dir>/trials.jsonl)"))

    summary = job_summary(parsed.job, rows)
    try:
        write_csv(rows, csv_path)
        atomic_write_text(json_path, json.dumps(
            {**summary, "csv": str(csv_path), "log": str(args.log),
             "warnings": [str(w) for w in warnings]}, indent=2) + "\n")
    except OSError as e:
        print(f"ERROR: cannot write {e.filename or csv_path}: {e.strerror or e}", file=sys.stderr)
        return 1

    for w in warnings:
        print(str(w), file=sys.stderr)
    if not args.quiet:
        print(format_summary(summary))
        print()
        print(markdown_table(rows))
        print()
    print(f"CSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
