"""The options every Ray driver shares, and the resource arithmetic behind their defaults.

Run:  nothing to run; `python experiments/asha/driver.py --help` shows what this builds.

A driver's options come in four groups:
  * budget    — --num-samples, --max-concurrent, --gpus-per-trial, --cpus-per-trial, --profile, --smoke;
  * search    — --learning-rate-min/--learning-rate-max, --batch-sizes, --weight-decays
                (defaults: the profile's search space in hpo/config.py);
  * trial     — every other TrialConfig field (--epochs, --seed, --model, --dataset, --deepspeed, ...),
                generated from hpo/config.py, so a trial option has the same name and meaning in
                scripts/train.py, the manual grid and every Ray method;
  * the method's own (added by the driver: --grace-period, --perturbation-interval, ...).
`parse_args` only parses and checks: bad input exits 2 with one clear message, before Ray starts.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path

from hpo.config import HYPERPARAMETERS, PROFILES, SMOKE, TrialConfig, absolute_paths, add_trial_options


REPO = Path(__file__).resolve().parents[2]


class SearchSpaceError(ValueError):
    pass


def parse_args(method: str, argv=None, add_method_args=None) -> argparse.Namespace:
    """The shared options + the method's own (add_method_args(parser)); exits 2 on bad input."""
    ap = argparse.ArgumentParser(prog=f"experiments/{method}/driver.py",
                                 description=f"{method}: Ray Tune over the shared trial (hpo/trial.py)")
    g = ap.add_argument_group("budget (sbatch experiments/<method>/run.slurm --num-samples 12 ...)")
    g.add_argument("--num-samples", type=int,
                   help="trials (PBT: population size) [" + ", ".join(
                       f"{p}: {PROFILES[p].trials.get(method)}" for p in PROFILES) + f", smoke: {SMOKE['trials']}]")
    g.add_argument("--max-concurrent", type=int, help="concurrent trials [default: what the allocation holds]")
    g.add_argument("--gpus-per-trial", type=float, help="[default: 1 on a GPU cluster, 0 on the laptop tier]")
    g.add_argument("--cpus-per-trial", type=float, help="[default: the allocation's CPUs / concurrent trials]")
    g.add_argument("--max-failures", type=int, default=2,
                   help="restarts of a crashed trial (OOM, NCCL, lost node) from its last checkpoint before it "
                        "is recorded as error [default: 2]")
    add_resume_options(g)
    g.add_argument("--smoke", action="store_true",
                   help=f"tiny budget for tests: {SMOKE['trials']} trials x {SMOKE['epochs']} epochs on "
                        f"{SMOKE['train_samples']}/{SMOKE['eval_samples']} questions")
    s = ap.add_argument_group("search space [default: the profile's, hpo/config.py]")
    s.add_argument("--learning-rate-min", type=float)
    s.add_argument("--learning-rate-max", type=float)
    s.add_argument("--batch-sizes", help="comma list, per device")
    s.add_argument("--weight-decays", help="comma list")
    add_trial_options(ap, exclude=HYPERPARAMETERS, run_fields=False, defaults_from_config=False,
                      title="trial (the same options as scripts/train.py)")
    if add_method_args:
        add_method_args(ap)
    args = ap.parse_args(argv)
    args.profile = args.profile or os.environ.get("HPO_PROFILE") or "tiny"
    try:
        _finish(args, method)
    except (SearchSpaceError, ValueError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    return args


def add_resume_options(group) -> None:
    """--resume and --requeue, the same for every driver (the manual grid's too)."""
    group.add_argument("--resume", metavar="JOB", default=os.environ.get("HPO_RESUME") or None,
                       help="continue an interrupted search: the job id or job directory of the earlier job "
                            "(its log's last lines print this command); give the same options as then")
    group.add_argument("--requeue", action="store_true",
                       help="on the walltime/preemption warning the job requeues itself and resumes under the "
                            "same id (for preemptible partitions; read by run.slurm)")


def job_dir(method: str) -> Path:
    """Where a job writes its per-trial outputs and records: $HPO_JOB_DIR (set by experiments/common.sh,
    on the shared filesystem), or logs/<method>/local for a driver started by hand."""
    return Path(os.environ.get("HPO_JOB_DIR") or REPO / "logs" / method / "local").resolve()


def apply_smoke(a) -> None:
    """--smoke: the SMOKE sample and epochs wherever the command line left them unset."""
    if a.smoke:
        for k in ("train_samples", "eval_samples", "epochs"):
            if getattr(a, k) is None:
                setattr(a, k, SMOKE[k])


def seed_search(seed: int) -> None:
    """Tune's random sampling and PBT's perturbations draw from Python's and NumPy's global
    generators: seeding them makes the same --seed give the same trial configurations."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)


def comma_list(text, kind, name):
    try:
        vals = [kind(v) for v in str(text).replace(" ", ",").split(",") if v]
    except ValueError:
        raise SearchSpaceError(f"--{name}: '{text}' is not a comma list of {kind.__name__}s") from None
    if not vals:
        raise SearchSpaceError(f"--{name}: empty list")
    return vals


def _finish(a, method: str) -> None:
    if a.profile not in PROFILES:
        raise ValueError(f"--profile must be one of {', '.join(PROFILES)}, not '{a.profile}'")
    profile = PROFILES[a.profile]
    a.method = method
    # where Tune and the trial records write: the job's directory on the shared filesystem
    a.job_dir = job_dir(method)
    apply_smoke(a)                          # budget: command line > --smoke > profile
    if a.epochs is None:
        a.epochs = profile.trial["epochs"]
    if a.seed is None:                     # seeds the search and every trial (hpo/config.py's default)
        a.seed = TrialConfig().seed
    if a.num_samples is None:
        a.num_samples = SMOKE["trials"] if a.smoke else profile.trials[method]
    # search space
    space = profile.space
    a.learning_rate_min = a.learning_rate_min if a.learning_rate_min is not None else space.learning_rate[0]
    a.learning_rate_max = a.learning_rate_max if a.learning_rate_max is not None else space.learning_rate[1]
    if not (0 < a.learning_rate_min < a.learning_rate_max and math.isfinite(a.learning_rate_max)):
        raise SearchSpaceError(f"bad search space: need 0 < --learning-rate-min < --learning-rate-max, "
                               f"got {a.learning_rate_min:g} .. {a.learning_rate_max:g}")
    a.batch_sizes = comma_list(a.batch_sizes, int, "batch-sizes") if a.batch_sizes else list(space.batch_size)
    a.weight_decays = (comma_list(a.weight_decays, float, "weight-decays") if a.weight_decays
                       else list(space.weight_decay))
    if any(b < 1 for b in a.batch_sizes):
        raise SearchSpaceError(f"bad search space: --batch-sizes must be >= 1, got {a.batch_sizes}")
    if any(w < 0 for w in a.weight_decays):
        raise SearchSpaceError(f"bad search space: --weight-decays must be >= 0, got {a.weight_decays}")
    if a.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {a.num_samples}")
    if a.max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {a.max_failures}")
    # one Tune iteration = one evaluation = one epoch: whole epochs only
    if a.epochs < 1 or a.epochs != int(a.epochs):
        raise ValueError(f"--epochs must be a whole number >= 1 for a search, got {a.epochs:g}")
    a.epochs = int(a.epochs)
    if a.deepspeed and not Path(a.deepspeed).is_file():
        raise ValueError(f"--deepspeed: config file not found: {a.deepspeed}")
    absolute_paths(a)
    a.resume_dir = resume_dir(a.resume, method) if a.resume else None
    _resources(a)


def resume_dir(value: str, method: str) -> Path:
    """The job directory of an earlier job, from its id (logs/<method>/<name>-<id>/) or its path."""
    p = Path(value).expanduser()
    if not p.is_dir():
        # where job directories are: beside this job's log (the same #SBATCH --output), the
        # laptop tier's log root, the repository's logs/<method>/
        places = [Path(os.environ["HPO_LOG"]).parent] if os.environ.get("HPO_LOG") else []
        places += [Path(os.environ.get("HPO_LOG_ROOT") or REPO / "logs") / method, REPO / "logs" / method]
        found = sorted({d.resolve() for place in places for d in place.glob(f"*-{value}") if d.is_dir()})
        if len(found) != 1:
            raise ValueError(f"--resume {value}: {'no' if not found else 'more than one'} job directory "
                             f"*-{value} in {', '.join(map(str, dict.fromkeys(places)))}"
                             + (f" ({', '.join(map(str, found))})" if found else "")
                             + "; give the job id of an earlier job of this method, or its directory")
        p = found[0]
    if method != "manual" and not (p / method / "tuner.pkl").is_file():
        raise ValueError(f"--resume {value}: {p} holds no {method} search to continue (no {method}/tuner.pkl)")
    return p.resolve()


def job_cpus() -> int:
    """The CPUs this job may use: the allocation's (HPO_CPUS, set by experiments/common.sh) or,
    started by hand, this machine's."""
    return int(os.environ.get("HPO_CPUS") or 0) or os.cpu_count() or 1


def _resources(a) -> None:
    """GPUs/CPUs per trial and concurrency from what the allocation holds (set by
    experiments/common.sh) or, started by hand, from this machine."""
    gpus_total = int(os.environ.get("HPO_GPUS", "0"))
    cpus_total = job_cpus()
    if a.gpus_per_trial is None:
        a.gpus_per_trial = 1.0 if gpus_total > 0 and cuda_on_nodes() else 0.0
    if a.gpus_per_trial < 0 or (a.gpus_per_trial > 1 and a.gpus_per_trial != int(a.gpus_per_trial)):
        raise ValueError(f"--gpus-per-trial must be a fraction <= 1 or a whole number, got {a.gpus_per_trial}")
    slots = int(gpus_total // a.gpus_per_trial) if a.gpus_per_trial > 0 else None
    if a.cpus_per_trial is None and not slots and a.method == "pbt":
        # PBT ranks the members against each other at every perturbation: on CPUs the whole
        # population runs at once, sharing the cores (tiny profile: 4 members x 0.5 CPU on 2 cores).
        a.cpus_per_trial = cpus_total / a.num_samples
    if a.cpus_per_trial is None:
        a.cpus_per_trial = max(1.0, cpus_total // (slots or cpus_total)) if slots else 1.0
    if a.cpus_per_trial <= 0:
        raise ValueError(f"--cpus-per-trial must be > 0, got {a.cpus_per_trial}")
    if a.max_concurrent is None:
        a.max_concurrent = max(1, slots if slots else int(cpus_total // a.cpus_per_trial))
    if a.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {a.max_concurrent}")
    warn_shared_gpu(a)


def model_parameters(model: str | None) -> int | None:
    """About how many parameters a model has, from its config.json: a local model directory, or the
    copy under configs/ for a hub id (configs/bloom-560m/ for bigscience/bloom-560m); None if unknown.
    12 x layers x hidden^2 (attention + MLP) + vocabulary x hidden (embeddings): BLOOM-560M 0.56 B."""
    import json
    if not model or model == "tiny":
        return None
    for cfg in (Path(model).expanduser() / "config.json", REPO / "configs" / Path(model).name / "config.json"):
        try:
            c = json.loads(cfg.read_text())
            h = c.get("hidden_size") or c.get("n_embed") or c["n_embd"]
            layers = c.get("num_hidden_layers") or c["n_layer"]
            return int(12 * layers * h * h + c["vocab_size"] * h)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def warn_shared_gpu(a) -> None:
    """--gpus-per-trial below 1 puts several trials on one GPU. Ray only counts: it does not divide the
    GPU's memory, so with a model larger than the tiny one say what each trial needs and where to see
    what it used (peak_memory_gib, printed by every trial)."""
    if not 0 < a.gpus_per_trial < 1:
        return
    model = a.model or PROFILES[a.profile].trial["model"]
    n = model_parameters(model)
    if model == "tiny" or (n is not None and n < 1e8):     # small: many fit (an unknown model: say it)
        return
    need = (f" (~{n / 1e9:.2f} B parameters: ~{16 * n / 2**30:.0f} GiB for fp32 weights, gradients and AdamW "
            "moments before any activations)" if n else "")
    print(f"[tune] WARNING: --gpus-per-trial {a.gpus_per_trial:g} puts up to {int(1 // a.gpus_per_trial)} trials "
          f"on one GPU, and nothing divides its memory between them: every trial of {model}{need} must fit "
          "beside the others. Each trial prints its peak memory (peak_memory_gib in its [eval] lines and "
          "metrics.json); bench/bench_fractional.py measures 1, 2 and 4 trials per GPU. A trial that runs "
          "out of memory is retried (--max-failures) and then recorded as error.", flush=True)


def cuda_on_nodes() -> bool:
    """True when the GPUs the job holds are real (the local practice cluster's are emulated).
    experiments/common.sh decides it once (HPO_CUDA); a driver started by hand probes itself."""
    if os.environ.get("HPO_CUDA") in ("0", "1"):
        return os.environ["HPO_CUDA"] == "1"
    return shutil.which("nvidia-smi") is not None


def banner(args, extra: str = "") -> None:
    print(f"[tune] {args.method}: {args.num_samples} trials x <= {args.epochs} epochs, "
          f"{args.max_concurrent} at a time, {args.gpus_per_trial:g} GPU + {args.cpus_per_trial:g} CPU per trial; "
          f"learning_rate {args.learning_rate_min:g}..{args.learning_rate_max:g} (log), "
          f"batch_size {args.batch_sizes}, weight_decay {args.weight_decays}; profile {args.profile}{extra}",
          flush=True)


def print_resume_command(args) -> None:
    """The exact command that continues this search (the last lines of an interrupted job's log)."""
    import shlex
    import sys
    job = os.environ.get("HPO_JOB_ID") or str(getattr(args, "job_dir", "?"))
    argv, skip = [], False
    for a in sys.argv[1:]:                    # the same options, without an earlier --resume
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            argv.append(a)
    launcher = "sbatch" if os.environ.get("HPO_TIER") == "cluster" else "bash"
    print(f"[job] RESUME this search with: {launcher} experiments/{args.method}/run.slurm "
          f"{shlex.join(argv + ['--resume', job])}", flush=True)
