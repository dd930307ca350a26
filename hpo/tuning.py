"""Ray Tune glue shared by the ASHA, PBT and Bayesian-optimisation drivers.

Run:  nothing to run; `experiments/<method>/driver.py` imports it. What stays in the
drivers is the lesson (search space, scheduler/search algorithm, `Tuner(...).fit()`);
what lives here is what must be right once:

* `parse_args`   — the budget knobs every driver shares (trials, epochs, concurrency,
                   GPUs/CPUs per trial, search ranges, smoke mode), checked with clear errors;
* `trainable`    — the shared trial (hpo.trial.run_trial) as a Tune function trainable:
                   `ray.tune.report(metrics, checkpoint=...)` after every evaluation, with
                   eval_loss, exact_match and f1 in every report; restores `tune.get_checkpoint()`
                   weights (PBT exploit, paused trials); 1 GPU/CPU trial in-process, a
                   multi-GPU trial as `torchrun` inside the trial on a STRICT_PACK placement group;
* `run_config`   — results under a fixed name on the shared filesystem: $HPO_JOB_DIR/<method>;
* `finish`       — after fit(): one row per trial in the parser's schema (trials.jsonl, which
                   the launcher turns into logs/<method>/<job>-<id>.csv), the best trial printed.
Current Ray 2.60 APIs only: `ray.tune.report/get_checkpoint/get_context` inside trials
(`ray.train.*` there fails under Train V2), absolute `storage_path`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpo.trial import PROFILES, TrialConfig

ROOT = Path(__file__).resolve().parent.parent

# Search ranges per profile: the workshop range brackets the manual grid (5e-6 .. 2e-4);
# the tiny model learns at ~100x larger learning rates and batch sizes.
SPACE = {
    "workshop": {"lr": (5e-6, 2e-4), "batch_sizes": [1, 2], "weight_decays": [0.0, 0.01]},
    "tiny": {"lr": (3e-4, 1e-2), "batch_sizes": [8, 16], "weight_decays": [0.0, 0.01]},
}


class SearchSpaceError(ValueError):
    pass


# ----------------------------------------------------------------------------- options
def parse_args(method: str, argv=None, add_method_args=None, budget: dict | None = None):
    """The shared budget knobs + the method's own (add_method_args(parser)); exits 2 on bad input.

    budget: {"tiny": {...}, "workshop": {...}, "smoke": {...}} — the method's default
    budget per profile (smoke applies on top with --smoke); the command line wins.
    """
    ap = argparse.ArgumentParser(prog=f"experiments/{method}/driver.py",
                                 description=f"{method}: Ray Tune over the shared trial",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("budget (sbatch experiments/<method>/run.slurm --num-samples 12 ...)")
    g.add_argument("--num-samples", type=int, help="trials (PBT: population size)")
    g.add_argument("--epochs", type=int, help="max epochs per trial = evaluations = Tune iterations")
    g.add_argument("--max-concurrent", type=int, help="concurrent trials (default: what the allocation holds)")
    g.add_argument("--gpus-per-trial", type=float, help="default 1 on a GPU cluster, 0 on the laptop tier")
    g.add_argument("--cpus-per-trial", type=float, help="default: the allocation's CPUs / concurrent trials")
    g.add_argument("--profile", default=os.environ.get("HPO_PROFILE", "tiny"), choices=list(PROFILES))
    g.add_argument("--seed", type=int, default=0, help="seed of the search (and of each trial's data order)")
    s = ap.add_argument_group("search space")
    s.add_argument("--lr-min", type=float)
    s.add_argument("--lr-max", type=float)
    s.add_argument("--batch-sizes", help="comma list, per device")
    s.add_argument("--weight-decays", help="comma list")
    t = ap.add_argument_group("trial")
    t.add_argument("--train-samples", type=int)
    t.add_argument("--eval-samples", type=int)
    t.add_argument("--model")
    t.add_argument("--dataset")
    t.add_argument("--deepspeed", help="DeepSpeed config for the trials (multi-GPU trials: zero2/zero3)")
    t.add_argument("--smoke", action="store_true", help="tiny budget for tests: few samples, short trials")
    if add_method_args:
        add_method_args(ap)
    args = ap.parse_args(argv)
    # Ray workers are new processes: make sure they import this project's hpo/ too
    # (the launchers export it already; this covers `python experiments/<m>/driver.py`).
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in paths if p])
    import random
    import numpy as np
    random.seed(args.seed)          # Tune's samplers draw from the global generators:
    np.random.seed(args.seed)       # the same --seed gives the same trial configurations
    budget = budget or {}
    for layer in (budget.get("smoke", {}) if args.smoke else {}, budget.get(args.profile, {})):
        for k, v in layer.items():
            if getattr(args, k, None) is None:
                setattr(args, k, v)
    try:
        _finish_args(args, method)
    except (SearchSpaceError, ValueError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    return args


def _csv(text, kind, name):
    try:
        vals = [kind(v) for v in str(text).replace(" ", ",").split(",") if v]
    except ValueError:
        raise SearchSpaceError(f"--{name}: '{text}' is not a comma list of {kind.__name__}s") from None
    if not vals:
        raise SearchSpaceError(f"--{name}: empty list")
    return vals


def _finish_args(a, method: str) -> None:
    space = SPACE[a.profile]
    a.method = method
    a.lr_min = a.lr_min if a.lr_min is not None else space["lr"][0]
    a.lr_max = a.lr_max if a.lr_max is not None else space["lr"][1]
    if not (0 < a.lr_min < a.lr_max and math.isfinite(a.lr_max)):
        raise SearchSpaceError(f"bad search space: need 0 < --lr-min < --lr-max, got {a.lr_min:g} .. {a.lr_max:g}")
    a.batch_sizes = _csv(a.batch_sizes, int, "batch-sizes") if a.batch_sizes else space["batch_sizes"]
    a.weight_decays = _csv(a.weight_decays, float, "weight-decays") if a.weight_decays else space["weight_decays"]
    if any(b < 1 for b in a.batch_sizes):
        raise SearchSpaceError(f"bad search space: --batch-sizes must be >= 1, got {a.batch_sizes}")
    if any(w < 0 for w in a.weight_decays):
        raise SearchSpaceError(f"bad search space: --weight-decays must be >= 0, got {a.weight_decays}")
    if a.smoke:
        a.train_samples = a.train_samples or 160
        a.eval_samples = a.eval_samples or 16
    if a.num_samples is not None and a.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {a.num_samples}")
    if a.epochs is not None and a.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {a.epochs}")
    if a.deepspeed and not Path(a.deepspeed).is_file():
        raise ValueError(f"--deepspeed: config file not found: {a.deepspeed}")
    # Resources: what the allocation holds (set by experiments/common.sh) or this machine.
    gpus_total = int(os.environ.get("HPO_GPUS", "0"))
    cpus_total = int(os.environ.get("HPO_CPUS", "0")) or os.cpu_count() or 1
    if a.gpus_per_trial is None:
        a.gpus_per_trial = 1.0 if gpus_total > 0 and _cuda_on_nodes() else 0.0
    if a.gpus_per_trial < 0 or (a.gpus_per_trial > 1 and a.gpus_per_trial != int(a.gpus_per_trial)):
        raise ValueError(f"--gpus-per-trial must be a fraction <= 1 or a whole number, got {a.gpus_per_trial}")
    slots = int(gpus_total // a.gpus_per_trial) if a.gpus_per_trial > 0 else None
    if a.cpus_per_trial is None:
        a.cpus_per_trial = max(1.0, cpus_total // (slots or cpus_total)) if slots else 1.0
    if a.cpus_per_trial <= 0:
        raise ValueError(f"--cpus-per-trial must be > 0, got {a.cpus_per_trial}")
    if a.max_concurrent is None:
        a.max_concurrent = max(1, slots if slots else int(cpus_total // a.cpus_per_trial))
    if a.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {a.max_concurrent}")


def _cuda_on_nodes() -> bool:
    """True when the GPUs the job holds are real (the local practice cluster's are emulated).
    experiments/common.sh decides it once (HPO_CUDA); a driver started by hand probes itself."""
    if os.environ.get("HPO_CUDA") in ("0", "1"):
        return os.environ["HPO_CUDA"] == "1"
    return shutil.which("nvidia-smi") is not None


def banner(args, extra: str = "") -> None:
    print(f"[tune] {args.method}: {args.num_samples} trials x <= {args.epochs} epochs, "
          f"{args.max_concurrent} at a time, {args.gpus_per_trial:g} GPU + {args.cpus_per_trial:g} CPU per trial; "
          f"lr {args.lr_min:g}..{args.lr_max:g} (log), batch size {args.batch_sizes}, "
          f"weight decay {args.weight_decays}; profile {args.profile}{extra}", flush=True)


# ----------------------------------------------------------------------------- the trainable
def _trial_config(args, config: dict, trial_id: str, out_dir: str, resume_from: str | None) -> TrialConfig:
    return TrialConfig(
        profile=args.profile, model=args.model, dataset=args.dataset,
        train_samples=args.train_samples, eval_samples=args.eval_samples, epochs=args.epochs,
        learning_rate=float(config["learning_rate"]), batch_size=int(config["batch_size"]),
        weight_decay=float(config["weight_decay"]), seed=args.seed, deepspeed=args.deepspeed,
        lr_scheduler=getattr(args, "lr_scheduler", "linear"), output_dir=out_dir, trial_id=trial_id,
        num_threads=max(1, int(args.cpus_per_trial)), resume_from=resume_from)


def trainable(args, to_hparams=None):
    """The shared trial as a Tune function trainable, with its resources attached.

    to_hparams(config) -> {"learning_rate", "batch_size", "weight_decay"} maps a search
    algorithm's own parameters (BayesOpt's log10_lr, ...) to the trial's; default: as is.
    """
    decode = to_hparams or (lambda c: c)
    from ray import tune

    job_dir = _job_dir(args)
    state_dir = job_dir / "trial_state"

    def hpo_trial(search_config: dict):
        config = decode(search_config)
        ctx = tune.get_context()
        trial_id = ctx.get_trial_id()
        t_start = time.time()
        state_dir.mkdir(parents=True, exist_ok=True)
        own = state_dir / f"{trial_id}.json"
        before = json.loads(own.read_text()) if own.exists() else {}
        wall_before = before.get("wall_s", 0.0)       # a paused/resumed trial keeps counting its own time

        def report(metrics: dict, save) -> None:
            wall = wall_before + time.time() - t_start
            own.write_text(json.dumps({"wall_s": wall, "learning_rate": config["learning_rate"],
                                       "weight_decay": config["weight_decay"], "epoch": metrics["epoch"],
                                       "eval_loss": metrics["eval_loss"]}))
            with tempfile.TemporaryDirectory(prefix="ckpt-") as d:
                save(d)
                tune.report({**metrics, "trial_wall_s": wall, "node": os.uname().nodename},
                            checkpoint=tune.Checkpoint.from_directory(d))

        ckpt = tune.get_checkpoint()
        out_dir = str(Path(ctx.get_trial_dir()) / "trial")
        # (returns nothing: a value returned by a Tune function becomes one more, final "result")
        if ckpt is None:
            _run(args, config, trial_id, out_dir, None, report)
            return
        with ckpt.as_directory() as d:
            st = json.loads((Path(d) / "trial_state.json").read_text())
            if st.get("trial_id") != trial_id:       # PBT exploit: another trial's weights
                event = {"time": time.time(), "trial_id": trial_id, "donor_id": st.get("trial_id"),
                         "epoch": st.get("epochs_done"), "donor_eval_loss": st.get("eval_loss"),
                         "old_learning_rate": before.get("learning_rate"),
                         "old_weight_decay": before.get("weight_decay"),
                         "old_eval_loss": before.get("eval_loss"),
                         "donor_learning_rate": st["hparams"]["learning_rate"],
                         "donor_weight_decay": st["hparams"]["weight_decay"],
                         "new_learning_rate": config["learning_rate"], "new_weight_decay": config["weight_decay"],
                         "donor_weights_fingerprint": st.get("weights_fingerprint")}
                with open(job_dir / "exploits.jsonl", "a") as f:
                    f.write(json.dumps(event) + "\n")
                print(f"[tune] exploit: trial {trial_id} continues from {st.get('trial_id')}'s weights at epoch "
                      f"{st.get('epochs_done'):g}, lr {before.get('learning_rate', float('nan')):.3g} -> "
                      f"{config['learning_rate']:.3g}", flush=True)
            _run(args, config, trial_id, out_dir, d, report)

    if args.gpus_per_trial > 1:
        # A multi-GPU trial: all its GPUs on one node (torchrun --standalone inside the trial).
        resources = tune.PlacementGroupFactory(
            [{"CPU": args.cpus_per_trial, "GPU": args.gpus_per_trial}], strategy="STRICT_PACK")
    else:
        resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    return tune.with_resources(hpo_trial, resources)


def _run(args, config, trial_id, out_dir, resume_from, report):
    cfg = _trial_config(args, config, trial_id, out_dir, resume_from)
    nproc = int(args.gpus_per_trial) if args.gpus_per_trial > 1 else 0
    if nproc or os.environ.get("HPO_TRIAL_LAUNCHER") == "torchrun":
        return run_torchrun_trial(cfg, max(nproc, 1), report)
    from hpo.trial import run_trial
    return run_trial(cfg, report)


def run_torchrun_trial(cfg: TrialConfig, nproc: int, report) -> dict:
    """Run the trial as `torchrun --nproc_per_node=N scripts/train.py` and relay its reports.

    The child writes a checkpoint and a JSON line per evaluation into --report-dir;
    this (the Tune trial) forwards each to `report`. If Tune stops the trial, the
    whole process group of the child is killed, so no rank outlives it.
    """
    report_dir = Path(cfg.output_dir) / "reports"
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "scripts/train.py"),
           "--profile", cfg.profile, "--lr", repr(cfg.learning_rate), "--batch-size", str(cfg.batch_size),
           "--weight-decay", repr(cfg.weight_decay), "--seed", str(cfg.seed), "--epochs", str(cfg.epochs),
           "--output-dir", cfg.output_dir, "--trial-id", cfg.trial_id, "--lr-scheduler", cfg.lr_scheduler,
           "--report-dir", str(report_dir)]
    for flag, v in (("--model", cfg.model), ("--dataset", cfg.dataset), ("--train-samples", cfg.train_samples),
                    ("--eval-samples", cfg.eval_samples), ("--deepspeed", cfg.deepspeed),
                    ("--resume-from", cfg.resume_from), ("--num-threads", cfg.num_threads)):
        if v is not None:
            cmd += [flag, str(v)]
    child = subprocess.Popen(cmd, start_new_session=True)      # own process group: killable as a whole
    lines_seen = 0
    reports = report_dir / "reports.jsonl"

    def relay():
        nonlocal lines_seen
        if not reports.exists():
            return
        lines = reports.read_text().splitlines()
        for line in lines[lines_seen:]:
            rec = json.loads(line)
            ck = rec.pop("checkpoint")
            report(rec, lambda d, ck=ck: shutil.copytree(ck, d, dirs_exist_ok=True))
            shutil.rmtree(ck, ignore_errors=True)
        lines_seen = len(lines)
    try:
        while child.poll() is None:
            relay()
            time.sleep(1.0)
        relay()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
    if child.returncode != 0:
        raise RuntimeError(f"trial {cfg.trial_id}: torchrun exited with {child.returncode}")
    return json.loads((Path(cfg.output_dir) / "metrics.json").read_text())


# ----------------------------------------------------------------------------- run config
def _sigterm_as_sigint() -> None:
    """scancel/walltime send SIGTERM; Tune stops *gracefully* on SIGINT (saves its state, fit() returns),
    so the driver can still write every trial's row (status incomplete) before the job ends."""

    def handler(signum, frame):
        TrialRecorder.interrupted = True
        print("[tune] SIGTERM: stopping the experiment gracefully (trials still running -> incomplete)",
              flush=True)
        os.kill(os.getpid(), signal.SIGINT)
    signal.signal(signal.SIGTERM, handler)


