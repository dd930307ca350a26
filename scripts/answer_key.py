#!/usr/bin/env python3
"""The instructors' answer key and the README's reference tables, with every number filled from the
reference results — never typed by hand, so they stay true when the results are regenerated.

Run (from the repository root, after `make reference` or with the committed reference results):
    python scripts/answer_key.py              # writes docs/answer-key.md and the README's reference blocks
    python scripts/answer_key.py --check      # exit 1 if either is out of date (the tests run this)
    python scripts/answer_key.py --facts      # every number the key may quote, `name = value`

How it works:
  * `facts(reference_dir)` reads the reference run (logs/reference/laptop/<method>/*.csv, their
    .summary.json and PBT's lineage CSV) and computes named facts — `asha.best.eval_loss`,
    `manual.hours_used`, `asha.stopped`, `pbt.exploits` … (`--facts` lists them all);
  * docs/answer-key.src.md is the key's text with placeholders `{{name}}` or `{{name:.3f}}`
    (a Python format spec); this script renders it into docs/answer-key.md;
  * the README's blocks between `<!-- reference:NAME -->` and `<!-- /reference:NAME -->` are
    replaced by tables built from the same facts.
An unknown placeholder, a missing reference file or a question without an answer is an error
(exit 2) naming it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path

try:
    import hpo  # noqa: F401
except ModuleNotFoundError:
    print("the hpo package is not importable: run `make venv` or `pip install -e .` in the repository root",
          file=sys.stderr)
    sys.exit(2)
from hpo.report import METHOD_ORDER, best_row, hours_to_near_best
from hpo.schema import read_csv

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "logs" / "reference" / "laptop"
KEY_SRC = REPO / "docs" / "answer-key.src.md"
KEY_OUT = REPO / "docs" / "answer-key.md"
README = REPO / "README.md"
LESSONS = ("docs/00-concepts.md", "docs/01-manual.md", "docs/02-asha.md", "docs/03-pbt.md",
           "docs/04-bayesopt.md", "docs/05-compare.md", "docs/06-break-it.md")
NAMES = {"manual": "manual grid", "asha": "ASHA", "pbt": "PBT", "bayesopt": "Bayesian"}

PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*(?::([^}]*))?\}\}")
# A numbered question in a lesson: a line starting with `**Q2.3**`; its answer in the key: `### Q2.3`.
QUESTION = re.compile(r"^\*\*Q(\d+\.\d+)\*\*", re.M)
ANSWER = re.compile(r"^### Q(\d+\.\d+)\b", re.M)


class KeyError_(Exception):
    """Something the key cannot be built from (exit 2)."""


# ----------------------------------------------------------------------------- facts
def _job_files(reference: Path, method: str) -> tuple[Path, list[dict], dict]:
    csvs = sorted((reference / method).glob(f"hpo-{method}-*.csv"))
    csvs = [c for c in csvs if not c.name.endswith((".reparsed.csv", ".pbt_lineage.csv"))]
    if len(csvs) != 1:
        raise KeyError_(f"{reference / method}: expected one results CSV, found {len(csvs)} "
                        f"(regenerate with `make reference`)")
    summary_path = csvs[0].with_name(csvs[0].stem + ".summary.json")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return csvs[0], read_csv(csvs[0]), summary


def _lineage(csv_path: Path) -> list[dict]:
    import csv
    path = csv_path.with_name(csv_path.stem + ".pbt_lineage.csv")
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def facts(reference: Path = REFERENCE) -> dict:
    """Every number the key and the README's reference tables may quote, by name."""
    reference = Path(reference)
    out: dict = {}
    rows_of: dict[str, list[dict]] = {}
    for method in METHOD_ORDER:
        path, rows, summary = _job_files(reference, method)
        rows_of[method] = rows
        gpu = any((r.get("gpus") or 0) > 0 for r in rows)
        hours_col = "gpu_hours" if gpu else "cpu_hours"
        best = best_row(rows)
        if best is None:
            raise KeyError_(f"{path}: no trial with a finite eval loss")
        p = f"{method}."
        out.update({
            p + "name": NAMES[method],
            p + "job_id": best["job_id"],
            p + "trials": len(rows),
            p + "completed": sum(r["status"] == "completed" for r in rows),
            p + "stopped": sum(r["status"] == "stopped_early" for r in rows),
            p + "epochs_run": sum(r["epochs"] or 0 for r in rows),
            p + "epochs_planned": sum(r["epochs_planned"] or 0 for r in rows),
            p + "hours_used": sum(r[hours_col] or 0 for r in rows),
            p + "hours_alloc": summary.get("job_gpu_hours" if gpu else "job_cpu_hours") or math.nan,
            p + "elapsed_min": (summary.get("elapsed_s") or math.nan) / 60,
            p + "train_share_pct": 100 * ((summary.get("breakdown") or {}).get("train_share") or math.nan),
            p + "hours_to_1pct": hours_to_near_best(rows, "GPU" if gpu else "CPU") or math.nan,
            p + "mean_eval_loss": statistics.fmean(r["eval_loss"] for r in rows
                                                   if r["eval_loss"] is not None and math.isfinite(r["eval_loss"])),
        })
        bd = summary.get("breakdown") or {}
        out[p + "setup_share_pct"] = 100 * bd["setup"] / bd["hours"] if bd.get("hours") else math.nan
        if method == "manual":
            for r in rows:                  # run05_lr0.001_bs8_wd0 -> manual.run05.eval_loss
                run = r["trial_id"].split("_")[0]
                for col in ("learning_rate", "batch_size", "weight_decay", "eval_loss", "exact_match", "f1"):
                    out[f"manual.{run}.{col}"] = r[col]
        for col, short in (("trial_id", "trial"), ("status", "status"), ("learning_rate", "lr"),
                           ("batch_size", "bs"), ("weight_decay", "wd"), ("epochs", "epochs"),
                           ("eval_loss", "eval_loss"), ("exact_match", "em"), ("f1", "f1")):
            out[p + "best." + short] = best[col]
        out[p + "best.f1_rank"] = 1 + sorted((-(r["f1"] or 0) for r in rows)).index(-(best["f1"] or 0))
        out[p + "top_f1"] = max(r["f1"] or 0 for r in rows)
        if method == "manual":
            out["basis"] = "GPU" if gpu else "CPU"
            out["unit"] = "GPU-h" if gpu else "CPU-h"
            out["fingerprint"] = best.get("data_fingerprint") or "-"
    out["demo_min"] = sum(out[f"{m}.elapsed_min"] for m in METHOD_ORDER)
    grid = out["manual.hours_used"]
    for m in METHOD_ORDER:
        out[f"{m}.cost_vs_grid_pct"] = 100 * out[f"{m}.hours_used"] / grid
        out[f"{m}.beats_grid"] = "yes" if out[f"{m}.best.eval_loss"] < out["manual.best.eval_loss"] else "no"
    ranking = sorted(METHOD_ORDER, key=lambda m: out[f"{m}.best.eval_loss"])
    out["ranking"] = " < ".join(NAMES[m] for m in ranking)
    out["winner"] = NAMES[ranking[0]]
    out["spread_best_eval_loss"] = (out[f"{ranking[-1]}.best.eval_loss"] - out[f"{ranking[0]}.best.eval_loss"])

    # manual grid: the weight-decay pairs (same lr, batch size) and the learning rates
    manual = rows_of["manual"]
    pairs = {}
    for r in manual:
        pairs.setdefault((r["learning_rate"], r["batch_size"]), {})[r["weight_decay"]] = r["eval_loss"]
    deltas = sorted((abs(v[max(v)] - v[min(v)]), key) for key, v in pairs.items() if len(v) == 2)
    if not deltas:
        raise KeyError_("the manual grid has no pair of runs that differ only in weight decay")
    out["manual.wd_delta_max"], (out["manual.wd_delta_max_lr"], out["manual.wd_delta_max_bs"]) = deltas[-1]
    out["manual.wd_delta_min"], (out["manual.wd_delta_min_lr"], out["manual.wd_delta_min_bs"]) = deltas[0]
    lrs = sorted({r["learning_rate"] for r in manual})
    out["manual.lr_low"], out["manual.lr_high"] = lrs[0], lrs[-1]
    low = [r for r in manual if r["learning_rate"] == lrs[0]]
    out["manual.lr_low_best_eval_loss"] = min(r["eval_loss"] for r in low)
    out["manual.lr_low_best_f1"] = max(r["f1"] or 0 for r in low)
    out["manual.runs_worse_than_asha_best"] = sum(r["eval_loss"] > out["asha.best.eval_loss"] for r in manual)

    # ASHA: where the stopped trials stopped, and the epochs it did not spend
    asha = rows_of["asha"]
    out["asha.stopped_after_1"] = sum(r["status"] == "stopped_early" and r["epochs"] == 1 for r in asha)
    out["asha.stopped_after_2"] = sum(r["status"] == "stopped_early" and r["epochs"] == 2 for r in asha)
    out["asha.epochs_saved_pct"] = 100 * (1 - out["asha.epochs_run"] / out["asha.epochs_planned"])
    out["asha.stopped_best_f1"] = max([r["f1"] or 0 for r in asha if r["status"] == "stopped_early"] or [math.nan])

    # PBT: exploits (the lineage), and the member that ended best
    lineage = _lineage(_job_files(reference, "pbt")[0])
    out["pbt.exploits"] = len(lineage)
    out["pbt.exploited_members"] = len({e["trial_id"] for e in lineage})
    best_id = out["pbt.best.trial"]
    out["pbt.best.exploited"] = "yes" if any(e["trial_id"] == best_id for e in lineage) else "no"
    if lineage:
        last = lineage[-1]
        out["pbt.last_exploit.member"], out["pbt.last_exploit.donor"] = last["trial_id"], last["donor_id"]
        out["pbt.last_exploit.epoch"] = float(last["epoch"])
        out["pbt.last_exploit.lr_before"] = float(last["old_learning_rate"])
        out["pbt.last_exploit.lr_after"] = float(last["new_learning_rate"])
        out["pbt.last_exploit.loss_before"] = float(last["eval_loss_before"])
        out["pbt.last_exploit.loss_after"] = float(last["eval_loss_after"])
        lrs = [float(e["new_learning_rate"]) for e in lineage]
        out["pbt.lr_min_explored"], out["pbt.lr_max_explored"] = min(lrs), max(lrs)

    # BayesOpt: the suggestions after the random start vs the random start itself
    bo = rows_of["bayesopt"]
    half = len(bo) // 2
    out["bayesopt.first_half_mean_eval_loss"] = statistics.fmean(r["eval_loss"] for r in bo[:half])
    out["bayesopt.second_half_mean_eval_loss"] = statistics.fmean(r["eval_loss"] for r in bo[half:])
    out["bayesopt.best_position"] = 1 + bo.index(best_row(bo))
    out["bayesopt.worst.lr"] = max(bo, key=lambda r: r["eval_loss"])["learning_rate"]
    out["bayesopt.worst.bs"] = max(bo, key=lambda r: r["eval_loss"])["batch_size"]
    out["bayesopt.worst.eval_loss"] = max(r["eval_loss"] for r in bo)
    out["bayesopt.random_steps"] = _banner_value(reference, "bayesopt", r"searcher \w+, (\d+) random")

    # the noise floor: the grid's best setting with training seeds 0 (in the grid), 1 and 2
    noise_csv = sorted((reference / "noise").glob("*.csv"))
    if len(noise_csv) != 1:
        raise KeyError_(f"{reference / 'noise'}: expected the noise-floor CSV (regenerate with `make reference`)")
    seeds = [out["manual.best.eval_loss"]] + [r["eval_loss"] for r in read_csv(noise_csv[0])]
    out["noise.seeds"] = len(seeds)
    out["noise.min"], out["noise.max"] = min(seeds), max(seeds)
    out["noise.spread"] = max(seeds) - min(seeds)
    out["noise.f1_spread"] = (max([out["manual.best.f1"]] + [r["f1"] for r in read_csv(noise_csv[0])])
                              - min([out["manual.best.f1"]] + [r["f1"] for r in read_csv(noise_csv[0])]))
    out["spread_vs_noise"] = "larger" if out["spread_best_eval_loss"] > out["noise.spread"] else "not larger"
    out["manual.wd_delta_vs_noise"] = "larger" if out["manual.wd_delta_max"] > out["noise.spread"] else "not larger"
    for m in ("asha", "pbt", "bayesopt"):
        gap = out["manual.best.eval_loss"] - out[f"{m}.best.eval_loss"]
        out[f"{m}.gap_to_grid"] = gap
        out[f"{m}.gap_vs_noise"] = "larger" if abs(gap) > out["noise.spread"] else "smaller"
        out[f"{m}.verdict"] = ("matched the grid within the noise floor" if abs(gap) <= out["noise.spread"]
                               else "beat the grid by more than the noise floor" if gap > 0
                               else "lost to the grid by more than the noise floor")
    out["within1pct_summary"] = "; ".join(
        f"{NAMES[m]} {out[m + '.hours_to_1pct']:.3f} {out['unit']}" for m in METHOD_ORDER)
    out["within1pct_cheaper"] = ", ".join(
        NAMES[m] for m in METHOD_ORDER if m != "manual" and out[m + ".hours_to_1pct"] < out["manual.hours_used"]) or "none"
    out["bayesopt.halves_verdict"] = ("better than" if out["bayesopt.second_half_mean_eval_loss"]
                                      < out["bayesopt.first_half_mean_eval_loss"] else "worse than")

    # Break it: the symptoms measured by exercises/break_it.py
    results = REPO / "exercises" / "results.json"
    if results.is_file():
        for run in json.loads(results.read_text())["runs"]:
            for k in ("eval_loss", "exact_match", "f1", "eval_tokens", "weight_decay"):
                out[f"breakit.{run['run']}.{k}"] = run[k]
            groups = run.get("optimizer_param_groups") or []
            out[f"breakit.{run['run']}.optimizer_wd"] = max((g["weight_decay"] for g in groups), default=math.nan)
    return out


