#!/usr/bin/env python3
"""The best trial of each method side by side, with what each method cost.

Run (from the repository root, after parse_logs.py wrote the CSVs):
    python scripts/compare.py logs/*/*.csv
    python scripts/compare.py logs/*/*.csv --out-dir logs/compare --all

For each method (the CSV's `method` column) it picks the row with the lowest
eval_loss (ties: higher F1) and prints one markdown table: method, job, trial,
hyperparameters, eval loss, EM, F1, and the method's cost = the sum of the
gpu_hours / cpu_hours of all trials in the CSV(s) used. Several CSVs of one
method (re-runs): the newest by modification time is used, unless --all (then
all of them, best over all, cost summed), and the output says which file(s).

Writes <out-dir>/best_of_each.csv and <out-dir>/best_of_each.md (default
logs/compare). Exit 0 on success, 2 for no CSVs or a CSV that is not a results
CSV (wrong columns, mixed methods).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run from a checkout without `pip install -e .`: the repository root holds hpo/.
sys.path.insert(0, str(REPO))

from hpo.results import atomic_write_text, best_row, format_value, read_csv  # noqa: E402

# The workshop's order (simplest first); any other method name follows alphabetically.
METHOD_ORDER = ("manual", "asha", "pbt", "bayesopt")
OUT_COLUMNS = ["method", "job_id", "trial_id", "status", "learning_rate", "batch_size",
               "weight_decay", "epochs", "eval_loss", "exact_match", "f1",
               "method_gpu_hours", "method_cpu_hours", "n_trials", "source"]


class CompareError(Exception):
    """Inputs that cannot be compared (no CSVs, not a results CSV, mixed methods)."""


def load(paths) -> dict[str, list[tuple[Path, list[dict]]]]:
    """{method: [(csv path, rows), ...]}; raises CompareError on a bad CSV."""
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
            print(f"note: {p} has no trial rows; skipped", file=sys.stderr)
            continue
        by_method.setdefault(methods.pop(), []).append((p, rows))
    if not by_method:
        raise CompareError("none of the CSVs has any trial rows")
    return by_method


def _order(method: str):
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def best_of_each(by_method, use_all: bool = False) -> tuple[list[dict], list[str]]:
    """One summary row per method and the notes on which files were used."""
    out, notes = [], []
    for method in sorted(by_method, key=_order):
        files = by_method[method]
        if not use_all and len(files) > 1:
            # newest by mtime; the path breaks an mtime tie so the choice is stable
            files = [max(files, key=lambda f: (f[0].stat().st_mtime, str(f[0])))]
            notes.append(f"{method}: using {files[0][0]} (newest of {len(by_method[method])}; "
                         f"--all uses all)")
        else:
            notes.append(f"{method}: using " + ", ".join(str(f[0]) for f in files))
        rows = [r for _, rs in files for r in rs]
        sources = {id(r): str(p) for p, rs in files for r in rs}
        best = best_row(rows)
        gpu_h = sum(r["gpu_hours"] for r in rows if r["gpu_hours"] is not None)
        cpu_h = sum(r["cpu_hours"] for r in rows if r["cpu_hours"] is not None)
        summary = {c: None for c in OUT_COLUMNS}
        summary.update(method=method, method_gpu_hours=gpu_h, method_cpu_hours=cpu_h,
                       n_trials=len(rows))
        if best is None:
            notes.append(f"{method}: no trial with a finite eval_loss")
            summary["source"] = ", ".join(str(f[0]) for f in files)
        else:
            for c in OUT_COLUMNS[:11]:
                if c != "method":
                    summary[c] = best[c]
            summary["source"] = sources[id(best)]
        out.append(summary)
    return out, notes


def _f(x, spec):
    return "-" if x is None else (format_value(x) if isinstance(x, float) and x != x else format(x, spec))


def markdown(rows) -> str:
    lines = ["| method | job | trial | lr | batch size | weight decay | epochs | eval loss | EM | F1 "
             "| method GPU-h | method CPU-h |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        cells = [r["method"], r["job_id"] or "-", r["trial_id"] or "-",
                 _f(r["learning_rate"], "g"), _f(r["batch_size"], "g"), _f(r["weight_decay"], "g"),
                 _f(r["epochs"], "g"), _f(r["eval_loss"], ".4f"), _f(r["exact_match"], ".2f"),
                 _f(r["f1"], ".2f"), _f(r["method_gpu_hours"], ".3f"), _f(r["method_cpu_hours"], ".3f")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def to_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(OUT_COLUMNS)
    for r in rows:
        w.writerow([format_value(r[c]) for c in OUT_COLUMNS])
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="compare.py", description="Best trial of each method side by side.")
    ap.add_argument("csvs", nargs="*", help="results CSVs, e.g. logs/*/*.csv")
    ap.add_argument("--out-dir", default=str(REPO / "logs" / "compare"),
                    help="where best_of_each.csv/.md go (default: logs/compare)")
    ap.add_argument("--all", action="store_true",
                    help="use every CSV of a method, not only the newest")
    args = ap.parse_args(argv)
    try:
        rows, notes = best_of_each(load(args.csvs), use_all=args.all)
    except CompareError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    table = markdown(rows)
    out = Path(args.out_dir)
    atomic_write_text(out / "best_of_each.csv", to_csv(rows))
    atomic_write_text(out / "best_of_each.md",
                      "# Best trial of each method\n\n" + table + "\n\n"
                      + "".join(f"- {n}\n" for n in notes))
    for n in notes:
        print(n)
    print()
    print(table)
    print()
    print(f"written: {out / 'best_of_each.csv'}, {out / 'best_of_each.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