def _job_dir(args) -> Path:
    return Path(os.environ.get("HPO_JOB_DIR") or (ROOT / "logs" / args.method / "local")).resolve()


def run_config(args, to_hparams=None, **kw):
    """Results in $HPO_JOB_DIR/<method> (a fixed name on the shared FS; a resumed job finds them),
    and a TrialRecorder that keeps $HPO_JOB_DIR/trials.jsonl current after every result."""
    from ray import tune
    _sigterm_as_sigint()
    storage = _job_dir(args)
    storage.mkdir(parents=True, exist_ok=True)
    kw.setdefault("checkpoint_config", tune.CheckpointConfig(num_to_keep=kw.pop("num_to_keep", 2)))
    recorder = TrialRecorder(args, to_hparams)
    return tune.RunConfig(name=args.method, storage_path=str(storage), verbose=1,
                          callbacks=[recorder] + kw.pop("callbacks", []), **kw)


def _callback_base():
    from ray.tune import Callback
    return Callback


class TrialRecorder(_callback_base()):
    """One row per trial in the parser's schema, rewritten (atomically) after every result, so a job
    killed by scancel or its walltime still leaves every trial's row (running ones: incomplete).

    Rows are in creation order (the order trials start); status: completed (reached --epochs),
    stopped_early (a scheduler stopped it before), error, incomplete (still running when it ended).
    """
    active: "TrialRecorder | None" = None
    interrupted = False      # set on SIGTERM: trials ended from then on were cut off, not finished

    def __init__(self, args, to_hparams=None):
        self.args, self.decode = args, to_hparams or (lambda c: c)
        self.path = _job_dir(args) / "trials.jsonl"
        self.trials: dict[str, dict] = {}
        TrialRecorder.active = self

    def _entry(self, trial) -> dict:
        return self.trials.setdefault(trial.trial_id, {"config": dict(trial.config), "metrics": {},
                                                       "status": "incomplete", "history": []})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._entry(trial)
        self.write()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        e = self._entry(trial)
        e["config"] = dict(trial.config)          # PBT changes a member's config at an exploit
        e["metrics"] = {k: result.get(k) for k in ("epoch", "eval_loss", "exact_match", "f1", "trial_wall_s",
                                                   "tokens_per_s", "training_iteration")}
        e["history"].append({k: result.get(k) for k in ("epoch", "eval_loss", "loaded_weights_fingerprint")})
        self.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        e = self._entry(trial)
        if self.interrupted:
            return                                # stays incomplete
        done = (e["metrics"].get("epoch") or 0) >= self.args.epochs - 1e-6
        e["status"] = "completed" if done else "stopped_early"
        self.write()

    def on_trial_error(self, iteration, trials, trial, **info):
        e = self._entry(trial)
        if not (self.interrupted and e["status"] == "incomplete"):
            e["status"] = "error"
        self.write()

    def rows(self) -> list[dict]:
        from hpo.results import make_row
        out = []
        for tid, e in self.trials.items():
            m, hp = e["metrics"], self.decode(e["config"])
            out.append(make_row(
                method=self.args.method, job_id=os.environ.get("HPO_JOB_ID", "local"), trial_id=tid,
                status=e["status"], learning_rate=hp.get("learning_rate"), batch_size=hp.get("batch_size"),
                weight_decay=hp.get("weight_decay"), seed=self.args.seed, epochs=m.get("epoch"),
                eval_loss=m.get("eval_loss"), exact_match=m.get("exact_match"), f1=m.get("f1"),
                wall_s=m.get("trial_wall_s"), gpus=self.args.gpus_per_trial, cpus=self.args.cpus_per_trial,
                tokens_per_s=m.get("tokens_per_s")))
        return out

    def write(self) -> None:
        from hpo.results import write_records
        write_records(self.rows(), self.path)


