"""hpo.search.distributed: the shared trial on Ray Train workers, driven from a Ray Tune trial.

On the CPU with the tiny profile (gloo between CPU workers): a Tune function trial calls
run_on_ray_train, and Tune must see what it sees in-process -- one report per epoch, each with
a real Tune checkpoint (weights + trial_state.json) -- and a trial started from such a
checkpoint must continue from it. A Tune stop must take the workers (here 2, which both
train) and their reserved resources with it; a worker's error must reach the caller; DeepSpeed
ZeRO-2 must run in Ray Train workers.

One local Ray instance (4 logical CPUs on a 2-core machine) is shared by the module; a Train
run costs ~20-40 s here, mostly worker start-up (importing torch/transformers per process).
"""
import json
import math
import os
import tempfile
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

SMALL = dict(profile="tiny", train_samples=160, eval_samples=16, batch_size=16, learning_rate=5e-3)
RAY_CPUS = 4


@pytest.fixture(scope="module")
def ray_local(root):
    ray = pytest.importorskip("ray")
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "PYTHONPATH")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray's worker processes must import this checkout's hpo/ (the launchers export the same)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), saved["PYTHONPATH"]) if p)
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def trainable(storage: str, *, epochs: int, num_workers: int, resume_from: str | None = None,
              records: str | None = None):
    """A Tune function trial that runs the shared trial on Ray Train workers, as a driver would."""
    from ray import tune

    def hpo_trial(config):
        from hpo.search.distributed import run_on_ray_train
        from hpo.trial import TrialConfig
        ctx = tune.get_context()

        def report(metrics, save):
            with tempfile.TemporaryDirectory(prefix="ckpt-") as d:
                save(d)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

        cfg = TrialConfig(**{**SMALL, "learning_rate": config["lr"]}, epochs=epochs,
                          output_dir=str(Path(ctx.get_trial_dir()) / "trial"), trial_id=ctx.get_trial_id(),
                          resume_from=resume_from)
        rec = run_on_ray_train(cfg, num_workers=num_workers, use_gpu=False, cpus_per_worker=1,
                               report=report, storage_path=storage)
        if records:
            Path(records, f"{ctx.get_trial_id()}.json").write_text(json.dumps(rec))

    # the trial itself is only a driver: 1 CPU here; the workers hold their own CPUs
    return tune.with_resources(hpo_trial, {"cpu": 1})


def tune_fit(fn, tmp: Path, name: str, stop=None):
    from ray import tune
    tuner = tune.Tuner(fn, param_space={"lr": SMALL["learning_rate"]},
                       tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=1),
                       run_config=tune.RunConfig(name=name, storage_path=str(tmp / "tune"), stop=stop,
                                                 verbose=0))
    grid = tuner.fit()
    assert len(grid) == 1
    res = grid[0]
    assert res.error is None, res.error
    return res


def checkpoints(res):
    """[(metrics, checkpoint dir)] of every report, oldest first (Tune keeps them all by default)."""
    return [(m, ck.path) for ck, m in res.best_checkpoints]


def finite(x):
    return x is not None and math.isfinite(float(x))


