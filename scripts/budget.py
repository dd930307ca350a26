#!/usr/bin/env python
"""The GPU-hours the workshop's jobs can take, from the #SBATCH lines of experiments/*/run.slurm.

Run:  python scripts/budget.py                              # per job, and per student
      python scripts/budget.py --students 30                # ... and for a class of 30
      python scripts/budget.py --students 30 --team-size 3  # teams of 3 share one set of jobs
      python scripts/budget.py --experiments DIR            # another directory of <job>/run.slurm

Per job:     nodes x GPUs per node x time limit — what SLURM reserves for it at most. A job that
             ends early is charged its elapsed time only (its JOB SUMMARY says how much it used),
             so every figure here is an UPPER bound: the one to ask a centre for.
Per student: one job of each directory (the setup check and the four methods).
Per class:   one set of jobs per team: ceil(students / team size) sets.
The requests are read as SLURM reads them: `#SBATCH` lines up to the first command of the script;
--nodes/-N, --time/-t, and the GPUs from --gres=gpu[:type]:N or --gpus-per-node (per node) or
--gpus/-G (for the whole job). Options given to sbatch on the command line or in SBATCH_*
variables override these lines, and are not seen here. Prints a markdown table. Exit 2 on bad input.
"""
from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("check", "manual", "asha", "pbt", "bayesopt")     # the session's order; other jobs follow by name


class BudgetError(ValueError):
    pass


@dataclass
class Job:
    name: str
    path: Path
    nodes: int
    gpus_per_node: float
    hours: float
    time_text: str

    @property
    def gpu_hours(self) -> float:
        return self.nodes * self.gpus_per_node * self.hours


def sbatch_tokens(text: str) -> list[str]:
    """The options of every #SBATCH line, in order, up to the first command (where sbatch stops reading them)."""
    tokens = []
    for line in text.splitlines():
        s = line.strip()
        if not s or (s.startswith("#") and not s.startswith("#SBATCH")):
            continue                     # blank lines, comments and the #! line do not end the block
        if not s.startswith("#SBATCH"):
            break
        words = shlex.split(s[len("#SBATCH"):], comments=True)   # what follows a ' #' is a comment
        tokens += words
    return tokens