# ----------------------------------------------------------------------------- results
def finish(results, args) -> int:
    """After fit(): final statuses from the ResultGrid into trials.jsonl; print the stops and the best."""
    rec = TrialRecorder.active
    for r in results:                             # the ResultGrid is authoritative for errors
        tid = (r.metrics or {}).get("trial_id")
        if r.error is not None and tid in rec.trials and not rec.interrupted:
            rec.trials[tid]["status"] = "error"
    rec.write()
    rows = rec.rows()
    for r in rows:
        if r["status"] == "stopped_early":
            print(f"[tune] {r['trial_id']} stopped early at epoch {r['epochs']:g} (a rung), "
                  f"eval_loss {r['eval_loss']:.4f}", flush=True)
    print(f"[tune] {len(rows)} trials -> {rec.path}", flush=True)
    ok = [r for r in rows if r["eval_loss"] is not None and math.isfinite(r["eval_loss"])]
    if not ok:
        print("[tune] ERROR: no trial produced an eval_loss; see the trial errors above", flush=True)
        return 1
    best = min(ok, key=lambda r: (r["eval_loss"], -(r["f1"] or 0)))
    print(f"[tune] BEST trial {best['trial_id']} ({best['status']}): lr={best['learning_rate']:.3g} "
          f"batch_size={best['batch_size']} weight_decay={best['weight_decay']:g} epochs={best['epochs']:g} "
          f"eval_loss={best['eval_loss']:.4f} exact_match={best['exact_match']:.2f} f1={best['f1']:.2f}", flush=True)
    return 0