def _log(reference: Path, method: str) -> list[str]:
    logs = sorted((reference / method).glob(f"hpo-{method}-*.out"))
    if len(logs) != 1:
        raise KeyError_(f"{reference / method}: expected one job log, found {len(logs)}")
    return logs[0].read_text(errors="replace").splitlines()


def _banner_value(reference: Path, method: str, pattern: str):
    for line in _log(reference, method):
        m = re.search(pattern, line)
        if m:
            return int(m.group(1))
    raise KeyError_(f"{method} log: no line matches {pattern!r}")


# ----------------------------------------------------------------------------- rendering
def render(text: str, f: dict, where: str) -> str:
    def one(m):
        name, spec = m.group(1), m.group(2)
        if name not in f:
            raise KeyError_(f"{where}: unknown placeholder {{{{{name}}}}} (python scripts/answer_key.py --facts lists them)")
        value = f[name]
        try:
            return format(value, spec) if spec else (f"{value:.4g}" if isinstance(value, float) else str(value))
        except (ValueError, TypeError) as e:
            raise KeyError_(f"{where}: {{{{{name}:{spec}}}}}: {e}") from None
    return PLACEHOLDER.sub(one, text)


def _g(x, spec=".3g"):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def readme_blocks(f: dict) -> dict[str, str]:
    """The README's reference tables: what a learner's own run is checked against."""
    u = f["unit"]
    best = ["| method | trial | lr | batch size | weight decay | epochs | eval loss | EM | F1 | "
            f"method {u} (trials) | your run: eval loss | your run: F1 | your run: {u} |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    job = [f"| method | trials (stopped early) | elapsed (min) | job {u} (allocated) | Σ trial {u} (used) "
           f"| share in training steps | {u} to within 1 % of its best | your run: elapsed | your run: job {u} |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for m in METHOD_ORDER:
        p = f"{m}."
        best.append(f"| {f[p + 'name']} | `{f[p + 'best.trial']}` | {_g(f[p + 'best.lr'])} | {f[p + 'best.bs']} "
                    f"| {_g(f[p + 'best.wd'], '.2g')} | {f[p + 'best.epochs']} | {_g(f[p + 'best.eval_loss'], '.3f')} "
                    f"| {_g(f[p + 'best.em'], '.0f')} | {_g(f[p + 'best.f1'], '.1f')} | {_g(f[p + 'hours_used'], '.3f')} | | | |")
        job.append(f"| {f[p + 'name']} | {f[p + 'trials']} ({f[p + 'stopped']}) | {_g(f[p + 'elapsed_min'], '.1f')} "
                   f"| {_g(f[p + 'hours_alloc'], '.3f')} | {_g(f[p + 'hours_used'], '.3f')} "
                   f"| {_g(f[p + 'train_share_pct'], '.0f')} % | {_g(f[p + 'hours_to_1pct'], '.3f')} | | |")
    note = (f"Reference: the committed laptop-tier run (`logs/reference/laptop/`, data fingerprint "
            f"`{f['fingerprint']}`; regenerate with `make reference`). Fill the empty columns from your own run.")
    return {"best": note + "\n\n" + "\n".join(best), "jobs": "\n".join(job)}


# The log lines each lesson quotes from the reference run ("Watch"): (regex, how many), in log order.
EXCERPTS = {
    "manual": [(r"^\[job\] grid \(", 1), (r"^===== RUN 1/\d+ START", 1), (r"^\[trial\] \S+: model=", 1),
               (r"^\[trial\] optimizer", 1), (r"^\[eval\] trial=\S+ ", 4), (r"^===== RUN 1/\d+ END", 1),
               (r"^\[job\] grid done", 1), (r"^\[job\] BEST", 1)],
    "asha": [(r"^\[tune\] asha: ", 1), (r"\[eval\] trial=", 2), (r"^\[tune\] \S+ stopped early", 99),
             (r"^\[tune\] BEST", 1)],
    "pbt": [(r"^\[tune\] pbt: ", 1), (r"\[tune\] exploit: ", 99), (r"^\[tune\] PBT lineage", 1),
            (r"^\[tune\]   epoch ", 99), (r"^\[tune\] BEST", 1)],
    "bayesopt": [(r"^\[tune\] bayesopt: ", 1), (r"\[eval\] trial=\S+ epoch=4", 3), (r"^\[tune\] BEST", 1)],
}


def excerpt(reference: Path, method: str, width: int = 240) -> str:
    """The lines of the reference log a learner should find in their own, then the JOB SUMMARY."""
    lines = _log(reference, method)
    wanted: set[int] = set()
    for pattern, n in EXCERPTS[method]:
        hits = [i for i, line in enumerate(lines) if re.search(pattern, line)][:n]
        if not hits:
            raise KeyError_(f"{method} log: no line matches {pattern!r} (did the log format change?)")
        wanted.update(hits)
    start = next((i for i, line in enumerate(lines) if line.startswith("----- JOB SUMMARY")), None)
    if start is None:
        raise KeyError_(f"{method} log: no JOB SUMMARY block")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("-----") or i == len(lines) - 1)
    wanted.update(range(start, end + 1))
    out, last = [], None
    for i in sorted(wanted):
        if last is not None and i != last + 1:
            out.append("…")
        line = lines[i]
        out.append(line if len(line) <= width else line[:width - 1] + "…")
        last = i
    return "```text\n" + "\n".join(out) + "\n```"