def parse_time(text: str) -> float:
    """SLURM's --time formats -> hours: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    t = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", t)
    if not m or t.upper() in ("UNLIMITED", "INFINITE"):
        raise BudgetError(f"time limit '{text}' is not a SLURM time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                          "D-HH:MM:SS); an unlimited job has no upper bound")
    days, a, b, c = m.groups()
    if days is not None:                       # D-H, D-H:M, D-H:M:S
        h, mi, s = int(a), int(b or 0), int(c or 0)
        return int(days) * 24 + h + mi / 60 + s / 3600
    if b is None:                              # M
        return int(a) / 60
    if c is None:                              # M:S
        return int(a) / 60 + int(b) / 3600
    return int(a) + int(b) / 60 + int(c) / 3600   # H:M:S


def _gpu_count(spec: str, option: str) -> float | None:
    """GPUs in a --gres list (gpu, gpu:2, gpu:a100:2, gpu:2,shard:1) or a --gpus* value ([type:]N)."""
    total, found = 0, False
    for item in spec.split(","):
        parts = item.strip().split(":")
        if option == "--gres":
            if parts[0].split("/")[-1] != "gpu":
                continue
            parts = parts[1:]
        found = True
        count = parts[-1] if parts else "1"
        if option == "--gres" and not count.isdigit():
            count = "1"                        # gpu:a100 = one GPU of that type
        if not count.isdigit():
            raise BudgetError(f"{option}={spec}: cannot read a GPU count")
        total += int(count)
    return total if found else None


def read_job(path: Path) -> Job:
    ap = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    ap.add_argument("-N", "--nodes")
    ap.add_argument("-t", "--time")
    ap.add_argument("--gres")
    ap.add_argument("--gpus-per-node")
    ap.add_argument("-G", "--gpus")
    try:
        opts, _ = ap.parse_known_args(sbatch_tokens(path.read_text()))
    except (argparse.ArgumentError, ValueError) as e:
        raise BudgetError(f"{path}: cannot read its #SBATCH lines: {e}") from None
    name = path.parent.name
    nodes_text = opts.nodes or "1"
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", nodes_text)
    if not m:
        raise BudgetError(f"{path}: --nodes={nodes_text} is not a node count (N or MIN-MAX)")
    nodes = int(m.group(2) or m.group(1))      # a range: it may get the maximum
    if nodes < 1:
        raise BudgetError(f"{path}: --nodes must be >= 1, got {nodes_text}")
    if not opts.time:
        raise BudgetError(f"{path}: no '#SBATCH --time': the partition's default limit applies, which this "
                          "script cannot know; add one")
    try:
        hours = parse_time(opts.time)
    except BudgetError as e:
        raise BudgetError(f"{path}: {e}") from None
    try:
        if opts.gpus is not None:              # for the whole job
            per_node = _gpu_count(opts.gpus, "--gpus") / nodes
        elif opts.gpus_per_node is not None:
            per_node = _gpu_count(opts.gpus_per_node, "--gpus-per-node")
        else:
            per_node = _gpu_count(opts.gres, "--gres") if opts.gres else 0
    except BudgetError as e:
        raise BudgetError(f"{path}: {e}") from None
    return Job(name, path, nodes, float(per_node or 0), hours, opts.time)


def find_jobs(experiments: Path) -> list[Job]:
    files = sorted(experiments.glob("*/run.slurm"))
    if not files:
        raise BudgetError(f"no */run.slurm under {experiments}: give --experiments the directory that holds "
                          "<job>/run.slurm (the repository's experiments/)")
    jobs = [read_job(f) for f in files]
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(jobs, key=lambda j: (rank.get(j.name, len(ORDER)), j.name))


def _hms(hours: float) -> str:
    s = round(hours * 3600)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _n(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.2f}"


def table(jobs: list[Job], students: int | None, team_size: int) -> str:
    per_student = sum(j.gpu_hours for j in jobs)
    lines = ["| job | nodes | GPUs per node | time limit | GPU-h (upper bound) |",
             "|---|--:|--:|--:|--:|"]
    for j in jobs:
        lines.append(f"| {j.name} | {j.nodes} | {_n(j.gpus_per_node)} | {_hms(j.hours)} | {j.gpu_hours:.2f} |")
    lines.append(f"| **per student**: one of each ({len(jobs)} jobs) | | | | **{per_student:.2f}** |")
    if students:
        sets = math.ceil(students / team_size)
        who = f"{students} students" + (f" in teams of {team_size} = {sets} sets of jobs" if team_size > 1 else "")
        lines.append(f"| **per class**: {who} | | | | **{sets * per_student:.2f}** |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/budget.py",
                                 description="GPU-hours (upper bound) per job, per student and per class, "
                                             "from the #SBATCH lines of experiments/*/run.slurm.")
    ap.add_argument("--students", type=int, help="class size: adds the per-class row")
    ap.add_argument("--team-size", type=int, default=1,
                    help="students sharing one set of jobs (when GPUs are short) [default: 1]")
    ap.add_argument("--experiments", type=Path, default=ROOT / "experiments",
                    help="directory of <job>/run.slurm [default: the repository's experiments/]")
    args = ap.parse_args(argv)
    if args.students is not None and args.students < 1:
        ap.error(f"--students must be >= 1, got {args.students}")
    if args.team_size < 1:
        ap.error(f"--team-size must be >= 1, got {args.team_size}")
    if args.students is not None and args.team_size > args.students:
        ap.error(f"--team-size {args.team_size} is larger than the class (--students {args.students})")
    if args.team_size > 1 and args.students is None:
        ap.error("--team-size needs --students")
    try:
        jobs = find_jobs(args.experiments)
    except BudgetError as e:
        print(f"scripts/budget.py: error: {e}", file=sys.stderr)
        return 2
    print(table(jobs, args.students, args.team_size))
    print("\nUpper bounds: nodes x GPUs per node x time limit of each run.slurm. SLURM charges the time a job "
          "really ran; each job's JOB SUMMARY prints its own GPU-hours.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
