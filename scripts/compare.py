#!/usr/bin/env python3
"""The best trial of each method side by side, with what each method cost.

Run (after parse_logs.py wrote the CSVs; the hpo package must be installed:
`make venv` or `pip install -e .`):
    python scripts/compare.py logs/*/*.csv
    python scripts/compare.py logs/*/*.csv --out-dir logs/compare --all

For each method (the CSV's `method` column) it picks the best trial with
hpo.report.best_row (lowest eval_loss; ties: higher F1, then the earlier row) and
prints one markdown table: method, job, trial, hyperparameters, eval loss, EM,
F1, and the method's cost = the sum of the gpu_hours / cpu_hours of all trials
in the CSV(s) used. Several CSVs of one method (re-runs): the newest by
modification time is used, unless --all (then all of them, best over all, cost
summed), and the output says which file(s).

Writes <out-dir>/best_of_each.csv and <out-dir>/best_of_each.md (default
logs/compare in the repository). Exit 0 on success, 2 for no CSVs or a CSV that
is not a results CSV (wrong columns, mixed methods), or methods whose trials used
different questions (data fingerprints) without --allow-mixed-data. The tables and the rule are
in hpo/report.py; this file is only the command line.
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
                        best_of_each_table, load_csvs)
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
