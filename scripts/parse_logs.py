#!/usr/bin/env python3
"""Parse a job's log into the results CSV and print its JOB SUMMARY and result table.

Run (from the repository root; no install needed):
    python scripts/parse_logs.py logs/manual/hpo-manual-4815162.out
    python scripts/parse_logs.py logs/asha/hpo-asha-4815170.out \\
        --records logs/asha/hpo-asha-4815170/trials.jsonl
Options:
    --records FILE       rows from a Ray driver's trials.jsonl instead of the log's RUN blocks
    --csv OUT            CSV path (default: the log path with .csv)
    --summary-json OUT   summary JSON path (default: the CSV path with .summary.json)
    --quiet              print only warnings and the CSV path

Warnings (lines that did not parse, with line numbers) go to stderr. Exit status:
0 = CSV written (also with warnings), 2 = usage error or missing/empty log (an
existing CSV is left untouched), 1 = the outputs could not be written.

The launchers run this after the JOB FINISH line, so every .out file ends with
its summary. All the logic lives in hpo/results.py (`main`).
"""
import sys
from pathlib import Path

# Run from a checkout without `pip install -e .`: the repository root holds hpo/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpo.results import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