def compare_block(reference: Path) -> str:
    md = reference / "compare" / "best_of_each.md"
    if not md.is_file():
        raise KeyError_(f"missing {md} (regenerate with `make reference`)")
    body = md.read_text().split("\n", 1)[1].strip()          # without its "# ..." heading
    pngs = sorted((reference / "compare").glob("*.png"))
    rel = Path(os.path.relpath(reference / "compare", REPO / "docs"))
    return body + "\n\n" + "\n".join(f"![{p.stem}]({rel / p.name})" for p in pngs)


def plots_block(reference: Path, method: str) -> str:
    """The reference run's plots of one method, as images in a lesson (docs/)."""
    pngs = sorted((reference / method).glob("*.png"))
    if not pngs:
        raise KeyError_(f"{reference / method}: no plots (regenerate with `make reference`)")
    rel = Path(os.path.relpath(reference / method, REPO / "docs"))
    return "\n".join(f"![{p.name}]({rel / p.name})" for p in pngs)


def doc_blocks(reference: Path) -> dict[str, str]:
    blocks = {f"log-{m}": excerpt(reference, m) for m in METHOD_ORDER}
    blocks.update({f"plots-{m}": plots_block(reference, m) for m in METHOD_ORDER})
    blocks["compare"] = compare_block(reference)
    return blocks