def train_processes():
    """Our Ray's Train controller / worker / fit-driver processes still alive (descendants of this test)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(k in title for k in ("RayTrainWorker", "TrainController", "_TrainRun")):
            out.append((p.pid, title[:80]))
    return out


def wait_until(cond, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(1.0)
    return cond()


@pytest.fixture(scope="module")
def first_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_first")
    (tmp / "records").mkdir()
    t0 = time.time()
    res = tune_fit(trainable(str(tmp / "train"), epochs=2, num_workers=1, records=str(tmp / "records")),
                   tmp, "first")
    return res, tmp, time.time() - t0


def test_tune_trial_on_one_worker_reports_each_epoch_with_a_checkpoint(first_run):
    res, tmp, wall = first_run
    df = res.metrics_dataframe
    assert list(df["epoch"]) == [1.0, 2.0], df[["epoch", "eval_loss"]]
    assert list(df["training_iteration"]) == [1, 2]
    for col in ("eval_loss", "exact_match", "f1"):
        assert all(finite(v) for v in df[col]), df[col]
    cks = checkpoints(res)
    assert [m["epoch"] for m, _ in cks] == [1.0, 2.0]
    for m, path in cks:
        files = set(os.listdir(path))
        assert {"trial_state.json", "model.safetensors", "config.json"} <= files, files
        st = json.loads(Path(path, "trial_state.json").read_text())
        assert st["epochs_done"] == m["epoch"] and st["trial_id"] == res.metrics["trial_id"]
    # the return value of run_on_ray_train is rank 0's metrics.json record
    (rec_file,) = (tmp / "records").glob("*.json")
    rec = json.loads(rec_file.read_text())
    assert rec["num_devices"] == 1 and [h["epoch"] for h in rec["history"]] == [1.0, 2.0]
    assert rec["eval_loss"] == pytest.approx(df["eval_loss"].iloc[-1])
    # everything the run wrote under its storage_path is gone; no Train process is left
    assert list((tmp / "train").iterdir()) == []
    assert wait_until(lambda: not train_processes(), 30), train_processes()
    print(f"first run (1 worker, 2 epochs, Tune): {wall:.1f}s")


def test_resumed_trial_continues_from_the_checkpoint(ray_local, first_run, tmp_path):
    res, _, _ = first_run
    last = res.checkpoint.path                    # epoch 2 of the first trial, in Tune's storage
    state = json.loads(Path(last, "trial_state.json").read_text())
    assert state["epochs_done"] == 2.0
    (tmp_path / "records").mkdir()
    res2 = tune_fit(trainable(str(tmp_path / "train"), epochs=3, num_workers=1, resume_from=last,
                              records=str(tmp_path / "records")), tmp_path, "resumed")
    df = res2.metrics_dataframe
    assert list(df["epoch"]) == [3.0]                       # one more epoch: 2 -> 3
    assert finite(df["eval_loss"].iloc[0]) and finite(df["f1"].iloc[0])
    # it started from the first trial's weights (the fingerprint its checkpoint recorded) ...
    assert df["loaded_weights_fingerprint"].iloc[0] == pytest.approx(state["weights_fingerprint"])
    # ... and trained one more epoch of 160 / 16 = 10 steps on top of its steps
    assert df["step"].iloc[0] == state["global_step"] + 10
    (rec_file,) = (tmp_path / "records").glob("*.json")
    rec = json.loads(rec_file.read_text())
    assert rec["resumed_from_trial"] == state["trial_id"] and rec["epochs"] == 3.0
    (ck, m), = res2.best_checkpoints
    assert json.loads(Path(ck.path, "trial_state.json").read_text())["epochs_done"] == 3.0
    assert list((tmp_path / "train").iterdir()) == []       # the staged resume_from copy is gone too


def test_a_stopped_two_worker_trial_takes_its_train_workers_with_it(ray_local, tmp_path):
    # Tune stops the trial after its first report (as ASHA would at a rung); 3 epochs were asked for
    res = tune_fit(trainable(str(tmp_path / "train"), epochs=3, num_workers=2), tmp_path, "stopped",
                   stop={"training_iteration": 1})
    df = res.metrics_dataframe
    assert list(df["epoch"]) == [1.0] and finite(df["eval_loss"].iloc[0])
    # both ranks trained: the 160 examples were split in two, 160 / (16 x 2) = 5 steps per epoch
    assert df["step"].iloc[0] == 5
    (ck, m), = res.best_checkpoints
    assert {"trial_state.json", "model.safetensors"} <= set(os.listdir(ck.path))
    assert wait_until(lambda: not train_processes(), 60), f"still alive: {train_processes()}"
    # their placement group is gone too: every logical CPU is free again
    assert wait_until(lambda: ray_local.available_resources().get("CPU") == RAY_CPUS, 30), \
        ray_local.available_resources()


def test_a_caller_killed_outright_leaves_no_workers_and_no_reserved_resources(ray_local, tmp_path):
    """The trial's process dies with no chance to clean up (Tune ends stopped trials' actors, a node
    dies): the run's owner notices the caller is gone and aborts the run by itself."""
    import threading

    from hpo.trial import TrialConfig
    cfg = TrialConfig(**SMALL, epochs=3, output_dir=str(tmp_path / "out"), trial_id="killed")
    storage = str(tmp_path / "train")

    @ray_local.remote(num_cpus=1, max_concurrency=2)
    class Caller:                      # stands in for a Tune trial
        def __init__(self):
            self.reported = threading.Event()

        def run(self):
            from hpo.search.distributed import run_on_ray_train

            def report(metrics, save):
                self.reported.set()
                time.sleep(3600)       # still busy when it is killed
            run_on_ray_train(cfg, num_workers=1, use_gpu=False, report=report, storage_path=storage)

        def has_reported(self):
            return self.reported.is_set()

    caller = Caller.remote()
    caller.run.remote()
    assert wait_until(lambda: ray_local.get(caller.has_reported.remote()), 120)
    assert train_processes()
    ray_local.kill(caller)
    assert wait_until(lambda: not train_processes(), 60), f"still alive: {train_processes()}"
    assert wait_until(lambda: ray_local.available_resources().get("CPU") == RAY_CPUS, 30), \
        ray_local.available_resources()


