#!/usr/bin/env python3
"""Draw a job's plots (again) from its log and CSV: learning curves, PBT schedule, BayesOpt suggestions.

Run (the hpo package must be installed: `make venv` or `pip install -e .`):
    python scripts/plot.py logs/asha/hpo-asha-4815170.out            # or the job's .csv
    python scripts/plot.py logs/*/hpo-*-local-demo-*.out --out-dir /tmp/plots

scripts/parse_logs.py draws the same plots when it writes a job's CSV; this command draws them
again, e.g. for an older job or into another directory. Each argument is a job's log (.out: its
CSV is the same path with .csv, written by parse_logs.py) or its CSV (the log, same path with
.out, is read if it is there). The plots (see hpo/plots.py for what each shows):
    <csv stem>.curves.png        eval loss and F1 of every trial after every epoch (needs the log)
    <csv stem>.schedule.png      PBT: learning rate and weight decay of each member, the exploits
    <csv stem>.suggestions.png   Bayesian optimisation: the learning rates in the order suggested
go beside the CSV, or into --out-dir. The comparison plots across methods are drawn by
scripts/compare.py.

Exit status: 0 = plots drawn (a plot that needs data the job does not have is a warning);
2 = a missing file or a CSV that is not a results CSV (nothing drawn for any argument);
1 = no plot could be drawn for some argument.
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
from hpo.plots import job_plots
from hpo.schema import read_csv


def job_files(arg) -> tuple[Path | None, Path]:
    """(log or None, csv) of one argument; ValueError (one clear sentence) if the CSV is missing."""
    p = Path(arg)
    if p.suffix == ".csv":
        if not p.is_file():
            raise ValueError(f"no such CSV file: {p}")
        logs = [p.with_suffix(".out"), p.with_name(p.name.replace(".reparsed.csv", ".out"))]
        return next((log for log in logs if log.is_file()), None), p
    if p.suffix != ".out":
        raise ValueError(f"{p} is neither a job log (.out) nor a results CSV (.csv)")
    if not p.is_file():
        raise ValueError(f"no such log file: {p}")
    csv_path = p.with_suffix(".csv")
    if not csv_path.is_file():
        raise ValueError(f"no CSV beside the log {p} (expected {csv_path}): "
                         f"run `python scripts/parse_logs.py {p}` first")
    return p, csv_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="plot.py", description="Draw a job's plots from its log and CSV.")
    ap.add_argument("jobs", nargs="+", help="job logs (.out) or results CSVs (.csv)")
    ap.add_argument("--out-dir", help="where the PNGs go (default: beside each CSV)")
    args = ap.parse_args(argv)

    jobs = []
    for arg in args.jobs:                # check every argument before drawing anything
        try:
            log, csv_path = job_files(arg)
            rows = read_csv(csv_path)
        except ValueError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"ERROR: cannot read {arg}: {e.strerror or e}", file=sys.stderr)
            return 2
        if not rows:
            print(f"ERROR: {csv_path} has no trial rows: nothing to plot", file=sys.stderr)
            return 2
        jobs.append((log, csv_path, rows))

    status = 0
    for log, csv_path, rows in jobs:
        if log is None:
            print(f"WARNING: no log beside {csv_path}: only the plots that need no [eval] lines",
                  file=sys.stderr)
        made, warnings = job_plots(log, csv_path, rows, out_dir=args.out_dir)
        for w in warnings:
            print(f"WARNING: {w}", file=sys.stderr)
        for m in made:
            print(m["path"])
        if not made:
            print(f"ERROR: no plot could be drawn for {csv_path}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
