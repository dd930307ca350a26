"""The shared trial (hpo/trial.py) as a Ray Tune function trainable.

Run:  nothing to run; every Ray driver passes `trainable.make(args)` to `tune.Tuner(...)`.

What a trial does, whatever the method:
  * builds its TrialConfig from the driver's options and the hyperparameters Tune chose
    (hpo.config.trial_config_from: the same names as scripts/train.py);
  * after every evaluation (one per epoch) calls `ray.tune.report(metrics, checkpoint=...)`,
    with eval_loss, exact_match and f1 in every report — so a trial that ASHA stops early
    still has its EM/F1 — and a checkpoint (weights + trial_state.json);
  * starts from `tune.get_checkpoint()` when Tune gives one: a paused PBT member resuming, or
    a PBT exploit (another trial's checkpoint: recorded in exploits.jsonl for the lineage table);
  * 1 GPU (or CPU) per trial: runs in the Tune trial's own process; more GPUs per trial:
    on Ray Train workers (hpo/search/distributed.py), one per GPU, the Tune trial their driver.
Current Ray 2.60 APIs only: `ray.tune.report/get_checkpoint/get_context` inside trials.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from hpo.config import trial_config_from


def make(args, to_hparams=None):
    """The trial function with its resources attached.

    to_hparams(config) -> {"learning_rate", "batch_size", "weight_decay"} maps a search
    algorithm's own parameters (BayesOpt's log10_learning_rate, ...) to the trial's; default: as is.
    """
    decode = to_hparams or (lambda c: c)
    from ray import tune

    state_dir = args.job_dir / "trial_state"

    def hpo_trial(search_config: dict):
        config = decode(search_config)
        ctx = tune.get_context()
        trial_id = ctx.get_trial_id()
        t_start = time.time()
        state_dir.mkdir(parents=True, exist_ok=True)
        # What this trial last reported (PBT: a member's lr/wd before an exploit changes them);
        # a file, because a paused and resumed trial is a new process.
        own = state_dir / f"{trial_id}.json"
        before = json.loads(own.read_text()) if own.exists() else {}
        wall_before = before.get("wall_s", 0.0)       # a paused/resumed trial keeps counting its own time

        def report(metrics: dict, save) -> None:
            _inject_fault(args.job_dir, trial_id, metrics)
            wall = wall_before + time.time() - t_start
            own.write_text(json.dumps({"wall_s": wall, "learning_rate": config["learning_rate"],
                                       "weight_decay": config["weight_decay"], "epoch": metrics["epoch"],
                                       "eval_loss": metrics["eval_loss"]}))
            with tempfile.TemporaryDirectory(prefix="ckpt-") as d:
                save(d)
                tune.report({**metrics, "trial_wall_s": wall, "node": os.uname().nodename},
                            checkpoint=tune.Checkpoint.from_directory(d))

        out_dir = str(Path(ctx.get_trial_dir()) / "trial")
        ckpt = tune.get_checkpoint()
        # (returns nothing: a value returned by a Tune function becomes one more, final "result")
        if ckpt is None:
            _run(args, config, trial_id, out_dir, None, report, t_start)
            return
        with ckpt.as_directory() as d:
            st = json.loads((Path(d) / "trial_state.json").read_text())
            if st.get("trial_id") != trial_id:       # PBT exploit: another trial's weights
                _record_exploit(args.job_dir, trial_id, st, before, config)
            _run(args, config, trial_id, out_dir, d, report, t_start)

    if on_ray_train(args):
        # The trial is only a driver; its Ray Train workers hold the GPUs (Tune does not see them:
        # max_concurrent_trials = GPUs // GPUs per trial keeps the drivers from queuing for them).
        resources = {"cpu": driver_cpus(args), "gpu": 0}
    else:
        resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    return tune.with_resources(hpo_trial, resources)


def on_ray_train(args) -> bool:
    """More than one GPU per trial (or HPO_TRIAL_LAUNCHER=raytrain, the tests' CPU route):
    the trial runs on Ray Train workers, one per GPU."""
    return args.gpus_per_trial > 1 or os.environ.get("HPO_TRIAL_LAUNCHER") == "raytrain"


def driver_cpus(args) -> float:
    """CPUs the Tune trial itself holds when its work runs on Ray Train workers."""
    return min(1.0, args.cpus_per_trial / 2)


def _inject_fault(job_dir: Path, trial_id: str, metrics: dict) -> None:
    """For the tests of the failure path: HPO_INJECT_FAULT="once:<trial number>,always:<n>" makes trial
    number n (the last digits of its id) raise at its second evaluation — once (then it is retried
    from its first checkpoint and completes) or every time (it ends as error). Off when unset."""
    spec = os.environ.get("HPO_INJECT_FAULT")
    if not spec or metrics.get("epoch", 0) < 2:
        return
    number = int(trial_id.rsplit("_", 1)[-1])
    for item in spec.split(","):
        mode, _, n = item.partition(":")
        if int(n) != number:
            continue
        marker = job_dir / "faults" / trial_id
        if mode == "always" or (mode == "once" and not marker.exists()):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            raise RuntimeError(f"injected fault (HPO_INJECT_FAULT={spec}) in trial {trial_id}")


def _record_exploit(job_dir: Path, trial_id: str, donor_state: dict, before: dict, config: dict) -> None:
    """One line in exploits.jsonl: who copied whom, at which epoch, lr/wd before and after."""
    st = donor_state
    event = {"time": time.time(), "trial_id": trial_id, "donor_id": st.get("trial_id"),
             "epoch": st.get("epochs_done"), "donor_eval_loss": st.get("eval_loss"),
             "old_learning_rate": before.get("learning_rate"), "old_weight_decay": before.get("weight_decay"),
             "old_eval_loss": before.get("eval_loss"),
             "donor_learning_rate": st["hparams"]["learning_rate"],
             "donor_weight_decay": st["hparams"]["weight_decay"],
             "new_learning_rate": config["learning_rate"], "new_weight_decay": config["weight_decay"],
             "donor_global_step": st.get("global_step"),
             "donor_weights_fingerprint": st.get("weights_fingerprint")}
    with open(job_dir / "exploits.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")
    print(f"[tune] exploit: trial {trial_id} continues from {st.get('trial_id')}'s weights at epoch "
          f"{st.get('epochs_done'):g}, learning_rate {before.get('learning_rate', float('nan')):.3g} -> "
          f"{config['learning_rate']:.3g}", flush=True)


def _run(args, config, trial_id, out_dir, resume_from, report, t_start):
    cfg = trial_config_from(
        args, learning_rate=float(config["learning_rate"]), batch_size=int(config["batch_size"]),
        weight_decay=float(config["weight_decay"]), output_dir=out_dir, trial_id=trial_id,
        num_threads=max(1, int(args.cpus_per_trial)), resume_from=resume_from)
    if on_ray_train(args):
        from hpo.search.distributed import run_on_ray_train
        workers = max(int(args.gpus_per_trial), 1)
        return run_on_ray_train(cfg, num_workers=workers, use_gpu=args.gpus_per_trial >= 1,
                                cpus_per_worker=(args.cpus_per_trial - driver_cpus(args)) / workers,
                                report=report, storage_path=str(args.job_dir / "train"),
                                # Tune's checkpoints on the shared FS are readable by every worker as they are
                                stage_resume=not str(resume_from or "").startswith(str(args.job_dir)))
    from hpo.trial import run_trial
    return run_trial(cfg, report, started_at=t_start)