# The workshop's index: lesson, minutes in class, and the job it runs (None: no job).
INDEX = [("docs/00-concepts.md", "0 · Concepts", 20, None),
         ("experiments/check/run.slurm", "Setup check (instructor: before the class)", 10, "check"),
         ("docs/01-manual.md", "1 · Manual grid", 40, "manual"),
         ("docs/02-asha.md", "2 · ASHA", 40, "asha"),
         ("docs/03-pbt.md", "3 · PBT", 40, "pbt"),
         ("docs/04-bayesopt.md", "4 · Bayesian optimisation", 40, "bayesopt"),
         ("docs/05-compare.md", "5 · Selecting the best run, comparing methods", 30, None),
         ("docs/06-break-it.md", "6 · Break it (3 patches)", 45, None),
         ("README.md#walltime-scancel-crashes-and-lost-nodes", "Resume after walltime", 20, "asha")]


def index_block(f: dict) -> str:
    """The README's index: minutes, and per job its cluster allocation (the #SBATCH requests:
    nodes x GPUs x time limit, an upper bound — scripts/budget.py) and the laptop reference run."""
    budget = _load_script("budget")
    lines = ["| lesson | minutes | cluster: job (nodes × GPUs, time limit) | cluster: allocated GPU-h, at most "
             f"| laptop: wall time | laptop: {f['unit']} used |",
             "|---|--:|---|--:|--:|--:|"]
    for target, title, minutes, job in INDEX:
        cluster, gpuh, wall, used = "—", "—", "—", "—"
        if job is not None:
            j = budget.read_job(REPO / "experiments" / job / "run.slurm")
            cluster = f"`{job}/run.slurm` ({j.nodes} × {j.gpus_per_node:g}, {j.time_text})"
            gpuh = f"{j.gpu_hours:.3g}"
            if job in METHOD_ORDER:
                wall, used = f"{f[job + '.elapsed_min']:.1f} min", f"{f[job + '.hours_used']:.3f}"
        if title == "Resume after walltime":
            wall, used = "≈ 5 min", "—"
        lines.append(f"| [{title}]({target}) | {minutes} | {cluster} | {gpuh} | {wall} | {used} |")
    return "\n".join(lines)