def write_pbt_lineage(args) -> Path | None:
    """PBT's exploits as a table: iteration, trial, donor, lr/wd before -> after, eval_loss before/after.

    Written to <log>.pbt_lineage.csv beside the job's CSV (and $HPO_JOB_DIR/pbt_lineage.csv).
    The events come from the trials themselves (exploits.jsonl): a trial that restores a
    checkpoint written by another trial is an exploit, and it records whose weights it loaded.
    """
    import csv
    job_dir = _job_dir(args)
    events_file = job_dir / "exploits.jsonl"
    events = [json.loads(l) for l in events_file.read_text().splitlines() if l.strip()] \
        if events_file.exists() else []
    # every result each trial reported, as the driver received them (TrialRecorder)
    history = {tid: e["history"] for tid, e in TrialRecorder.active.trials.items()}

    def at(tid, epoch, key):     # the LAST report at that epoch: the one after the exploit
        return next((h.get(key) for h in reversed(history.get(tid, [])) if h.get("epoch") == epoch), None)

    cols = ["epoch", "trial_id", "donor_id", "old_learning_rate", "new_learning_rate", "old_weight_decay",
            "new_weight_decay", "eval_loss_before", "donor_eval_loss", "eval_loss_after",
            "donor_weights_fingerprint", "loaded_weights_fingerprint"]
    out = job_dir / "pbt_lineage.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in sorted(events, key=lambda e: (e["epoch"] or 0, e["time"])):
            nxt = (e["epoch"] or 0) + 1       # the member's first evaluation after the exploit
            w.writerow([e["epoch"], e["trial_id"], e["donor_id"], e["old_learning_rate"], e["new_learning_rate"],
                        e["old_weight_decay"], e["new_weight_decay"], e["old_eval_loss"], e["donor_eval_loss"],
                        at(e["trial_id"], nxt, "eval_loss"), e.get("donor_weights_fingerprint"),
                        at(e["trial_id"], nxt, "loaded_weights_fingerprint")])
    if os.environ.get("HPO_CSV"):
        beside = Path(os.environ["HPO_CSV"]).with_suffix(".pbt_lineage.csv")
        shutil.copyfile(out, beside)
        out = beside
    print(f"[tune] PBT lineage: {len(events)} exploit(s) -> {out}", flush=True)
    for e in events:
        print(f"[tune]   epoch {e['epoch']:g}: {e['trial_id']} <- {e['donor_id']} "
              f"lr {e['old_learning_rate'] or float('nan'):.3g} -> {e['new_learning_rate']:.3g}, "
              f"wd {e['old_weight_decay']} -> {e['new_weight_decay']}", flush=True)
    return out
