#!/usr/bin/env python3
"""Break it: apply each exercise's patch to a copy of the project, train one laptop-tier trial, and
record what the outputs show — the reference symptoms of docs/06-break-it.md and its answer key.

Run (from the repository root; ~5 min on 2 CPU cores; your checkout is never modified):
    python exercises/break_it.py                    # the baseline + all three patches -> exercises/results.json
    python exercises/break_it.py --check            # only check that every patch still applies (seconds)
    python exercises/break_it.py --epochs 2         # quicker, weaker symptoms

A learner does the same by hand: `git apply exercises/01-labels-on-prompt.patch`, run
`python scripts/train.py --profile tiny --output-dir outputs/broken`, read the log, `git apply -R …`.

Each run trains the tiny profile's default trial (`scripts/train.py --profile tiny`) from a copy of
the tracked files with the patch applied, imported ahead of the installed package (PYTHONPATH).
Runs with weight decay 0 and 0.01 exist for the weight-decay exercise, whose symptom is that the two
are identical. results.json holds per run: the patch, the weight decay, eval loss, EM, F1 and the
optimizer's real param groups.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "exercises"
PATCHES = {  # name -> patch file; the order of the exercises
    "labels": "01-labels-on-prompt.patch",
    "weight_decay": "02-no-weight-decay.patch",
    "padding": "03-right-padding.patch",
}
# (run name, patch or None, weight decay)
RUNS = [("baseline", None, 0.0), ("baseline_wd", None, 0.01), ("labels", "labels", 0.0),
        ("weight_decay", "weight_decay", 0.01), ("padding", "padding", 0.0)]


def copy_tree(dest: Path) -> None:
    """The tracked files of the checkout (as they are on disk now) into dest."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def apply(patch: str, tree: Path, check_only: bool = False) -> str | None:
    """None if the patch applies to tree (and is applied unless check_only), else git's message."""
    cmd = ["git", "apply", "--check" if check_only else "--verbose", str(HERE / patch)]
    r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or r.stdout.strip())


def check_all() -> list[str]:
    """One message per patch that no longer applies to the current files."""
    errors = []
    with tempfile.TemporaryDirectory() as d:
        copy_tree(Path(d))
        for name, patch in PATCHES.items():
            if not (HERE / patch).is_file():
                errors.append(f"{patch}: missing")
            elif (err := apply(patch, Path(d), check_only=True)) is not None:
                errors.append(f"{patch} does not apply to the current code: {err}")
    return errors


def run_one(name: str, patch: str | None, wd: float, epochs: float, scratch: Path) -> dict:
    tree = scratch / name
    tree.mkdir()
    copy_tree(tree)
    if patch and (err := apply(PATCHES[patch], tree)) is not None:
        raise RuntimeError(f"{PATCHES[patch]}: {err}")
    out = scratch / f"{name}-out"
    env = {**os.environ, "PYTHONPATH": str(tree) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(tree / "scripts" / "train.py"), "--profile", "tiny", "--epochs", f"{epochs:g}",
           "--weight-decay", f"{wd:g}", "--output-dir", str(out), "--trial-id", name]
    print(f"[break-it] {name}: {' '.join(cmd[1:])}", flush=True)
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: train.py exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    opt = [line for line in r.stdout.splitlines() if "[trial] optimizer" in line]
    return {"run": name, "patch": PATCHES.get(patch), "weight_decay": wd, "epochs": m["epochs"],
            "eval_loss": m["eval_loss"], "exact_match": m["exact_match"], "f1": m["f1"],
            "eval_tokens": m.get("history", [{}])[-1].get("eval_tokens"),
            "optimizer_param_groups": m.get("optimizer_param_groups"),
            "optimizer_line": opt[0].strip() if opt else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="break_it.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that every patch applies")
    ap.add_argument("--epochs", type=float, default=4, help="epochs per run [4, the tiny profile's]")
    ap.add_argument("--out", default=str(HERE / "results.json"), help="[exercises/results.json]")
    args = ap.parse_args(argv)
    errors = check_all()
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if errors or args.check:
        if not errors:
            print(f"all {len(PATCHES)} patches apply")
        return 2 if errors else 0
    results = []
    with tempfile.TemporaryDirectory(prefix="hpo-break-it-") as d:
        for name, patch, wd in RUNS:
            try:
                results.append(run_one(name, patch, wd, args.epochs, Path(d)))
            except RuntimeError as e:
                print(f"ERROR: {e}", file=sys.stderr)
                return 1
            r = results[-1]
            print(f"[break-it] {name}: eval_loss={r['eval_loss']:.4f} EM={r['exact_match']:.1f} F1={r['f1']:.1f} "
                  f"eval_tokens={r['eval_tokens']}", flush=True)
    Path(args.out).write_text(json.dumps({"epochs": args.epochs, "runs": results}, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