def _load_script(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod              # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def laptop_cells(f: dict) -> dict[str, str]:
    """Inline blocks of the lessons' launch tables: the laptop tier's wall time and cost."""
    cells = {}
    for m in METHOD_ORDER:
        share = "" if m == "manual" else f" ({f[m + '.cost_vs_grid_pct']:.0f} % of the grid's)"
        cells[f"laptop-{m}"] = (f"{f[m + '.elapsed_min']:.1f} min in the reference run "
                                f"| {f[m + '.hours_used']:.3f} {f['unit']}{share}")
    return cells


# A block: on its own lines (a table, a log excerpt) or inline (a table cell).
BLOCK = re.compile(r"(<!-- reference:([\w-]+) -->\n?).*?(\n?<!-- /reference:\2 -->)", re.S)


def replace_blocks(text: str, blocks: dict[str, str], where: str) -> str:
    """Fill every `<!-- reference:NAME -->` … `<!-- /reference:NAME -->` block of text."""
    def one(m):
        if m.group(2) not in blocks:
            raise KeyError_(f"{where}: unknown block <!-- reference:{m.group(2)} -->")
        body = blocks[m.group(2)]
        if m.group(1).endswith("\n") and not m.group(3).startswith("\n"):
            body += "\n"                # a block on its own lines keeps its closing marker on its own line
        return m.group(1) + body + m.group(3)
    return BLOCK.sub(one, text)


def questions(root: Path = REPO) -> list[str]:
    """Every numbered question of the lessons, in order (`**Q2.3**` at the start of a line)."""
    ids = []
    for rel in LESSONS:
        path = root / rel
        if path.is_file():
            ids += QUESTION.findall(path.read_text())
    return ids


def unanswered(key_text: str, root: Path = REPO) -> list[str]:
    """Questions of the lessons without a `### Q<id>` answer (with text under it) in the key."""
    answers = {}
    parts = ANSWER.split(key_text)
    for qid, body in zip(parts[1::2], parts[2::2]):
        answers[qid] = body.split("\n### ")[0].strip()
    return [q for q in questions(root) if not answers.get(q)]


def build(reference: Path, root: Path = REPO) -> dict[Path, str]:
    """{path: new text} for the key and the README."""
    f = facts(reference)
    src = root / KEY_SRC.relative_to(REPO)
    if not src.is_file():
        raise KeyError_(f"missing {src}")
    key = render(src.read_text(), f, str(src))
    missing = unanswered(key, root)
    if missing:
        raise KeyError_(f"{src}: no answer for question(s) {', '.join('Q' + q for q in missing)}")
    blocks = {**readme_blocks(f), **doc_blocks(Path(reference)), **laptop_cells(f), "index": index_block(f)}
    outputs = {root / KEY_OUT.relative_to(REPO): key}
    for path in [root / "README.md", *(root / rel for rel in LESSONS)]:
        if path.is_file():
            outputs[path] = replace_blocks(path.read_text(), blocks, str(path))
    return outputs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="answer_key.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default=str(REFERENCE), help="the reference run [logs/reference/laptop]")
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/answer-key.md or the README is out of date")
    ap.add_argument("--facts", action="store_true", help="print every fact the key may quote and exit")
    args = ap.parse_args(argv)
    try:
        if args.facts:
            for k, v in facts(Path(args.reference)).items():
                print(f"{k} = {v}")
            return 0
        outputs = build(Path(args.reference))
    except (KeyError_, OSError, ValueError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p} (run: python scripts/answer_key.py)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        if p in stale:
            p.write_text(text)
            print(f"written: {p}")
    if not stale:
        print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
