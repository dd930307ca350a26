"""One Tune trial on several devices: the shared trial run by Ray Train workers.

What it is
    `run_on_ray_train(cfg, num_workers=..., use_gpu=..., report=..., storage_path=...)`
    runs `hpo.trial.run_trial` (HF Trainer, optional DeepSpeed) on `num_workers` Ray Train
    workers, one process per device, and hands every evaluation back to the caller as
    `report(metrics, save)` -- the same hook `run_trial` calls in-process. So a Ray Tune
    function trial can treat a 4-GPU trial exactly like a 1-GPU one.

How it is used (inside a Tune function trainable: hpo/search/trainable.py; one device per trial runs in-process there)

    def hpo_trial(config):
        def report(metrics, save):
            with tempfile.TemporaryDirectory() as d:
                save(d)                    # the whole checkpoint of this evaluation -> d
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        ckpt = tune.get_checkpoint()       # PBT exploit / resumed trial: continue from it
        with (ckpt.as_directory() if ckpt else contextlib.nullcontext()) as d:
            cfg = TrialConfig(..., resume_from=d)
            run_on_ray_train(cfg, num_workers=4, use_gpu=True, cpus_per_worker=4,
                             report=report, storage_path="/shared/fs/job/train_runs")

    tuner = tune.Tuner(tune.with_resources(hpo_trial, {"cpu": 1}),          # the trial: a driver only
                       tune_config=tune.TuneConfig(max_concurrent_trials=GPUS // 4), ...)

  Resources. The Tune trial is only a *driver*: it waits, copies checkpoints and calls
  tune.report. Give it a little CPU and no GPU; the GPUs are requested by the Train
  workers (num_workers x (1 GPU + cpus_per_worker CPUs)), which Tune does not see. So
  set TuneConfig(max_concurrent_trials = GPUs in the allocation // num_workers): without
  it Tune starts a driver per free CPU and the extra trials sit waiting for GPUs
  (Ray docs, "Hyperparameter Tuning with Ray Tune": "Set max_concurrent_trials to limit
  the number of Ray Train driver processes"). Count the drivers' CPUs too: per trial
  1 (driver) + num_workers x cpus_per_worker.

  Placement. On GPUs the workers of one trial are placed STRICT_PACK (all on one node:
  NVLink/PCIe between them, no network in the gradient all-reduce); a trial then cannot be
  larger than a node. Pass placement_strategy="PACK" (one node if it fits, else several)
  or "SPREAD" to let a trial span nodes. On CPUs the default is PACK.

  Storage. `storage_path` must be a directory every worker node can read and write (the
  shared filesystem on the cluster; any directory on one machine): rank 0 uploads each
  checkpoint there and the Tune trial copies it from there. `cfg.resume_from` is a
  directory on the Tune trial's node, so it is first copied there too (stage_resume=True;
  pass False when it already lies on the shared filesystem, as Tune's own checkpoints on
  a shared storage_path do). What this call writes under storage_path is removed when it
  returns (a trial killed outright can leave its <trial_id>-<hex> directory behind).

Why Ray Train and not `torchrun` inside the trial
    A torchrun child sees one node only, reports through files, and is a process tree Ray
    knows nothing about. Ray Train starts the workers as Ray actors on any node that has
    the resources, sets up torch.distributed for them (gloo on CPU, NCCL on GPU; RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR as torchrun would, so the HF Trainer and DeepSpeed
    work unchanged), gathers every worker's `ray.train.report` and uploads checkpoints.

How the pieces talk (Ray Train V2: the default in Ray 2.60; RAY_TRAIN_V2_ENABLED=0 would turn it off)
    Tune trial (this function) --owns--> a ray.util.queue.Queue
                               --starts--> `_TrainRun` actor: runs trainer.fit()
                                           --owns--> Train controller --owns--> workers
    Every rank runs run_trial; after each evaluation every rank calls `save(tmp)`
    (collective under ZeRO-3) and `ray.train.report` (a barrier); only rank 0 passes its
    checkpoint, which Ray Train uploads to storage_path. A Train `UserCallback.after_report`
    (in the controller: once per report, in order) puts rank 0's metrics and the uploaded
    checkpoint on the queue; this function drains the queue while fit() runs and calls
    `report(metrics, save)` for each. Ray's own `ray.tune.integration.ray_train.TuneReportCallback`
    is not used: it forwards only the checkpoint's *path*, as a metric, while PBT needs a
    real Tune checkpoint in every report (it hands it to the exploiting trial).

    Stopping. Tune stops trials (ASHA at a rung, PBT, a stopper, Ctrl-C, the walltime) by
    making tune.report raise SystemExit and then ending the trial's process. Killing the
    workers is not enough: a Ray placement group lives as long as the *job*, not as long as
    the actor that made it, so a dead controller would leave its workers' GPUs reserved and
    the next trials waiting for ever. So `_TrainRun` is a detached actor that outlives the
    trial by a moment: it is told to abort (this function's `finally`), or it notices that
    the queue -- which dies with the trial's process -- is gone (checked every second).
    Either way it removes the workers' placement group (which kills them; rank 0 tells it
    which group at start) and then itself, and the controller with it. (Ray Train's own
    PlacementGroupCleaner does the same but needs the state API, i.e. the Ray dashboard,
    which `ray.init(include_dashboard=False)` leaves out.) Not covered: a trial stopped
    while its Train run still waits for resources or starts its workers; its placement
    group then stays reserved until the Ray job ends.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import ray
from ray.train.v2.api.callback import UserCallback

ROOT = Path(__file__).resolve().parent.parent.parent

ReportFn = Callable[[dict, Callable[[str], None]], None]


class DistributedTrialError(RuntimeError):
    """A Ray Train worker (or the Train controller) failed; the message carries the worker's error."""


