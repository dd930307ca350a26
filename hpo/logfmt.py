"""The log-line contract between the trials, the launchers and the parser.

Use: nothing to run; `hpo.trial` and the drivers write lines with the functions
below, `hpo.logparse` reads them with the regexes below.

Every line a learner reads in `logs/<method>/<job>-<id>.out` that the parser
(`scripts/parse_logs.py`) also reads is formatted here, so writer and reader
cannot drift apart. Lines are `key=value` pairs (readable, and parsed without
`eval`), except `[result]`, whose payload is one JSON object. A hyperparameter
or metric key is always its CSV column name (`hpo.schema.COLUMNS`): one name
from the log line to the CSV, nothing to translate on the way.

    ===== JOB <id> START : <date> =====                       (experiments/common.sh)
    [job] method=manual job_id=.. job_name=.. tier=.. nodes=.. gpus=.. cpus=..
    ===== RUN <k>/<n> START trial=<id> learning_rate=.. batch_size=.. weight_decay=.. seed=.. epochs=.. gpus=.. cpus=.. : <date> =====
    [eval] trial=<id> epoch=1.00 step=38 eval_loss=1.2345 exact_match=12.00 f1=20.50 learning_rate=.. batch_size=.. weight_decay=.. peak_memory_gib=..
    [result] {"trial_id": "..", "eval_loss": .., ...}         (metrics.json, printed by rank 0)
    ===== RUN <k>/<n> END trial=<id> rc=<rc> wall_s=<s> [stopped=1] : <date> =====
    ===== JOB <id> FINISH : <date> (rc=<rc>, elapsed=<s>s) =====

<date> is `date '+%F %T %Z'` (e.g. `2025-03-14 09:00:03 UTC`); `log_date()` gives
the same text in Python. The bash launchers print the JOB lines with the same
layout (see experiments/common.sh); tests check that both agree with the regexes.
"""
from __future__ import annotations

import json
import re
from datetime import datetime

# torchrun / srun may prefix a rank's output ("[rank0]: ", "0: "); strip it.
RANK_PREFIX = re.compile(r"^(?:\[rank\d+\]:\s*|\d+:\s+)")
KV = re.compile(r"(\w+)=(\S+)")

JOB_START = re.compile(r"^===== JOB (?P<job_id>\S+) START : (?P<date>.+?) =====\s*$")
JOB_FINISH = re.compile(
    r"^===== JOB (?P<job_id>\S+) FINISH : (?P<date>.+?) \(rc=(?P<rc>-?\d+), elapsed=(?P<elapsed>[\d.]+)s\) =====\s*$")
RUN_START = re.compile(r"^===== RUN (?P<k>\d+)/(?P<n>\d+) START (?P<kv>.*?) : (?P<date>.+?) =====\s*$")
RUN_END = re.compile(r"^===== RUN (?P<k>\d+)/(?P<n>\d+) END (?P<kv>.*?) : (?P<date>.+?) =====\s*$")
JOB_INFO = "[job] "
# cluster/ray_cluster.sh: "[ray] cluster up: 2 node(s), ...; boot 4.8 s after job start (...)"
RAY_UP = "[ray] cluster up:"
# the drivers, when --resume continues an earlier job's search: "... RESUMED from job <id> (<dir>): ..."
RESUMED = re.compile(r"RESUMED from job (\S+)")
RAY_BOOT = re.compile(r"boot ([\d.]+) s after job start")
EVAL = "[eval] "
RESULT = "[result] "

# The date inside a marker: `date '+%F %T %Z'`. Only date and time are read back;
# the zone name is ignored (every line of one job log comes from the same node
# clock and zone, so differences between two dates are right).
DATE = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace(" ", "_")


def kv_line(prefix: str, **fields) -> str:
    """`[eval] a=1 b=2.5` — values never contain spaces."""
    return prefix + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


def log_date(when: datetime | None = None) -> str:
    """A marker's date, the same text as bash's `date '+%F %T %Z'` (default: now, local
    time; a datetime without a zone prints without a zone name)."""
    return (when or datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()


def parse_date(text: str | None) -> datetime | None:
    """The first `YYYY-MM-DD HH:MM:SS` in `text` (zone ignored), or None."""
    m = DATE.search(text or "")
    if not m:
        return None
    try:
        return datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S")
    except ValueError:                    # e.g. month 13: not a date after all
        return None


def run_start_line(k: int, n: int, trial: str, fields: dict, date: str) -> str:
    """`===== RUN k/n START trial=<id> learning_rate=.. … : <date> =====`.

    `fields` are printed in the order given; their keys must be CSV column names
    (learning_rate, batch_size, weight_decay, seed, epochs, gpus, cpus), which is
    how the parser reads them.
    """
    kv = " ".join(f"{key}={_fmt(value)}" for key, value in fields.items())
    return f"===== RUN {k}/{n} START trial={_fmt(trial)}{' ' + kv if kv else ''} : {date} ====="


def run_end_line(k: int, n: int, trial: str, rc: int, wall_s: float, date: str, stopped: bool = False) -> str:
    """`===== RUN k/n END trial=<id> rc=<rc> wall_s=<s> : <date> =====` (wall_s to 0.1 s);
    `stopped=1` after wall_s: the job stopped the run (scancel, walltime) — incomplete, resumable."""
    return (f"===== RUN {k}/{n} END trial={_fmt(trial)} rc={int(rc)} wall_s={wall_s:.1f}"
            f"{' stopped=1' if stopped else ''} : {date} =====")


def eval_line(trial_id: str, epoch: float, step: int, metrics: dict, hparams: dict) -> str:
    """One readable summary line per evaluation (printed by rank 0 only); the trial's peak memory
    so far at the end when `metrics` has it (`peak_memory_gib`)."""
    memory = ({"peak_memory_gib": f"{metrics['peak_memory_gib']:.2f}"}
              if metrics.get("peak_memory_gib") is not None else {})
    return kv_line(
        EVAL, trial=trial_id, epoch=f"{epoch:.2f}", step=step,
        eval_loss=f"{metrics['eval_loss']:.4f}",
        exact_match=f"{metrics['exact_match']:.2f}", f1=f"{metrics['f1']:.2f}",
        learning_rate=hparams["learning_rate"], batch_size=hparams["batch_size"],
        weight_decay=hparams["weight_decay"], **memory)


def result_line(record: dict) -> str:
    """The trial's final record, the same JSON object as its metrics.json."""
    return RESULT + json.dumps(record, sort_keys=True)


def strip_rank(line: str) -> str:
    return RANK_PREFIX.sub("", line.rstrip("\n"), count=1)


def parse_kv(text: str) -> dict[str, str]:
    return dict(KV.findall(text))
