"""Reports on results rows: the job summary, the best trial, the markdown tables,
and the best trial of each method side by side.

Use (nothing to run; the command lines are scripts/parse_logs.py and scripts/compare.py):
    from hpo.report import best_row, describe_best, markdown_table
    best = best_row(rows)                      # THE rule for "the best trial", see best_row
    if best is not None:
        print("[tune] " + describe_best(best))  # a Ray driver, after fit()
    print(markdown_table(rows))                # the README's per-trial table

    from hpo.report import load_csvs, best_of_each, best_of_each_table
    rows, notes = best_of_each(load_csvs(["logs/manual/hpo-manual-1.csv", "logs/asha/hpo-asha-2.csv"]))
    print(best_of_each_table(rows))
    # what compare.py reports besides the pick (pick_trial): used vs allocated hours
    # (allocated_hours), the hours to within 1 % of the best (hours_to_near_best), and the
    # search trial by trial (cumulative_best, which hpo/plots.py draws)

Every method's rows have the same columns (hpo.schema.COLUMNS), so every method
gets the same JOB SUMMARY (GPU-hours of the allocation vs. GPU-hours spent in
trials), the same table and the same choice of its best trial.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from hpo.logfmt import parse_date
from hpo.schema import STATUSES, csv_text, device_hours, format_value, read_csv


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x, spec, missing="-") -> str:
    """A number for a table or a message: `spec` for finite values, nan/inf as in the CSV."""
    if x is None:
        return missing
    if isinstance(x, float) and not math.isfinite(x):
        return format_value(x)
    return format(x, spec)


def _cell(text) -> str:
    """Markdown table cell text: a '|' would end the cell."""
    return str(text).replace("|", "\\|")


# --------------------------------------------------------------------------- the best trial

_LOWER_IS_BETTER = {"eval_loss": True, "exact_match": False, "f1": False}


def best_row(rows, metric: str = "eval_loss") -> dict | None:
    """The best trial: THE rule of the workshop, used by every driver, table and
    comparison, so "the best trial" means the same thing everywhere.

      1. the lowest finite eval_loss wins (a missing or NaN loss never wins; any
         status counts: an early-stopped or crashed trial's last evaluation was
         measured too);
      2. a tie on eval_loss: the higher finite F1 wins; a missing or NaN F1 is the
         worst F1 (it cannot win a tie against a measured one);
      3. still tied: the earlier row keeps its place.

    `metric="exact_match"` or `"f1"` ranks by that metric instead (highest wins;
    ties as above). None if no row has a finite value of `metric`.
    """
    if metric not in _LOWER_IS_BETTER:
        raise ValueError(f"metric must be one of {sorted(_LOWER_IS_BETTER)}, not {metric!r}")
    sign = 1 if _LOWER_IS_BETTER[metric] else -1
    best, best_key = None, None
    for row in rows:
        value = row.get(metric)
        if not _finite(value):
            continue
        f1 = row.get("f1") if _finite(row.get("f1")) else -math.inf
        key = (sign * value, -f1)                  # smaller is better
        if best_key is None or key < best_key:     # strict: the earlier row keeps a full tie
            best, best_key = row, key
    return best


def describe_best(row: dict) -> str:
    """One line about the best trial, e.g.
    `BEST trial t3 (completed): learning_rate=5e-05 batch_size=8 weight_decay=0.01 epochs=2
    eval_loss=1.1897 exact_match=46.50 f1=58.02` (a missing value prints as '-')."""
    return (f"BEST trial {row.get('trial_id')} ({row.get('status')}): "
            f"learning_rate={_num(row.get('learning_rate'), '.3g')} "
            f"batch_size={_num(row.get('batch_size'), 'g')} "
            f"weight_decay={_num(row.get('weight_decay'), 'g')} "
            f"epochs={_num(row.get('epochs'), 'g')} "
            f"eval_loss={_num(row.get('eval_loss'), '.4f')} "
            f"exact_match={_num(row.get('exact_match'), '.2f')} "
            f"f1={_num(row.get('f1'), '.2f')}")


# --------------------------------------------------------------------------- job summary

def job_summary(job: dict, rows) -> dict:
    """Cost of the job vs. the cost of its trials, from the job facts and the rows.

    job_*_hours = allocated GPUs/CPUs x elapsed; trial_*_hours = sum over rows;
    training_share = trial hours / job hours (GPU-hours if the job had GPUs, else
    CPU-hours, so the laptop tier reports a share too).
    """
    start_t = parse_date(job.get("start"))
    elapsed, source = job.get("elapsed_s"), None
    if elapsed is not None:
        source = "FINISH line"
    else:
        last_t = parse_date(job.get("last_time"))
        if start_t and last_t:
            elapsed, source = (last_t - start_t).total_seconds(), "last timestamped line"
    gpus, cpus = job.get("gpus"), job.get("cpus")
    job_gpu_h, job_cpu_h = device_hours(gpus, elapsed), device_hours(cpus, elapsed)

    def total(col):
        vals = [r.get(col) for r in rows if _finite(r.get(col))]
        return sum(vals) if vals else (0.0 if rows else None)

    trial_gpu_h, trial_cpu_h = total("gpu_hours"), total("cpu_hours")
    basis = "GPU" if gpus else "CPU"
    num, den = (trial_gpu_h, job_gpu_h) if basis == "GPU" else (trial_cpu_h, job_cpu_h)
    share = num / den if num is not None and den else None
    breakdown = time_breakdown(job, rows, basis, den)
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
        "training_share": share, "share_basis": basis, "breakdown": breakdown,
        "n_trials": counts, "runs_planned": job.get("runs_planned"), "note": note,
        "resumed_from": job.get("resumed_from"),
    }


_PARTS = (("train", "train_s", "training steps"), ("eval", "eval_s", "evaluation"),
          ("checkpoint", "checkpoint_s", "checkpoints"), ("setup", "setup_s", "trial setup"))


def time_breakdown(job: dict, rows, basis: str, job_hours) -> dict | None:
    """Where the allocation's device-hours went: Ray boot, trial setup, training steps, evaluation,
    checkpoints, and the rest (idle: GPUs no trial used, gaps between trials, process start-up).

    Each trial's seconds x the devices it held; Ray boot x all devices of the job (nothing trains
    while Ray starts). None when the job's hours are unknown or no row has the times (older logs)."""
    if not job_hours or not any(_finite(r.get("train_s")) for r in rows):
        return None
    dev_col = "gpus" if basis == "GPU" else "cpus"
    out = {}
    for key, col, _ in _PARTS:
        out[key] = sum(r[col] * r[dev_col] for r in rows if _finite(r.get(col)) and _finite(r.get(dev_col))) / 3600
    boot = job.get("ray_boot_s")
    out["ray_boot"] = (boot or 0.0) * (job.get("gpus") if basis == "GPU" else job.get("cpus") or 0) / 3600
    out["idle"] = max(0.0, job_hours - sum(out.values()))
    out["hours"] = job_hours
    out["train_share"] = out["train"] / job_hours
    return out


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
        f"allocation         : {_num(s['nodes'], 'g')} node(s), {_num(s['gpus'], 'g')} GPU(s), "
        f"{_num(s['cpus'], 'g')} CPU(s)",
        f"job GPU-h          : {_num(s['job_gpu_hours'], '.3f')}  (allocated GPUs x elapsed)",
        f"sum of trial GPU-h : {_num(s['trial_gpu_hours'], '.3f')}",
        f"job CPU-h          : {_num(s['job_cpu_hours'], '.3f')}  (allocated CPUs x elapsed)",
        f"sum of trial CPU-h : {_num(s['trial_cpu_hours'], '.3f')}",
        f"training share     : {share_txt}",
        *_format_breakdown(s.get("breakdown"), s["share_basis"]),
        f"trials             : {n['total']}{planned} (" + ", ".join(f"{k} {n[k]}" for k in STATUSES) + ")",
    ]
    if s.get("resumed_from"):
        lines.append(f"resumed from       : job {s['resumed_from']} (the trials' rows and hours include that job's)")
    if s.get("note"):
        lines.append(f"note               : {s['note']}")
    lines.append("-" * len(head))
    return "\n".join(lines)