# ----------------------------------------------------------------------------- the caller's side
def run_on_ray_train(cfg, *, num_workers: int, use_gpu: bool, cpus_per_worker: float = 1.0,
                     report: ReportFn | None = None, storage_path: str,
                     placement_strategy: str | None = None, stage_resume: bool = True,
                     poll_s: float = 0.5) -> dict:
    """Run `hpo.trial.run_trial(cfg)` on `num_workers` Ray Train workers; return rank 0's record.

    report(metrics, save) is called here, once per evaluation and in order, with rank 0's
    metrics; save(dir) copies that evaluation's checkpoint (weights + trial_state.json) into
    dir. Each checkpoint is deleted from storage_path after report returns.

    Per worker, cfg is copied with: num_threads = int(cpus_per_worker) (the CPUs it holds),
    absolute paths (Ray Train starts workers in another working directory), and resume_from
    staged under storage_path (stage_resume=True) so workers on other nodes can read it.

    Raises DistributedTrialError with the worker's message if a worker fails. Anything the
    caller's report raises (tune.report's SystemExit when Tune stops the trial included)
    aborts the Train run -- workers, their placement group, controller -- and propagates.
    """
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ray.train.v2._internal.constants import is_v2_enabled
    if not is_v2_enabled():
        raise RuntimeError("run_on_ray_train needs Ray Train V2: unset RAY_TRAIN_V2_ENABLED "
                           "(or set it to 1) in the environment that starts Ray")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    strategy = placement_strategy or ("STRICT_PACK" if use_gpu else "PACK")

    trial_id = getattr(cfg, "trial_id", None) or "trial"
    run_dir = Path(storage_path).resolve() / f"{_safe(trial_id)}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    worker_cfg = _worker_config(cfg, cpus_per_worker)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = run = None
    finished = False
    try:
        if worker_cfg.resume_from and stage_resume:
            staged = run_dir / "resume_from"
            shutil.copytree(worker_cfg.resume_from, staged)
            worker_cfg.resume_from = str(staged)
        # Bookkeeping actors (num_cpus=0), on this node, outside the trial's placement group.
        # The queue is owned by this process and dies with it: _TrainRun watches it for that.
        queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        run = ray.remote(_TrainRun).options(
            num_cpus=0, lifetime="detached", max_restarts=0, max_concurrency=4,
            scheduling_strategy=here).remote(queue.actor)
        fit = run.fit.remote(worker_cfg, num_workers, use_gpu, float(cpus_per_worker), strategy,
                             str(run_dir), queue, run)
        while True:
            done = bool(ray.wait([fit], timeout=0)[0])     # then every report is already queued
            try:
                item = queue.get(block=not done, timeout=None if done else poll_s)
            except Empty:
                if done:
                    break
                continue
            _forward(item, report)
        outcome = ray.get(fit)
        finished = True
    finally:
        if run is not None:
            if not finished:       # the caller's report raised (Tune stops the trial), Ctrl-C, ...
                try:
                    ray.get(run.abort.remote(), timeout=60)
                except Exception:  # if this process dies first, _TrainRun's watchdog does it
                    pass
            _kill(run)             # detached: it is not ended with its handle
        if queue is not None:
            _kill(queue.actor)
        shutil.rmtree(run_dir, ignore_errors=True)
    if "error" in outcome:
        raise DistributedTrialError(f"trial {trial_id}: Ray Train run failed "
                                    f"({num_workers} worker(s)): {outcome['error']}")
    return outcome["record"]


def _forward(item: dict, report: ReportFn | None) -> None:
    ckpt = item["checkpoint"]
    if report is not None:
        def save(directory: str) -> None:
            if ckpt is None:
                raise RuntimeError("rank 0 reported no checkpoint for this evaluation")
            ckpt.to_directory(directory)
        report(item["metrics"], save)
    if ckpt is not None:          # the caller has its own copy now (Tune persisted it)
        try:
            ckpt.filesystem.delete_dir(ckpt.path)
        except Exception:
            pass


def _kill(actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:             # already gone
        pass


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:80] or "trial"


