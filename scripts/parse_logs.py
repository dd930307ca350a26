#!/usr/bin/env python3
"""Parse a job's log into the results CSV and print its JOB SUMMARY and result table.

Run (from anywhere; the hpo package must be installed: `make venv` or `pip install -e .`):
    python scripts/parse_logs.py logs/manual/hpo-manual-4815162.out
    python scripts/parse_logs.py logs/asha/hpo-asha-4815170.out     # finds hpo-asha-4815170/trials.jsonl
Options:
    --records FILE       rows from a Ray driver's trials.jsonl instead of the log's RUN blocks
                         (default: <log without .out>/trials.jsonl when it exists)
    --csv OUT            CSV path (default: the log path with .csv)
    --summary-json OUT   summary JSON path (default: the CSV path with .summary.json)
    --quiet              print only warnings and the CSV path
    --no-plots           do not draw the job's plots

After the CSV it draws the job's plots beside it (hpo/plots.py): <csv stem>.curves.png (eval loss
and F1 per trial and epoch, from the log's [eval] lines), and <csv stem>.schedule.png (PBT) or
<csv stem>.suggestions.png (BayesOpt). A plot that cannot be drawn is a warning on stderr: it never
changes the exit status or the CSV. To draw them again later: python scripts/plot.py <log or csv>.

Nothing already written is lost: if the CSV exists with MORE rows than this parse found, it
is left as it is, the new one is written beside it (<name>.reparsed.csv) and the exit status
is 1. Warnings (lines that did not parse, with line numbers) go to stderr. Exit status:
0 = CSV written (also with warnings), 2 = usage error or missing/empty log (an
existing CSV is left untouched), 1 = the outputs could not be written, or not over a larger CSV.

The launchers run this after the JOB FINISH line, so every .out file ends with
its summary. The work is done by the hpo package: hpo.logparse reads the log,
hpo.schema writes the CSV, hpo.report makes the summary and the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

try:
    import hpo  # noqa: F401  (installed into the venv; this script adds nothing to sys.path)
except ModuleNotFoundError:
    print("the hpo package is not importable: run `make venv` or `pip install -e .` in the repository root",
          file=sys.stderr)
    sys.exit(2)
from hpo.logparse import LogError, parse_log
from hpo.report import format_summary, job_summary, markdown_table
from hpo.schema import LogWarning, atomic_write_text, read_records, write_csv


def default_outputs(log_path) -> tuple[Path, Path]:
    """logs/<method>/<job-name>-<id>.out (or .csv) -> (.csv, .summary.json) next to it."""
    p = Path(log_path)
    return p.with_suffix(".csv"), p.with_suffix(".summary.json")


def records_beside(log_path) -> Path | None:
    """A Ray job's trial records: <job dir>/trials.jsonl, the job dir being the log path without .out."""
    p = Path(log_path).with_suffix("") / "trials.jsonl"
    return p if p.is_file() else None


def existing_rows(csv_path: Path) -> int:
    """Data lines of an existing CSV (0 if none): whatever its columns, a line is a trial."""
    if not csv_path.is_file():
        return 0
    with open(csv_path, encoding="utf-8", errors="replace") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def draw_plots(log_path, csv_path, rows, job, quiet) -> None:
    """The job's plots beside its CSV. Whatever goes wrong here (matplotlib missing, a plot that
    fails) is a warning on stderr: the CSV and the exit status are already settled."""
    try:
        from hpo.plots import job_plots          # imported here: matplotlib is only needed for plots
        made, plot_warnings = job_plots(log_path, csv_path, rows, job_id=job.get("job_id"),
                                        method=job.get("method"))
    except Exception as e:                       # noqa: BLE001 — never lose the parse over a picture
        print(f"WARNING: plots not drawn: {type(e).__name__}: {e}", file=sys.stderr)
        return
    for w in plot_warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if made and not quiet:
        print("plots: " + ", ".join(str(m["path"]) for m in made))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="parse_logs.py",
        description="Parse a job log (and Ray trial records) into the results CSV, "
                    "print the JOB SUMMARY and the markdown result table.")
    ap.add_argument("log", help="the job's .out file, e.g. logs/manual/hpo-manual-<id>.out")
    ap.add_argument("--records", help="trials.jsonl written by a Ray driver; rows come from it instead of "
                                      "the log's RUN blocks [default: <log without .out>/trials.jsonl if "
                                      "it exists]")
    ap.add_argument("--csv", help="output CSV (default: the log path with .csv)")
    ap.add_argument("--summary-json", help="output summary JSON (default: the CSV path with .summary.json)")
    ap.add_argument("--quiet", action="store_true", help="print only warnings and the CSV path")
    ap.add_argument("--no-plots", action="store_true", default=os.environ.get("HPO_PLOTS") == "0",
                    help="do not draw the job's plots (hpo/plots.py) [default: draw them; HPO_PLOTS=0 sets "
                         "this for every job, e.g. the tests' launches that do not look at plots]")
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
    if not args.records and records_beside(args.log):
        args.records = str(records_beside(args.log))     # a Ray method's rows live there, not in the log
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
    before = existing_rows(csv_path)
    refused = None
    if len(rows) < before:
        # Never replace a results file with a smaller one: write beside it and say so.
        refused = csv_path
        csv_path = csv_path.with_name(csv_path.stem + ".reparsed.csv")
        json_path = json_path.with_name(json_path.name.replace(".summary.json", ".reparsed.summary.json"))
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
    if not args.no_plots:
        draw_plots(args.log, csv_path, rows, parsed.job, args.quiet)
    if refused is not None:
        print(f"ERROR: {refused} has {before} trial row(s) and this parse found {len(rows)}: it was NOT "
              f"replaced; the new CSV is {csv_path} (wrong log, or a Ray log without its "
              f"trials.jsonl? pass --records)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