def test_a_worker_error_is_raised_in_the_caller_with_its_message(ray_local, tmp_path):
    from hpo.search.distributed import DistributedTrialError, run_on_ray_train
    from hpo.trial import TrialConfig
    cfg = TrialConfig(**SMALL, epochs=1, model=str(tmp_path / "no-such-model"), output_dir=str(tmp_path / "out"),
                      trial_id="broken")
    with pytest.raises(DistributedTrialError, match="rank 0: DataError: model directory not found"):
        run_on_ray_train(cfg, num_workers=1, use_gpu=False, report=None, storage_path=str(tmp_path / "train"))
    assert list((tmp_path / "train").iterdir()) == []
    assert wait_until(lambda: ray_local.available_resources().get("CPU") == RAY_CPUS, 30)


@pytest.mark.deepspeed
def test_deepspeed_zero2_runs_in_a_ray_train_worker(ray_local, root, tmp_path):
    """ZeRO-2 on two CPU workers (gloo); the first run JIT-builds DeepSpeed's shm comm op (cached in .cache/)."""
    from hpo.search.distributed import run_on_ray_train
    from hpo.trial import TrialConfig
    cfg = TrialConfig(**{**SMALL, "learning_rate": 3e-3}, epochs=1, weight_decay=0.5,
                      deepspeed=str(root / "deepspeed_configs/zero2.json"), output_dir=str(tmp_path / "out"),
                      trial_id="ds")
    seen = []

    def report(metrics, save):
        d = tmp_path / f"ck{len(seen)}"
        save(str(d))
        seen.append((metrics, sorted(os.listdir(d))))

    rec = run_on_ray_train(cfg, num_workers=2, use_gpu=False, report=report, storage_path=str(tmp_path / "train"))
    assert rec["deepspeed"].endswith("zero2.json") and finite(rec["eval_loss"])
    assert rec["num_devices"] == 2 and [h["step"] for h in rec["history"]] == [5]     # 160 / (16 x 2)
    assert sorted(g["weight_decay"] for g in rec["optimizer_param_groups"]) == [0.0, 0.5]
    assert {g["lr"] for g in rec["optimizer_param_groups"]} == {3e-3}
    ((m, files),) = seen
    assert m["epoch"] == 1.0 and {"trial_state.json", "model.safetensors"} <= set(files)
