"""The log-line contract between the trials, the launchers and the parser.

Run: nothing to run; imported by `hpo.trial`, `hpo.results` and the drivers.

Every line a learner reads in `logs/<method>/<job>-<id>.out` that the parser
(`scripts/parse_logs.py`) also reads is formatted here, so writer and reader
cannot drift apart. Lines are `key=value` pairs (readable, and parsed without
`eval`), except `[result]`, whose payload is one JSON object.

    ===== JOB <id> START : <date> =====                       (experiments/common.sh)
    [job] method=manual job_id=.. job_name=.. tier=.. nodes=.. gpus=.. cpus=..
    ===== RUN <k>/<n> START trial=<id> lr=.. bs=.. wd=.. seed=.. epochs=.. gpus=.. cpus=.. : <date> =====
    [eval] trial=<id> epoch=1.00 step=38 eval_loss=1.2345 exact_match=12.00 f1=20.50 lr=.. bs=.. wd=..
    [result] {"trial_id": "..", "eval_loss": .., ...}         (metrics.json, printed by rank 0)
    ===== RUN <k>/<n> END trial=<id> rc=<rc> wall_s=<s> : <date> =====
    ===== JOB <id> FINISH : <date> (rc=<rc>, elapsed=<s>s) =====

The bash launchers print the `=====` lines with the same layout (see
experiments/common.sh); tests check that both agree with the regexes below.
"""
from __future__ import annotations

import json
import re

# torchrun / srun may prefix a rank's output ("[rank0]: ", "0: "); strip it.
RANK_PREFIX = re.compile(r"^(?:\[rank\d+\]:\s*|\d+:\s+)")
KV = re.compile(r"(\w+)=(\S+)")

JOB_START = re.compile(r"^===== JOB (?P<job_id>\S+) START : (?P<date>.+?) =====\s*$")
JOB_FINISH = re.compile(
    r"^===== JOB (?P<job_id>\S+) FINISH : (?P<date>.+?) \(rc=(?P<rc>-?\d+), elapsed=(?P<elapsed>[\d.]+)s\) =====\s*$")
RUN_START = re.compile(r"^===== RUN (?P<k>\d+)/(?P<n>\d+) START (?P<kv>.*?) : (?P<date>.+?) =====\s*$")
RUN_END = re.compile(r"^===== RUN (?P<k>\d+)/(?P<n>\d+) END (?P<kv>.*?) : (?P<date>.+?) =====\s*$")
JOB_INFO = "[job] "
EVAL = "[eval] "
RESULT = "[result] "


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace(" ", "_")


def kv_line(prefix: str, **fields) -> str:
    """`[eval] a=1 b=2.5` — values never contain spaces."""
    return prefix + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


def eval_line(trial_id: str, epoch: float, step: int, metrics: dict, hparams: dict) -> str:
    """One readable summary line per evaluation (printed by rank 0 only)."""
    return kv_line(
        EVAL, trial=trial_id, epoch=f"{epoch:.2f}", step=step,
        eval_loss=f"{metrics['eval_loss']:.4f}",
        exact_match=f"{metrics['exact_match']:.2f}", f1=f"{metrics['f1']:.2f}",
        lr=hparams["learning_rate"], bs=hparams["batch_size"], wd=hparams["weight_decay"])


def result_line(record: dict) -> str:
    """The trial's final record, the same JSON object as its metrics.json."""
    return RESULT + json.dumps(record, sort_keys=True)


def strip_rank(line: str) -> str:
    return RANK_PREFIX.sub("", line.rstrip("\n"), count=1)


def parse_kv(text: str) -> dict[str, str]:
    return dict(KV.findall(text))
