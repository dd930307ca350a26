"""How efficient is each HPO method? The four methods on the laptop tier, over several search seeds.

Run:  python bench/bench_hpo.py --seeds 0,1,2                # runs every method x seed (~12 min per seed, 2 cores)
      python bench/bench_hpo.py --from-csvs logs/*/*local-demo-20261203-115933.csv        # reuse, run nothing
      python bench/bench_hpo.py --seeds 0,1,2 --from-csvs logs/*/*<seed-0 job>.csv         # run seeds 1 and 2 only
      python bench/bench_hpo.py --seeds 0,1 --dry-run         # print the launches, run nothing
      python bench/bench_hpo.py --from-csvs ... --out-dir /tmp/hpo-bench

What it does:
  1. For every method (manual, asha, pbt, bayesopt) and search seed s that --from-csvs does not already
     hold, it launches the method's real launcher on this machine, as scripts/demo.sh does
     (`HPO_JOB_ID=<id> bash experiments/<method>/run.slurm --seed s`, laptop tier: tiny model, CPU; the
     same questions for all, --data-seed stays 0), and reads the job's CSV (logs/<method>/hpo-<method>-<id>.csv).
  2. Per method and seed: the best trial (hpo.report.best_row: lowest eval loss, any status) — its eval
     loss and F1; the total device-hours of the method's trials (CPU-h on the laptop tier, GPU-h when
     trials held GPUs: hpo.report.cost_basis); and the COST TO REACH THE GRID'S BEST: the trials'
     hours summed in CSV row order (the order they started: hpo.report.cumulative_best) up to and
     including the first trial whose eval loss is <= the manual grid's best eval loss of the same seed
     ("never" if no trial gets there).
  3. Per method: median and range (min - max) over the seeds; a markdown table that says, per method,
     in how many seeds it reached and beat the grid; bench/results/hpo_efficiency.json (one entry per
     method and seed) and bench/results/hpo_efficiency.png.

What "seed" means: --seed of the driver. For ASHA, PBT and BayesOpt it seeds the search (which
configurations are sampled, perturbed, suggested) and every trial's training (data order, any
initialisation). The manual grid has no search to seed: its seed is the training seed of all its runs
(`--seed s`), so in seed s every method trains with training seed s, and the grid's spread over the
seeds is the training noise that a method must beat to count.
Reused CSVs must come from the same code and options as the new runs: a job from before
--group-by-length (e.g. logs/*/*local-demo-20261203-115933.csv) trained in another batch order, so
with new seeds either rerun its seed too or pass --driver-args "--no-group-by-length".
A result file with more entries than this run measured is never replaced (bench/_results.py).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("manual", "asha", "pbt", "bayesopt")


class BenchError(Exception):
    """Inputs that cannot be benchmarked; the message says what and how to fix it."""


# ----------------------------------------------------------------------------- the runs
def runs_from_csvs(paths) -> dict[tuple[str, int], dict]:
    """{(method, seed): {"csv", "rows"}} from results CSVs. A CSV may hold several seeds (a manual
    grid run with --seeds 0,1,2): its rows are split by their seed column."""
    from hpo.report import CompareError, load_csvs
    try:
        by_method = load_csvs(paths)          # the comparison's own reader: same checks, same messages
    except CompareError as e:
        raise BenchError(f"--from-csvs: {e}") from None
    runs: dict[tuple[str, int], dict] = {}
    for p, rows in (f for files in by_method.values() for f in files):
        for r in rows:
            if r["seed"] is None:
                raise BenchError(f"{p}: trial {r['trial_id']} has no seed")
            key = (r["method"], r["seed"])
            run = runs.setdefault(key, {"csv": str(p), "rows": []})
            if run["csv"] != str(p):
                raise BenchError(f"method {key[0]} seed {key[1]} is in two CSVs ({run['csv']} and {p}): "
                                 "give one job per method and seed")
            run["rows"].append(r)
    return runs


def launch_command(method: str, seed: int, driver_args: list[str]) -> list[str]:
    return ["bash", str(ROOT / "experiments" / method / "run.slurm"), "--seed", str(seed), *driver_args]


def launch(method: str, seed: int, job_id: str, log_root: Path, driver_args: list[str]) -> Path:
    """Run one method's launcher on this machine (laptop tier) and return the CSV it wrote."""
    env = dict(os.environ, HPO_JOB_ID=job_id, HPO_LOG_ROOT=str(log_root), SLURM_JOB_ID="")
    log = log_root / method / f"hpo-{method}-{job_id}.out"
    print(f"[bench] {method} seed {seed}: {shlex.join(launch_command(method, seed, driver_args))}  (log: {log})",
          flush=True)
    t0 = time.time()
    p = subprocess.run(launch_command(method, seed, driver_args), cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv = log.with_suffix(".csv")
    if not csv.is_file():
        raise BenchError(f"{method} seed {seed} wrote no CSV (exit {p.returncode}): see {log}")
    print(f"[bench] {method} seed {seed}: exit {p.returncode} after {time.time() - t0:.0f} s -> {csv}", flush=True)
    return csv


# ----------------------------------------------------------------------------- the numbers
def hours_to_reach(rows, target: float, basis: str) -> float | None:
    """Device-hours in CSV row order up to and including the first trial with eval_loss <= target;
    None if none gets there."""
    from hpo.report import cumulative_best
    for point in cumulative_best(rows, basis):
        if point["eval_loss"] is not None and point["eval_loss"] <= target:
            return point["hours"]
    return None


def spread(values) -> dict:
    """Median and range over seeds; None = "never" (counts as worse than any number)."""
    done = sorted(v for v in values if v is not None)
    ranked = done + [math.inf] * (len(values) - len(done))
    med = statistics.median(ranked) if ranked else None
    return {"median": None if med is None or math.isinf(med) else med,
            "min": done[0] if done else None,
            "max": None if len(done) < len(values) or not done else done[-1],
            "n": len(values), "n_never": len(values) - len(done)}


def aggregate(runs: dict, seeds: list[int], methods=METHODS) -> tuple[list[dict], dict, str]:
    """(entries: one per method and seed, summary: per method over the seeds, basis "CPU"/"GPU")."""
    from hpo.report import best_row, cost_basis
    missing = [f"{m} seed {s}" for s in seeds for m in methods if (m, s) not in runs]
    if missing:
        raise BenchError(f"no results for {', '.join(missing)} (give its job's CSV with --from-csvs, or "
                         "--seeds to run what is missing)")
    all_rows = [r for s in seeds for m in methods for r in runs[(m, s)]["rows"]]
    prints = {r["data_fingerprint"] for r in all_rows if r.get("data_fingerprint")}
    if len(prints) > 1:
        raise BenchError(f"the runs used different questions (data fingerprints {sorted(prints)}): their eval "
                         "losses cannot be compared; run every method with the same --data-seed, "
                         "--train-samples, --eval-samples and --dataset")
    basis = cost_basis(all_rows)
    col = "gpu_hours" if basis == "GPU" else "cpu_hours"
    entries = []
    for s in seeds:
        grid_best = best_row(runs[("manual", s)]["rows"])
        if grid_best is None:
            raise BenchError(f"the manual grid of seed {s} ({runs[('manual', s)]['csv']}) has no finite eval loss")
        target = grid_best["eval_loss"]
        for m in methods:
            rows = runs[(m, s)]["rows"]
            best = best_row(rows)
            reach = hours_to_reach(rows, target, basis)
            entries.append({
                "method": m, "seed": s, "csv": runs[(m, s)]["csv"], "job_id": rows[0]["job_id"],
                "n_trials": len(rows), "best_trial": best and best["trial_id"],
                "best_eval_loss": best and best["eval_loss"], "best_f1": best and best["f1"],
                "total_hours": sum(r[col] for r in rows if r.get(col) is not None),
                "grid_best_eval_loss": target, "hours_to_grid_best": reach, "reached_grid_best": reach is not None,
                "beat_grid": best is not None and best["eval_loss"] < target,
                "data_fingerprint": next(iter(prints), None)})
    summary = {}
    for m in methods:
        es = [e for e in entries if e["method"] == m]
        summary[m] = {"seeds": [e["seed"] for e in es],
                      "best_eval_loss": spread([e["best_eval_loss"] for e in es]),
                      "best_f1": spread([e["best_f1"] for e in es]),
                      "total_hours": spread([e["total_hours"] for e in es]),
                      "hours_to_grid_best": spread([e["hours_to_grid_best"] for e in es]),
                      "reached_grid_best": sum(e["reached_grid_best"] for e in es),
                      "beat_grid": sum(e["beat_grid"] for e in es)}
    return entries, summary, basis


def _fmt(s: dict, spec: str) -> str:
    """`median [min – max]`, with "never" where seeds never got there."""
    def one(v):
        return "never" if v is None else format(v, spec)
    if s["n"] == 1:
        return one(s["median"])
    return f"{one(s['median'])} [{one(s['min'])} – {one(s['max'])}]"


def markdown(summary: dict, basis: str) -> str:
    """The table, then one honest sentence per method against the grid."""
    n = max(len(v["seeds"]) for v in summary.values())
    lines = [f"| method | seeds | best eval loss | F1 of the best trial | total {basis}-h "
             f"| {basis}-h to reach the grid's best | reached the grid's best | beat the grid's best |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {','.join(map(str, s['seeds']))} | {_fmt(s['best_eval_loss'], '.4f')} | "
                     f"{_fmt(s['best_f1'], '.1f')} | {_fmt(s['total_hours'], '.3f')} | "
                     f"{_fmt(s['hours_to_grid_best'], '.3f')} | {s['reached_grid_best']} of {len(s['seeds'])} | "
                     + ("(the yardstick)" if m == "manual" else f"{s['beat_grid']} of {len(s['seeds'])}") + " |")
    lines.append("")
    lines.append(f"Median [min – max] over {n} search seed(s); \"never\": in that seed no trial reached the "
                 "manual grid's best eval loss. Cost = the trials' hours in the order they started, up to the "
                 "first trial at or below the grid's best of the same seed.")
    grid = summary.get("manual")
    for m, s in summary.items():
        if m == "manual" or grid is None:
            continue
        k, total = s["reached_grid_best"], len(s["seeds"])
        if k == 0:
            lines.append(f"- **{m} did not reach the grid's best eval loss in any of {total} seed(s)** "
                         f"(its best: {_fmt(s['best_eval_loss'], '.4f')}).")
            continue
        cheaper = (s["hours_to_grid_best"]["median"] is not None and grid["hours_to_grid_best"]["median"]
                   is not None and s["hours_to_grid_best"]["median"] < grid["hours_to_grid_best"]["median"])
        lines.append(f"- {m}: reached the grid's best in {k} of {total} seed(s)"
                     + ("" if k == total else f" — NOT in {total - k}")
                     + f", beat it in {s['beat_grid']} of {total}; median cost to reach it "
                     f"{_fmt(s['hours_to_grid_best'], '.3f')} {basis}-h, the grid needed "
                     f"{_fmt(grid['hours_to_grid_best'], '.3f')} to find it"
                     + (" (cheaper)." if cheaper else " (NOT cheaper than the grid)."))
    return "\n".join(lines)


def plot(entries: list[dict], basis: str, path: Path) -> None:
    """Left: each method and seed, best eval loss minus the grid's best (below 0: beat the grid) against
    the total cost. Right: the cost to reach the grid's best, per seed (x at the edge: never)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = list(dict.fromkeys(e["method"] for e in entries))
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    reached = [e["hours_to_grid_best"] for e in entries if e["hours_to_grid_best"] is not None]
    never_x = 1.15 * max(reached + [e["total_hours"] for e in entries] + [1e-6])
    for i, m in enumerate(methods):
        es = [e for e in entries if e["method"] == m]
        left.scatter([e["total_hours"] for e in es], [e["best_eval_loss"] - e["grid_best_eval_loss"] for e in es],
                     color=colours[m], label=m)
        for e in es:
            left.annotate(f"s{e['seed']}", (e["total_hours"], e["best_eval_loss"] - e["grid_best_eval_loss"]),
                          fontsize=7, xytext=(3, 3), textcoords="offset points")
            hit = e["hours_to_grid_best"] is not None
            right.scatter([e["hours_to_grid_best"] if hit else never_x], [i], color=colours[m],
                          marker="o" if hit else "x")
    left.axhline(0, color="grey", lw=0.8, ls="--")
    left.set_xlabel(f"total {basis}-h of the method's trials")
    left.set_ylabel("best eval loss − grid's best (same seed)")
    left.set_title("quality vs cost (below 0: beat the grid)")
    left.legend(fontsize=8)
    right.set_yticks(range(len(methods)), methods)
    right.axvline(never_x / 1.15 * 1.07, color="grey", lw=0.8, ls=":")
    right.text(never_x, len(methods) - 0.5, "never", ha="center", fontsize=8)
    right.set_xlabel(f"{basis}-h until the first trial at or below the grid's best")
    right.set_title("cost to reach the grid's best eval loss (x: never)")
    right.set_ylim(-0.5, len(methods) - 0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", help="comma list of search seeds to have [default: those in --from-csvs]")
    ap.add_argument("--from-csvs", nargs="+", default=[], metavar="CSV",
                    help="results CSVs of earlier jobs: their (method, seed) are not run again")
    ap.add_argument("--log-root", default=str(ROOT / "logs"),
                    help="where launched jobs write logs/CSVs (<log root>/<method>/) [default: logs]")
    ap.add_argument("--driver-args", default="", help="extra options for every launch, e.g. '--epochs 2' "
                                                      "(then compare only with CSVs run the same way)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"),
                    help="hpo_efficiency.json and .png go here [default: bench/results]")
    ap.add_argument("--dry-run", action="store_true", help="print the launches that are needed, run nothing")
    a = ap.parse_args(argv)
    try:
        a.seeds = sorted({int(s) for s in a.seeds.split(",") if s.strip()}) if a.seeds else None
    except ValueError:
        ap.error(f"--seeds: '{a.seeds}' is not a comma list of integers")
    if a.seeds is not None and not a.seeds:
        ap.error("--seeds: empty list")
    if a.seeds is None and not a.from_csvs:
        ap.error("give --seeds (to run), --from-csvs (to reuse), or both")
    try:
        a.driver_args = shlex.split(a.driver_args)
    except ValueError as e:
        ap.error(f"--driver-args: {e}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save
    try:
        runs = runs_from_csvs(a.from_csvs)
        seeds = a.seeds if a.seeds is not None else sorted({s for _, s in runs})
        # only --seeds launches jobs; --from-csvs alone compares what is there (aggregate names a gap)
        todo = [(m, s) for s in seeds for m in METHODS if (m, s) not in runs] if a.seeds is not None else []
        if todo:
            print(f"[bench] {len(todo)} job(s) to run (~4 min each on 2 cores): "
                  + ", ".join(f"{m} seed {s}" for m, s in todo), flush=True)
        if a.dry_run:
            for m, s in todo:
                print(f"HPO_JOB_ID=bench-hpo-<time>-s{s} HPO_LOG_ROOT={a.log_root} "
                      + shlex.join(launch_command(m, s, a.driver_args)))
            return 0
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for m, s in todo:
            csv = launch(m, s, f"bench-hpo-{stamp}-s{s}", Path(a.log_root), a.driver_args)
            runs.update({k: v for k, v in runs_from_csvs([csv]).items() if k == (m, s)})
        entries, summary, basis = aggregate(runs, seeds)
    except BenchError as e:
        print(f"bench_hpo.py: error: {e}", file=sys.stderr)
        return 2
    print(markdown(summary, basis))
    out = Path(a.out_dir)
    doc = {"what": "HPO efficiency of the four methods over search seeds (bench/bench_hpo.py)",
           "basis": f"{basis}-hours", "seeds": seeds,
           "seed_meaning": "the driver's --seed: search + training seed for ASHA/PBT/BayesOpt, the training "
                           "seed of every run for the manual grid",
           "cost_to_grid_best": "trials' hours in CSV row order up to the first trial with eval_loss <= the "
                                "manual grid's best eval loss of the same seed (null: never)",
           "summary": summary, "entries": entries}
    written, rc = save(out / "hpo_efficiency.json", doc)
    png = written.with_suffix(".png")
    plot(entries, basis, png)
    print(f"\nwrote {written} and {png}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
