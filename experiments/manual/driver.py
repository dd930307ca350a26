"""Manual grid: every combination of a few hand-picked values, each run to its last epoch.

Run:  sbatch experiments/manual/run.slurm [--learning-rates 1e-5,2e-4 --epochs 3 ...]   (cluster tier)
      bash experiments/manual/run.slurm                                                 (laptop tier)
      sbatch experiments/manual/run.slurm --best-of logs/asha/hpo-asha-123.csv --seeds 0,1,2   (noise floor)
`--help` lists every option. Sections: 1 options, 2 search space, 3 scheduler,
4 the runs (the other methods: Tuner(...).fit()), 5 results — the same as every method's driver,
so `diff experiments/manual/driver.py experiments/asha/driver.py` shows only the method.

This is the baseline the other methods are measured against: no Ray, no early stopping —
each combination is one `scripts/train.py` run to the last epoch, on one GPU like a Ray trial
(`--gpus-per-run N`: data-parallel under `torchrun`, e.g. with DeepSpeed ZeRO-2), one after another;
on a CPU-only machine (the laptop tier) one run per CPU at a time, like the Ray trials there
(`--runs-at-once`). Each run is its own process, in its own output directory, so one failing
combination does not stop the grid (hpo/runs.py). Each run is framed by `===== RUN k/n START/END =====`
lines; after the job the parser (scripts/parse_logs.py) turns them into the results CSV.
"""
import argparse
import itertools
import json
import os
import shutil
import sys
from pathlib import Path

from hpo import runs
from hpo.config import (HYPERPARAMETERS, PROFILES, SMOKE, TrialConfig, absolute_paths, add_trial_options,
                        trial_config_from)
from hpo.report import best_row, describe_best
from hpo.schema import make_row, read_csv
from hpo.search.options import (SearchSpaceError, add_resume_options, apply_smoke, comma_list, job_cpus,
                                print_resume_command, resume_dir)