def _format_breakdown(b, basis) -> list[str]:
    if not b:
        return []
    pct = {k: 100 * b[k] / b["hours"] for k in ("ray_boot", "setup", "train", "eval", "checkpoint", "idle")}
    return [f"in training steps  : {pct['train']:.1f} % of the job's {basis}-hours "
            f"({b['train']:.3f} of {b['hours']:.3f} {basis}-h)",
            f"where it went      : Ray boot {pct['ray_boot']:.1f} % | trial setup {pct['setup']:.1f} % | "
            f"training {pct['train']:.1f} % | evaluation {pct['eval']:.1f} % | checkpoints "
            f"{pct['checkpoint']:.1f} % | idle/other {pct['idle']:.1f} %"]


# --------------------------------------------------------------------------- per-trial table

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
        cells = [str(i), trial, _cell(r.get("status") or "-"),
                 _num(r.get("learning_rate"), "g"), _num(r.get("batch_size"), "g"),
                 _num(r.get("weight_decay"), "g"), _num(r.get("epochs"), "g"),
                 _num(r.get("eval_loss"), ".4f"), _num(r.get("exact_match"), ".2f"),
                 _num(r.get("f1"), ".2f"), _num(r.get("wall_s"), ".0f"),
                 _num(r.get("gpu_hours"), ".3f"), _num(r.get("cpu_hours"), ".3f")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- best of each method

# The workshop's order (simplest first); any other method name follows alphabetically.
METHOD_ORDER = ("manual", "asha", "pbt", "bayesopt")
# The columns of best_of_each.csv: the picked trial's row (its first 11 columns), then
# what the whole method cost, and the CSV the picked trial came from; then (appended, so
# older readers keep their columns) the fairness figures:
#   method_gpu_hours / method_cpu_hours  USED: the sum over the trials' rows (what trials held);
#   allocated_gpu_hours / _cpu_hours     ALLOCATED: the job's GPUs/CPUs x elapsed, from the job's
#                                        <csv stem>.summary.json (job_gpu_hours / job_cpu_hours);
#                                        used < allocated: Ray boot, idle devices, gaps;
#   gpu_hours_to_within_1pct / cpu_...   the hours the method needed to get near its best: trials
#                                        summed in CSV row order up to the first one with
#                                        eval_loss <= 1.01 x the method's lowest eval_loss;
#   n_stopped_early                      trials a scheduler stopped early (ASHA, PBT);
#   pick_note                            when the pick (best_row's) did not complete: how it ended,
#                                        the best completed alternative (empty otherwise).
BEST_OF_EACH_COLUMNS = [
    "method", "job_id", "trial_id", "status", "learning_rate", "batch_size",
    "weight_decay", "epochs", "eval_loss", "exact_match", "f1",
    "method_gpu_hours", "method_cpu_hours", "n_trials", "data_fingerprint", "source",
    "allocated_gpu_hours", "allocated_cpu_hours", "gpu_hours_to_within_1pct", "cpu_hours_to_within_1pct",
    "n_stopped_early", "pick_note"]
_FROM_BEST = BEST_OF_EACH_COLUMNS[1:11]
# "near the best" for gpu_hours_to_within_1pct: eval_loss <= (1 + NEAR_BEST) x the lowest
NEAR_BEST = 0.01


class CompareError(Exception):
    """Inputs that cannot be compared (no CSVs, not a results CSV, mixed methods)."""


def load_csvs(paths, notes: list | None = None) -> dict[str, list[tuple[Path, list[dict]]]]:
    """{method: [(csv path, rows), ...]} from results CSVs (one job, so one method, each).

    Raises CompareError on no paths, a missing file, a CSV that is not a results
    CSV, or one with rows of several methods. A CSV without rows is skipped, with
    a note appended to `notes` (if given).
    """
    if not paths:
        raise CompareError("no CSV files given (run scripts/parse_logs.py on the job logs first)")
    by_method: dict[str, list] = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise CompareError(f"no such CSV file: {p} (did the glob match nothing?)")
        try:
            rows = read_csv(p)
        except ValueError as e:
            raise CompareError(str(e)) from None
        methods = {r["method"] for r in rows}
        if len(methods) > 1:
            raise CompareError(f"{p}: rows of several methods {sorted(methods)}; one CSV per job expected")
        if not rows:
            if notes is not None:
                notes.append(f"note: {p} has no trial rows; skipped")
            continue
        by_method.setdefault(methods.pop(), []).append((p, rows))
    if not by_method:
        raise CompareError("none of the CSVs has any trial rows")
    return by_method


def _method_order(method: str):
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def files_used(by_method, use_all: bool = False) -> dict[str, tuple[list, str]]:
    """{method: ([(csv path, rows), ...], note)}: the CSVs compared for each method, in the
    workshop's order, and a note saying which. Several CSVs of one method (re-runs): the newest
    by modification time, unless use_all. best_of_each and the comparison plots both use this,
    so the table and the plots always show the same trials."""
    out = {}
    for method in sorted(by_method, key=_method_order):
        files = by_method[method]
        if not use_all and len(files) > 1:
            # newest by mtime; the path breaks an mtime tie so the choice is stable
            files = [max(files, key=lambda f: (f[0].stat().st_mtime, str(f[0])))]
            note = f"{method}: using {files[0][0]} (newest of {len(by_method[method])}; --all uses all)"
        else:
            note = f"{method}: using " + ", ".join(str(f[0]) for f in files)
        out[method] = (files, note)
    return out


def method_rows(by_method, use_all: bool = False) -> dict[str, list[dict]]:
    """{method: its compared trial rows, in CSV row order} (the CSVs of files_used)."""
    return {m: [r for _, rs in files for r in rs] for m, (files, _) in files_used(by_method, use_all).items()}


def cost_basis(rows) -> str:
    """"GPU" if any trial held a GPU (gpu_hours > 0), else "CPU" (the laptop tier): the unit in
    which methods are set against each other — one unit for all of them."""
    return "GPU" if any(_finite(r.get("gpu_hours")) and r["gpu_hours"] > 0 for r in rows) else "CPU"


def cumulative_best(rows, basis: str) -> list[dict]:
    """The search as it went, trial by trial in CSV row order: for each row, the cumulative
    device-hours so far (`basis` "GPU" or "CPU": gpu_hours / cpu_hours; a missing value counts 0)
    and the best F1 and lowest eval loss so far (None until one is finite).

    CSV row order is the order the trials STARTED (a Ray driver records a trial when it starts;
    the manual grid runs one after another, so there it is also the order they finished). With
    concurrent trials it is not exactly the order their results arrived; it is the order the
    method spent its hours in."""
    col = "gpu_hours" if basis == "GPU" else "cpu_hours"
    hours, best_f1, best_loss, out = 0.0, None, None, []
    for r in rows:
        hours += r[col] if _finite(r.get(col)) else 0.0
        if _finite(r.get("f1")) and (best_f1 is None or r["f1"] > best_f1):
            best_f1 = r["f1"]
        if _finite(r.get("eval_loss")) and (best_loss is None or r["eval_loss"] < best_loss):
            best_loss = r["eval_loss"]
        out.append({"hours": hours, "f1": best_f1, "eval_loss": best_loss, "row": r})
    return out


def hours_to_near_best(rows, basis: str, near: float = NEAR_BEST) -> float | None:
    """Device-hours the method spent before it was within `near` (1 %) of its best: the trials'
    hours summed in CSV row order (see cumulative_best) up to and including the first trial with
    eval_loss <= lowest eval_loss x (1 + near). None if no trial has a finite eval loss."""
    losses = [r["eval_loss"] for r in rows if _finite(r.get("eval_loss"))]
    if not losses:
        return None
    best = min(losses)
    limit = best + near * abs(best)
    for point in cumulative_best(rows, basis):
        loss = point["row"].get("eval_loss")
        if _finite(loss) and loss <= limit:
            return point["hours"]
    return None                                   # not reached: cannot happen, the best is a row


def allocated_hours(csv_path) -> dict | None:
    """The job's allocation from <csv stem>.summary.json (scripts/parse_logs.py writes it beside
    the CSV): {"gpu": job_gpu_hours, "cpu": job_cpu_hours}; None if there is no readable summary."""
    p = Path(csv_path).with_suffix(".summary.json")
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(s, dict):
        return None
    return {"gpu": s.get("job_gpu_hours") if _finite(s.get("job_gpu_hours")) else None,
            "cpu": s.get("job_cpu_hours") if _finite(s.get("job_cpu_hours")) else None}


def _how_it_ended(row) -> str:
    """`was stopped early at epoch 1 of 4` — how a trial that is not `completed` ended."""
    epochs = (f" at epoch {_num(row.get('epochs'), 'g')} of {_num(row.get('epochs_planned'), 'g')}"
              if row.get("epochs") is not None else "")
    return {"stopped_early": "was stopped early", "error": "crashed",
            "incomplete": "was cut off by the end of the job"}.get(row["status"], row["status"]) + epochs


def pick_trial(rows) -> tuple[dict | None, str]:
    """The trial compare.py puts forward for a method — best_row's, THE rule, the same trial as the
    driver's `BEST trial` line — and a note when it is not a completed trial (empty otherwise).

    A trial stopped early (ASHA), crashed or cut off was evaluated after fewer epochs than it was
    meant to train, so its hyperparameters were never tried to the end: the note says how it ended,
    names the best completed trial as the alternative, and says to train the pick to the end
    (`--best-of` in the manual grid) before trusting it. Never silently.
    """
    best = best_row(rows)
    if best is None or best["status"] == "completed":
        return best, ""
    completed = best_row([r for r in rows if r["status"] == "completed"])
    alt = (f"the best completed trial is {completed['trial_id']} (eval loss {_num(completed['eval_loss'], '.4f')})"
           if completed is not None else "no trial completed")
    return best, (f"the pick {best['trial_id']} {_how_it_ended(best)}: its eval loss is from a shorter training; "
                  f"{alt}; train the pick to the end (manual grid --best-of) before trusting it")


def best_of_each(by_method, use_all: bool = False, allow_mixed_data: bool = False) -> tuple[list[dict], list[str]]:
    """One summary row per method (BEST_OF_EACH_COLUMNS) and notes on which files were used.

    Several CSVs of one method (re-runs): the newest by modification time, unless
    use_all (then the best over all of them, and the cost summed over all).
    The trial picked is `pick_trial`'s (best_row's rule, with a note when it did not complete); the cost is the sum over all the trials used, set against the allocation
    (allocated_hours) and the hours the method needed to get within 1 % of its best
    (hours_to_near_best).
    Methods are ranked only if every trial used was trained and scored on the same questions
    (one data_fingerprint): else CompareError, unless allow_mixed_data (then a note says so).
    """
    out, notes = [], []
    fingerprints: dict[str, set] = {}
    for method, (files, note) in files_used(by_method, use_all).items():
        notes.append(note)
        rows = [r for _, rs in files for r in rs]
        sources = {id(r): str(p) for p, rs in files for r in rs}
        for r in rows:
            if r.get("data_fingerprint"):
                fingerprints.setdefault(r["data_fingerprint"], set()).add(method)
        best, why = pick_trial(rows)
        summary = {c: None for c in BEST_OF_EACH_COLUMNS}
        summary.update(method=method, n_trials=len(rows),
                       method_gpu_hours=sum(r["gpu_hours"] for r in rows if r["gpu_hours"] is not None),
                       method_cpu_hours=sum(r["cpu_hours"] for r in rows if r["cpu_hours"] is not None),
                       gpu_hours_to_within_1pct=hours_to_near_best(rows, "GPU"),
                       cpu_hours_to_within_1pct=hours_to_near_best(rows, "CPU"),
                       n_stopped_early=sum(r["status"] == "stopped_early" for r in rows),
                       pick_note=why or None)
        allocs = [allocated_hours(p) for p, _ in files]
        if all(a is not None for a in allocs):
            for key in ("gpu", "cpu"):
                vals = [a[key] for a in allocs]
                summary[f"allocated_{key}_hours"] = sum(vals) if None not in vals else None
        else:
            missing = [str(p.with_suffix(".summary.json")) for (p, _), a in zip(files, allocs) if a is None]
            notes.append(f"{method}: allocated hours unknown (no job summary {', '.join(missing)}; "
                         "scripts/parse_logs.py writes it)")
        if best is None:
            notes.append(f"{method}: no trial with a finite eval_loss")
            summary["source"] = ", ".join(str(f[0]) for f in files)
        else:
            summary.update({c: best[c] for c in _FROM_BEST})
            summary["data_fingerprint"] = best.get("data_fingerprint")
            summary["source"] = sources[id(best)]
            if why:
                notes.append(f"{method}: {why}")
        out.append(summary)
    if len(fingerprints) > 1:
        which = "; ".join(f"{fp}: {', '.join(sorted(ms))}" for fp, ms in sorted(fingerprints.items()))
        msg = (f"the trials were trained and scored on different questions (data fingerprints {which}): "
               "their eval losses are not comparable")
        if not allow_mixed_data:
            raise CompareError(msg + ". Rerun with the same --data-seed, --train-samples, --eval-samples and "
                               "--dataset, or pass --allow-mixed-data to compare anyway")
        notes.append("WARNING: " + msg)
    elif not fingerprints:
        notes.append("note: no data fingerprints in these CSVs (older runs?): same questions not checked")
    else:
        notes.append(f"all trials used the same questions (data fingerprint {next(iter(fingerprints))})")
    return out, notes


def best_of_each_table(rows) -> str:
    """The markdown table of `best_of_each`'s rows (the README's "Best of each method").

    Used GPU-h and CPU-h both; the allocation and the hours to within 1 % of the best in one
    unit for all methods: GPU-h if any method used a GPU, else CPU-h (the laptop tier).
    A status other than completed is marked `(!)`: the notes say why that trial was picked."""
    basis = "GPU" if any(_finite(r.get("method_gpu_hours")) and r["method_gpu_hours"] > 0 for r in rows) else "CPU"
    key = basis.lower()
    lines = ["| method | job | trial | lr | batch size | weight decay | epochs | status | eval loss | EM | F1 "
             f"| used GPU-h | used CPU-h | allocated {basis}-h | {basis}-h to within 1 % of best "
             "| trials (stopped early) | data |",
             "|---|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        status = r.get("status") or "-"
        if r.get("status") not in (None, "completed"):
            status += " (!)"
        cells = [r["method"], r["job_id"] or "-", r["trial_id"] or "-",
                 _num(r["learning_rate"], "g"), _num(r["batch_size"], "g"), _num(r["weight_decay"], "g"),
                 _num(r["epochs"], "g"), status, _num(r["eval_loss"], ".4f"), _num(r["exact_match"], ".2f"),
                 _num(r["f1"], ".2f"), _num(r["method_gpu_hours"], ".3f"), _num(r["method_cpu_hours"], ".3f"),
                 _num(r.get(f"allocated_{key}_hours"), ".3f"), _num(r.get(f"{key}_hours_to_within_1pct"), ".3f"),
                 f"{r['n_trials']} ({r.get('n_stopped_early') or 0})", r.get("data_fingerprint") or "-"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def best_of_each_markdown(rows, notes) -> str:
    """best_of_each.md: a heading, the table, what its cost columns mean, and the notes as a list."""
    return ("# Best trial of each method\n\n" + best_of_each_table(rows) + "\n\n"
            "*used* = the sum of the trials' hours; *allocated* = the job's devices x its elapsed time "
            "(from the job summary; the difference is Ray start-up, idle devices and gaps); *to within 1 % "
            "of best* = the trials' hours summed in CSV row order (the order they started) until the first "
            "trial whose eval loss is at most 1.01 x the method's lowest.\n\n"
            + "".join(f"- {n}\n" for n in notes))


def best_of_each_csv(rows) -> str:
    """best_of_each.csv: BEST_OF_EACH_COLUMNS, one line per method."""
    return csv_text(rows, BEST_OF_EACH_COLUMNS)
