"""Read a job's log (the .out file) into trial rows and job facts.

Use:
    from hpo.logparse import parse_log
    parsed = parse_log("logs/manual/hpo-manual-4815162.out")
    parsed.job        # job_id, method, allocation (nodes/gpus/cpus), start, finish, rc, elapsed_s, ...
    parsed.rows       # one row per `===== RUN k/n START/END =====` block (hpo.schema's make_row)
    parsed.warnings   # lines that did not parse, with line numbers (LogWarning)
The command line around it is scripts/parse_logs.py (CSV, JOB SUMMARY, table).

This is the reader of the lines that hpo.logfmt writes (see its docstring for the
layout); the keys of RUN START and [eval] lines are the CSV column names.

Where the rows come from:
  * manual grid: the `===== RUN k/n START/END =====` blocks of the job's .out file,
    with the trial's `[eval]` lines and its `[result]` JSON in between;
  * Ray methods (ASHA, PBT, BayesOpt): the driver writes trials.jsonl itself
    (hpo.schema.write_records); the log still gives the job facts (JOB START/FINISH,
    the `[job]` line with the allocation), and its `[eval]` lines outside RUN
    blocks are not read.

Log text is never `eval`-ed: `json.loads` for `[result]`, `key=value` for the rest.
A line that does not parse is reported as a warning (with its line number) and
skipped; the parser still returns what it could read. Nothing runs at import time.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from hpo import logfmt
from hpo.logfmt import parse_date
from hpo.schema import LogWarning, make_row, to_number

__all__ = ["LogError", "LogWarning", "ParsedLog", "parse_log"]

# RUN START keys read into the row: the CSV column names themselves (hpo.logfmt.run_start_line).
_START_COLUMNS = ("learning_rate", "batch_size", "weight_decay", "seed", "epochs_planned", "gpus", "cpus")
_HPARAMS = ("learning_rate", "batch_size", "weight_decay", "seed", "epochs_planned")
# What a trial's [result] line (its metrics.json) adds to the row.
_RESULT_EXTRA = ("epochs", "train_runtime_s", "tokens_per_s", "global_batch_size", "setup_s", "train_s",
                 "eval_s", "checkpoint_s")
_METRICS = ("eval_loss", "exact_match", "f1")
_RESULT_NUMERIC = _HPARAMS + _METRICS + _RESULT_EXTRA
_EVAL_REQUIRED = ("trial", "epoch", "eval_loss", "exact_match", "f1")

# Lines without a marker still move the clock: DeepSpeed/logging lines start with
# `[YYYY-MM-DD HH:MM:SS,mmm]`. A DST switch mid-job is off by 1 h (zone ignored).
_LINE_TS = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
# A marker can end up glued behind a progress bar: tqdm writes "\r 50%|…| 19/38"
# to stderr without a newline and the next stdout line lands behind it in the
# merged .out file. These needles find such markers mid-line.
_NEEDLES = ("===== JOB ", "===== RUN ", logfmt.JOB_INFO + "method=",
            logfmt.EVAL + "trial=", logfmt.RESULT + "{")


class LogError(Exception):
    """The log cannot be parsed at all (missing, unreadable or empty)."""


@dataclass
class ParsedLog:
    """What `parse_log` read: job facts, one row per RUN block, warnings. (The learning
    curves' [eval] history of every kind of job log is hpo.plots.read_job_log's.)"""
    path: str
    job: dict
    rows: list[dict] = field(default_factory=list)
    warnings: list[LogWarning] = field(default_factory=list)


def parse_log(path, method: str | None = None) -> ParsedLog:
    """Parse one job log. Raises LogError if the file is missing or empty.

    `method` is used only if the log has no `[job] method=…` line.
    """
    lines = _read_lines(path)
    return _Parser(path, method).parse(lines)


# --------------------------------------------------------------------------- the parser

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
        self.kv, self.start_time = kv, parse_date(date)
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
    """Reads the lines in order and keeps the state: the job facts and the open RUN block."""

    def __init__(self, path, method=None):
        self.path = str(path)
        self.method_hint = method
        self.job = {k: None for k in (
            "job_id", "method", "job_name", "tier", "profile", "nodes", "gpus", "cpus",
            "host", "log", "start", "finish", "rc", "elapsed_s", "last_time", "runs_planned", "ray_boot_s",
            "resumed_from")}
        self.rows: list[dict] = []
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
        t = parse_date(text)
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
        return ParsedLog(self.path, self.job, self.rows, self.warnings)

    def line(self, lineno, line):
        if line.startswith("===== JOB "):
            self.job_marker(lineno, line)
        elif line.startswith("===== RUN "):
            self.run_marker(lineno, line)
        elif line.startswith(("[tune] ", "[job] ")) and logfmt.RESUMED.search(line):
            if self.job["resumed_from"] is None:     # a resumed search: its rows include the earlier job's
                self.job["resumed_from"] = logfmt.RESUMED.search(line).group(1)
        elif line.startswith(logfmt.JOB_INFO):
            self.job_info(lineno, line)
        elif line.startswith(logfmt.EVAL):
            if self.run is not None:      # outside RUN blocks (Ray logs): not ours to read
                self.eval_line(lineno, line)
        elif line.startswith(logfmt.RESULT):
            if self.run is not None:
                self.result_line(lineno, line)
        elif line.startswith(logfmt.RAY_UP):
            m = logfmt.RAY_BOOT.search(line)       # how long the allocation waited for Ray
            if m and self.job["ray_boot_s"] is None:
                self.job["ray_boot_s"] = float(m.group(1))
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
                self.job[key] = to_number(kv.get(key), key)
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
        for col in _START_COLUMNS:
            try:
                run.params[col] = to_number(kv.get(col), col)
            except ValueError as e:       # keep the trial, lose only the bad value
                self.warn(lineno, f"RUN START: {e} (left empty)")
                run.params[col] = None
        # A misspelt key would leave its column empty without a word: say so.
        unknown = [k for k in kv if k != "trial" and k not in _START_COLUMNS]
        if unknown:
            self.warn(lineno, f"RUN START: unknown key(s) {', '.join(unknown)}: ignored "
                              f"(the keys are the CSV column names: {', '.join(_START_COLUMNS)})")
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
                wall = to_number(kv["wall_s"], "wall_s")
            except ValueError as e:
                self.warn(lineno, f"RUN END: {e}; wall time taken from the timestamps")
        if wall is None:
            end_time = parse_date(m.group("date"))
            if run.start_time and end_time:
                wall = (end_time - run.start_time).total_seconds()
        metrics = self.metrics(run)
        if kv.get("stopped") == "1":      # stopped by the job (several runs at a time): resumable
            status = "incomplete"
        elif rc == 0 and metrics.get("eval_loss") is not None:
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
            metrics = {k: to_number(kv[k], k) for k in _METRICS}
            epoch = to_number(kv["epoch"], "epoch")
            to_number(kv.get("step"), "step")              # a bad step= is a malformed line too
        except ValueError as e:
            raise ValueError(f"malformed [eval] line: {e}: skipped") from None
        key = (kv["epoch"], kv.get("step"))
        if key in run.evals:
            if run.evals[key][0] != line:
                self.warn(lineno, f"a different [eval] line for trial {run.trial} epoch {kv['epoch']} "
                                  f"was already read; keeping the first")
            return                        # printed by several ranks: counts once
        run.evals[key] = (line, {**metrics, "epochs": epoch})   # epochs reached so far

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
            clean = {k: to_number(record.get(k), k) for k in _RESULT_NUMERIC}
        except ValueError as e:
            raise ValueError(f"[result] line: {e}: skipped") from None
        if run.result is not None:
            if payload != run.result_text:
                self.warn(lineno, f"a different [result] line for trial {run.trial} was already "
                                  f"read; keeping the first")
            return                        # printed by several ranks: counts once
        clean["data_fingerprint"] = record.get("data_fingerprint")
        # epochs: the trial records the epochs it reached (e.g. 1.9737), RUN START the epochs
        # it was given (epochs_planned).
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
        for col in _METRICS + _RESULT_EXTRA + ("data_fingerprint",):
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
        job["last_time"] = self.last_time_text and logfmt.DATE.search(self.last_time_text).group(0)
        if self.n_runs and job["runs_planned"] and self.n_runs < job["runs_planned"]:
            self.warn(None, f"{self.n_runs} of {job['runs_planned']} planned runs appear in the log")


def _method_from_path(path) -> str:
    """logs/<method>/<job>.out -> <method>; the fallback when the [job] line is missing."""
    parent = Path(path).resolve().parent.name
    return parent if parent in ("manual", "asha", "pbt", "bayesopt") else "unknown"