from hpo.search.options import job_dir as options_job_dir

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- 1. options
def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="experiments/manual/driver.py",
                                 description="manual grid: one run per combination, each to its last epoch")
    g = ap.add_argument_group("the grid [default: the profile's, hpo/config.py]")
    g.add_argument("--learning-rates", help="comma list")
    g.add_argument("--batch-sizes", help="comma list, per device")
    g.add_argument("--weight-decays", help="comma list")
    g.add_argument("--seeds", help="comma list [default: --seed]")
    g.add_argument("--best-of", metavar="CSV", help="one combination: the best trial (lowest eval_loss) "
                                                    "of an earlier job's CSV (with --seeds: the noise floor)")
    g.add_argument("--smoke", action="store_true",
                   help=f"tiny budget for tests: 2 runs x {SMOKE['epochs']} epochs on {SMOKE['train_samples']}/"
                        f"{SMOKE['eval_samples']} questions")
    add_resume_options(g)        # --resume: finished runs are not run again, an interrupted one continues
    g.add_argument("--no-checkpoints", action="store_true",
                   help="do not keep each run's latest training state (then --resume reruns an interrupted "
                        "run from its start; BLOOM-560M: saves ~6.7 GB writes per epoch)")
    g.add_argument("--runs-at-once", type=int,
                   help="runs trained at the same time [default: on a CPU-only machine (the laptop tier) one "
                        "per CPU, each with one CPU thread, like the Ray methods' trials there; otherwise 1]")
    g.add_argument("--gpus-per-run", type=int, default=1,
                   help="GPUs of the node each run uses, data-parallel under torchrun [default: 1, like one "
                        "Ray trial, so a run here and a trial there are the same training run; with N > 1 "
                        "the global batch is batch_size x N — add --deepspeed deepspeed_configs/zero2.json "
                        "and ask sbatch for --gres=gpu:N]")
    add_trial_options(ap, exclude=HYPERPARAMETERS, run_fields=False, defaults_from_config=False,
                      title="each run (the same options as scripts/train.py)")
    a = ap.parse_args(argv)
    a.method = "manual"
    a.profile = a.profile or os.environ.get("HPO_PROFILE") or "tiny"
    apply_smoke(a)                    # command line > --smoke > profile
    try:
        grid = PROFILES[a.profile].grid
        # --smoke: two runs (the profile's first two learning rates, first batch size and weight decay)
        n = 1 if a.smoke else None
        a.learning_rates = comma_list(a.learning_rates, float, "learning-rates") if a.learning_rates \
            else list(grid.learning_rate)[:2 if a.smoke else None]
        a.batch_sizes = comma_list(a.batch_sizes, int, "batch-sizes") if a.batch_sizes \
            else list(grid.batch_size)[:n]
        a.weight_decays = comma_list(a.weight_decays, float, "weight-decays") if a.weight_decays \
            else list(grid.weight_decay)[:n]
        a.seeds = comma_list(a.seeds, int, "seeds") if a.seeds else [a.seed if a.seed is not None else TrialConfig().seed]
        if a.best_of:
            best = best_of(a.best_of)
            a.learning_rates, a.batch_sizes, a.weight_decays = \
                [best["learning_rate"]], [best["batch_size"]], [best["weight_decay"]]
            print(f"[job] --best-of {a.best_of}: trial {best['trial_id']} (learning_rate={best['learning_rate']:g} "
                  f"batch_size={best['batch_size']} weight_decay={best['weight_decay']:g})", flush=True)
        if a.deepspeed == "none":
            a.deepspeed = None
        if a.gpus_per_run < 1:
            raise SearchSpaceError(f"--gpus-per-run must be >= 1, got {a.gpus_per_run}")
        # On a CPU-only machine the job's CPUs are its devices: one run per CPU, one thread each, as
        # the Ray methods run their trials there — so a grid run and a trial cost the same CPU-hours.
        # With GPUs (and on the cluster tier) each run holds its GPU(s): one at a time.
        one_at_a_time = os.environ.get("HPO_TIER") == "cluster" or int(os.environ.get("HPO_GPUS_PER_NODE") or 0)
        if a.runs_at_once is None:
            a.runs_at_once = 1 if one_at_a_time else job_cpus()
        elif a.runs_at_once < 1:
            raise SearchSpaceError(f"--runs-at-once must be >= 1, got {a.runs_at_once}")
        elif a.runs_at_once > 1 and one_at_a_time:
            raise SearchSpaceError("--runs-at-once > 1 is for a CPU-only machine (the laptop tier); with GPUs "
                                   "each run holds its GPU(s) and the grid runs one at a time")
        absolute_paths(a)
        a.resume_dir = resume_dir(a.resume, "manual") if a.resume else None
        if a.deepspeed and not Path(a.deepspeed).is_file():
            raise SearchSpaceError(f"--deepspeed: DeepSpeed config not found: {a.deepspeed}")
    except (SearchSpaceError, ValueError, KeyError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    return a


def best_of(csv_path: str) -> dict:
    if not Path(csv_path).is_file():
        raise SearchSpaceError(f"--best-of: CSV not found: {csv_path}")
    try:
        row = best_row(read_csv(csv_path))
    except (OSError, ValueError) as e:
        raise SearchSpaceError(f"--best-of {csv_path}: {e}") from None
    if row is None:
        raise SearchSpaceError(f"--best-of {csv_path}: no trial with a finite eval_loss")
    return row


def main(argv=None) -> int:
    args = parse_args(argv)

    # ------------------------------------------------------------------------- 2. search space
    grid = list(itertools.product(args.seeds, args.learning_rates, args.batch_sizes, args.weight_decays))
    n = len(grid)
    print(f"[job] grid ({args.profile} profile): learning_rate {args.learning_rates} x batch_size "
          f"{args.batch_sizes} x weight_decay {args.weight_decays} x seed {args.seeds} = {n} runs", flush=True)

    # ------------------------------------------------------------------------- 3. scheduler
    # Each run to its last epoch, one rank per GPU it uses (--gpus-per-run), one run after another.
    # The local practice cluster's GPUs are emulated (no CUDA behind them): then each run is one CPU rank.
    node_gpus = int(os.environ.get("HPO_GPUS_PER_NODE", "0"))
    gpus = min(args.gpus_per_run, node_gpus)
    if node_gpus and args.gpus_per_run > node_gpus:
        print(f"[job] WARNING: --gpus-per-run {args.gpus_per_run} but the node has {node_gpus} GPU(s): "
              f"using {node_gpus}", flush=True)
    if gpus and os.environ.get("HPO_CUDA") == "0":
        print(f"[job] {node_gpus} GPU(s) allocated but no nvidia-smi here (emulated GPUs?): one CPU rank per run",
              flush=True)
        gpus = 0
    launch = [sys.executable]
    if gpus or args.deepspeed:      # torchrun even for one CPU rank: DeepSpeed needs its rank environment
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        launch = [torchrun, "--standalone", f"--nproc_per_node={max(gpus, 1)}"]
    if os.environ.get("HPO_TIER") == "cluster" and shutil.which("srun"):
        # each run its own job step: `sacct -j <job>` shows every run's time and memory
        # (inside a container srun is not there, and the run starts directly)
        step = ["srun", "--nodes=1", "--ntasks=1", f"--cpus-per-task={os.environ.get('HPO_CPUS_PER_NODE', '1')}"]
        if node_gpus:
            step.append(f"--gres=gpu:{min(args.gpus_per_run, node_gpus)}")
        launch = step + launch
    cpus = job_cpus()
    at_once = args.runs_at_once                     # several at a time: the job's CPUs shared out among them
    threads = {} if at_once == 1 else {"num_threads": args.num_threads or max(1, cpus // at_once)}
    run_cpus = threads.get("num_threads", cpus)
    print(f"[job] each run: {' '.join(launch)} scripts/train.py "
          f"{' '.join(trial_config_from(args, **threads).to_argv())}", flush=True)
    print(f"[job] {at_once} run(s) at a time, {gpus or 0} GPU + {run_cpus} CPU each", flush=True)
    job_dir = options_job_dir("manual")
    # plain python runs on Linux: forked from this process (hpo/runs.py); macOS's system libraries
    # are not safe to use in a child forked after they were loaded, so there each run starts afresh
    fork = launch == [sys.executable] and sys.platform.startswith("linux")
    if fork:
        runs.preload()
        print("[job] the training stack (torch, transformers, ...) is imported once here; each run is a "
              "process forked from this one (hpo/runs.py), so no run pays those imports", flush=True)

    # ------------------------------------------------------------------------- 4. the runs
    runner = runs.GridRunner(at_once, fork=fork, on_stop=lambda: print_resume_command(args))
    prev = args.resume_dir
    if prev:
        prev_job = next((json.loads(f.read_text()).get("job_id") for f in sorted(prev.glob("*/run.json"))), None)
        print(f"[job] RESUMED from job {prev_job or prev.name} ({prev}): finished runs are not run again, "
              "an interrupted one continues from its last checkpoint", flush=True)
    for k, (seed, lr, bs, wd) in enumerate(grid, start=1):
        trial = f"run{k:02d}_lr{lr:g}_bs{bs}_wd{wd:g}" + (f"_s{seed}" if len(args.seeds) > 1 else "")
        run_dir = job_dir / trial
        cfg = trial_config_from(args, learning_rate=lr, batch_size=bs, weight_decay=wd, seed=seed,
                                trial_id=trial, output_dir=str(run_dir), **threads,
                                checkpoint_dir=None if args.no_checkpoints else str(run_dir / "checkpoint"))
        run = runs.Run(k, n, trial, run_dir, {
            "learning_rate": lr, "batch_size": bs, "weight_decay": wd, "seed": seed,
            "epochs_planned": cfg.value("epochs"), "gpus": os.environ.get("HPO_GPUS", "0"), "cpus": run_cpus})
        earlier = runs.earlier_run(prev, trial)
        if earlier.get("metrics"):           # finished in the earlier job: its result, its time, once
            runner.done_earlier(run, earlier["metrics"], earlier.get("wall_s") or 0.0)
            continue
        note = None
        if earlier.get("checkpoint"):        # interrupted there: continue from its last checkpoint
            note = f"[job] {trial} was interrupted in the earlier job: continuing from {earlier['checkpoint']}"
            cfg.resume_from = earlier["checkpoint"]
        run.earlier_wall_s = earlier.get("wall_s") or 0.0       # its time in both jobs
        run.cmd = launch + [str(REPO / "scripts" / "train.py")] + cfg.to_argv()
        runner.submit(run, note)
    runner.finish()
    records, failed = runner.records, runner.failed

    # ------------------------------------------------------------------------- 5. results
    print(f"[job] grid done: {n - failed}/{n} runs succeeded", flush=True)
    rows = [make_row(method="manual", trial_id=r["trial_id"], status="completed",
                     **{k: r.get(k) for k in (*HYPERPARAMETERS, "seed", "epochs", "eval_loss", "exact_match", "f1")})
            for r in records]
    best = best_row(rows)
    if best is not None:
        print(f"[job] {describe_best(best)}", flush=True)
    return 0 if failed < n else 1           # the job fails only if every run failed


if __name__ == "__main__":
    sys.exit(main())
