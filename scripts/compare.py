#!/usr/bin/env python3
"""The best trial of each method side by side, with what each method cost.

Run (after parse_logs.py wrote the CSVs; the hpo package must be installed:
`make venv` or `pip install -e .`):
    python scripts/compare.py logs/*/*.csv
    python scripts/compare.py logs/*/*.csv --out-dir logs/compare --all

For each method (the CSV's `method` column) it picks the best trial with hpo.report.best_row —
THE rule (lowest eval_loss; ties: higher F1, then the earlier row), the same trial as the driver's
`BEST trial` line; a pick that was stopped early, crashed or cut off is never put forward silently:
the table marks it `(!)` and a note says how it ended and names the best completed trial
(hpo.report.pick_trial). It prints one markdown table: method, job, trial, hyperparameters,
status, eval loss, EM, F1, and what the method cost:
  used GPU-h / CPU-h   the sum of the gpu_hours / cpu_hours of all trials in the CSV(s) used
                       (CSV columns method_gpu_hours / method_cpu_hours);
  allocated            the job's devices x elapsed, from the job's <csv stem>.summary.json
                       (job_gpu_hours / job_cpu_hours, written by parse_logs.py);
  to within 1 % of best  the trials' hours summed in CSV row order (the order the trials
                       started) up to the first trial with eval_loss <= 1.01 x the method's lowest;
  trials (stopped early).
Several CSVs of one method (re-runs): the newest by modification time is used, unless --all
(then all of them, best over all, cost summed), and the output says which file(s).

Writes <out-dir>/best_of_each.csv and <out-dir>/best_of_each.md (default
logs/compare in the repository), and two plots (hpo/plots.py; --no-plots skips them):
  best_so_far.png  best F1 so far and lowest eval loss so far vs the cumulative GPU-hours
                   (CPU-hours when no trial used a GPU), every method on one axis, trials
                   in CSV row order (the order they started);
  pareto.png       each trial's F1 vs its own GPU-hours, all methods, the Pareto front drawn.
A plot that cannot be drawn is a warning on stderr; it does not change the exit status.

Exit 0 on success, 2 for no CSVs or a CSV that is not a results CSV (wrong columns, mixed
methods), or methods whose trials used different questions (data fingerprints) without
--allow-mixed-data. The tables and the rules are in hpo/report.py, the plots in hpo/plots.py;
this file is only the command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import hpo  # noqa: F401  (installed into the venv; this script adds nothing to sys.path)
except ModuleNotFoundError:
    print("the hpo package is not importable: run `make venv` or `pip install -e .` in the repository root",
          file=sys.stderr)
    sys.exit(2)
from hpo.report import (CompareError, best_of_each, best_of_each_csv, best_of_each_markdown,
                        best_of_each_table, cost_basis, load_csvs, method_rows)
from hpo.schema import atomic_write_text

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="compare.py", description="Best trial of each method side by side.")
    ap.add_argument("csvs", nargs="*", help="results CSVs, e.g. logs/*/*.csv")
    ap.add_argument("--out-dir", default=str(REPO / "logs" / "compare"),
                    help="where best_of_each.csv/.md go (default: logs/compare)")
    ap.add_argument("--all", action="store_true",
                    help="use every CSV of a method, not only the newest")
    ap.add_argument("--allow-mixed-data", action="store_true",
                    help="compare even if the methods trained and scored on different questions "
                         "(different data fingerprints); the output says so")
    ap.add_argument("--no-plots", action="store_true", help="do not draw best_so_far.png and pareto.png")
    args = ap.parse_args(argv)
    skipped: list[str] = []              # CSVs without rows
    try:
        by_method = load_csvs(args.csvs, notes=skipped)
    except CompareError as e:
        by_method, error = None, e
    for n in skipped:
        print(n, file=sys.stderr)
    if by_method is None:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    try:
        rows, notes = best_of_each(by_method, use_all=args.all, allow_mixed_data=args.allow_mixed_data)
    except CompareError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    atomic_write_text(out / "best_of_each.csv", best_of_each_csv(rows))
    atomic_write_text(out / "best_of_each.md", best_of_each_markdown(rows, notes))
    for n in notes:
        print(n)
    print()
    print(best_of_each_table(rows))
    print()
    print(f"written: {out / 'best_of_each.csv'}, {out / 'best_of_each.md'}")
    if not args.no_plots:
        draw_plots(method_rows(by_method, use_all=args.all), rows, out)
    return 0


def draw_plots(by_method, best_rows, out) -> None:
    """best_so_far.png and pareto.png in `out`; any failure is a warning (the tables are written)."""
    basis = cost_basis([r for rows in by_method.values() for r in rows])
    key = f"allocated_{basis.lower()}_hours"
    allocated = {r["method"]: r.get(key) for r in best_rows}
    try:
        from hpo.plots import compare_plots      # imported here: matplotlib is only needed for plots
        made, warnings = compare_plots(by_method, out, allocated)
    except Exception as e:                       # noqa: BLE001 — never lose the comparison over a picture
        print(f"WARNING: plots not drawn: {type(e).__name__}: {e}", file=sys.stderr)
        return
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if made:
        print("plots: " + ", ".join(str(m["path"]) for m in made))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
