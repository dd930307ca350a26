"""Writing a benchmark's result file without ever replacing it with a smaller one.

Use (nothing to run): from the bench scripts (python bench/<name>.py puts bench/ on the path)
    from _results import write_results
    path, refused = write_results(Path("bench/results/padding.json"), {"entries": [...], ...})

A result file holds a list of measurements under "entries". A rerun that measured fewer entries
(fewer batch sizes, seeds, methods) than the file already holds must not wipe the others out:
the new file is written beside it (<name>.new.json) and `refused` names the old one, so the
script can say so and exit 1 — the same rule as scripts/parse_logs.py for the results CSVs.
"""
from __future__ import annotations

import json
from pathlib import Path

from hpo.schema import atomic_write_text


def existing_entries(path: Path) -> int | None:
    """How many entries the file at `path` holds; None if there is no file; -1 if it is unreadable
    (then it is not replaced either: someone should look at it)."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return len(doc["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def write_results(path, doc: dict) -> tuple[Path, Path | None]:
    """Write `doc` (a dict with an "entries" list) as JSON to `path`, atomically; if `path` holds
    more entries (or cannot be read), write `<stem>.new.json` beside it instead.
    Returns (the path written, the path that was NOT replaced or None)."""
    path = Path(path)
    before = existing_entries(path)
    refused = None
    if before is not None and (before < 0 or before > len(doc["entries"])):
        refused, path = path, path.with_name(path.stem + ".new.json")
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path, refused


def refusal_message(refused: Path, written: Path, n_new: int) -> str:
    before = existing_entries(refused)
    held = "cannot be read" if before == -1 else f"holds {before} entries"
    return (f"ERROR: {refused} {held} and this run measured {n_new}: it was NOT replaced; "
            f"the new results are in {written}")


def save(path, doc: dict) -> tuple[Path, int]:
    """write_results, and on a refusal the message on stderr: (the path written, the exit status)."""
    import sys
    written, refused = write_results(path, doc)
    if refused is not None:
        print(refusal_message(refused, written, len(doc["entries"])), file=sys.stderr)
        return written, 1
    return written, 0