def _worker_config(cfg, cpus_per_worker: float):
    """A copy of cfg for the workers: their thread count, and every local path made absolute."""
    wc = copy.deepcopy(cfg)
    wc.num_threads = max(1, int(cpus_per_worker))
    wc.output_dir = str(Path(cfg.output_dir).resolve())
    if cfg.resume_from:
        wc.resume_from = str(Path(cfg.resume_from).resolve())
    if cfg.deepspeed:
        p = Path(cfg.deepspeed)
        if not p.is_absolute():
            # relative to where the caller runs, else to the repository (deepspeed_configs/...)
            p = p.resolve() if p.exists() else (ROOT / p)
        wc.deepspeed = str(p)
    for name in ("model", "dataset"):      # a local directory, not a hub id or "tiny"
        v = getattr(cfg, name, None)
        if v and not os.path.isabs(v) and os.path.exists(v):
            setattr(wc, name, str(Path(v).resolve()))
    return wc


# ----------------------------------------------------------------------------- the Ray side
class _ForwardReports(UserCallback):
    """Runs in the Train controller: after each report of all workers, queue rank 0's metrics
    and the checkpoint Ray Train uploaded (None if rank 0 sent none)."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self.queue.put({"metrics": dict(metrics[0]), "checkpoint": checkpoint})


class _TrainRun:
    """Owner of one Train run (a detached actor): runs trainer.fit(), and aborts the run --
    removes the workers' placement group, then ends itself and so the controller -- when told
    to or when `beacon` (an actor owned by the Tune trial) has died with the trial."""

    def __init__(self, beacon):
        self._beacon = beacon
        self._pg = None
        self._lock = threading.Lock()
        self._closing = False
        threading.Thread(target=self._watch, name="hpo-train-watchdog", daemon=True).start()

    def fit(self, cfg, num_workers, use_gpu, cpus_per_worker, strategy, run_dir, queue, me) -> dict:
        import ray.train
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        # Ray Train sends workers' print() through a logger *and* stdout, so every [eval]/[result]
        # line would reach the job log twice; plain prints, as in-process (Ray passes this on
        # to the controller and the workers). Set it to 1 in the environment to keep Train's.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
        trainer = TorchTrainer(
            _train_loop_per_worker,
            train_loop_config={"cfg": cfg, "owner": me},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker=resources, placement_strategy=strategy),
            run_config=RunConfig(
                name="train", storage_path=run_dir, callbacks=[_ForwardReports(queue)],
                # keep all: the Tune trial deletes each checkpoint once it has its own copy
                checkpoint_config=CheckpointConfig(num_to_keep=None),
                # no retries: a failed trial is Tune's business (its max_failures), not Train's
                failure_config=FailureConfig(max_failures=0)))
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as e:
            return {"error": _describe(e)}
        return {"record": result.return_value}

    def register_placement_group(self, pg) -> None:
        """Called by rank 0 when it starts: the placement group that holds the workers."""
        self._pg = pg

    def abort(self) -> None:
        """Remove the workers' placement group: Ray kills every worker in it at once."""
        with self._lock:
            self._closing = True
            if self._pg is not None:
                from ray.util.placement_group import remove_placement_group
                try:
                    remove_placement_group(self._pg)
                except Exception:
                    pass
                self._pg = None

    def _watch(self) -> None:
        import ray.exceptions
        while not self._closing:
            time.sleep(1.0)
            try:
                ray.get(self._beacon.qsize.remote(), timeout=30)
                continue
            except ray.exceptions.ActorUnavailableError:   # briefly unreachable: ask again
                continue
            except ray.exceptions.RayActorError:           # the beacon is dead: so is the Tune trial
                pass
            except Exception:                              # slow: ask again
                continue
            if not self._closing:
                self.abort()
                try:
                    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                finally:
                    os._exit(0)


def _describe(e: Exception) -> str:
    """The failing workers' own errors (type: message), rank by rank; else the error's text."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        parts = []
        for rank, exc in sorted(failures.items()):
            cause = getattr(exc, "cause", None) or exc          # RayTaskError-like wrappers
            parts.append(f"rank {rank}: {type(cause).__name__}: {str(cause).strip()}")
        return "\n".join(parts)
    return f"{type(e).__name__}: {e}"


def _train_loop_per_worker(config: dict) -> dict:
    """One rank: the shared trial, reporting each evaluation (and rank 0's checkpoint) to Ray Train."""
    import ray.train
    from ray.util.placement_group import get_current_placement_group

    from hpo.trial import run_trial

    rank = ray.train.get_context().get_world_rank()
    if rank == 0:    # so the run's owner can release the workers' resources if the trial is stopped
        ray.get(config["owner"].register_placement_group.remote(get_current_placement_group()))

    def worker_report(metrics: dict, save) -> None:
        with tempfile.TemporaryDirectory(prefix=f"hpo-ckpt-rank{rank}-") as d:
            save(d)                       # every rank: collective under ZeRO-3
            # every rank reports (a barrier in Ray Train); only rank 0's checkpoint is uploaded
            ckpt = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
            ray.train.report(metrics, checkpoint=ckpt)     # SYNC upload: d may go afterwards

    return run_trial(config["cfg"], worker_report)
