"""Tiny Ray Tune driver for tests/test_slurm_cluster.py (run by tests/slurm/ray_job.sbatch).

Run: `python tests/slurm/tune_driver.py` inside a job after ray_cluster_up (or on a
laptop: it then starts a local Ray runtime through hpo.cluster.connect_ray).

Prints machine-readable lines the test parses:
  CLUSTER {"nodes": [{"host": .., "ip": .., "cpus": .., "gpus": ..}, ..]}
  TRIAL {"host": .., "cuda": .., "loss": .., "steps": .., "error": ..}
Exit 0 only when every trial finished without error.
Knobs: TEST_TRIALS (4), TEST_TRIAL_GPUS (1), TEST_TRIAL_SLEEP (0.4 s per step; long enough that all trials overlap).
"""
import json
import os
import socket
import sys
import time


def trainable(config):
    from ray import tune

    info = {"host": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    for step in range(1, 4):
        time.sleep(config["sleep"])
        tune.report({"loss": (config["x"] - 3.0) ** 2 / step, "step": step, **info})


def main() -> int:
    from hpo.cluster import connect_ray

    ray = connect_ray()
    from ray import tune

    nodes = [{"host": n["NodeManagerHostname"], "ip": n["NodeManagerAddress"],
              "cpus": n["Resources"].get("CPU", 0), "gpus": n["Resources"].get("GPU", 0)}
             for n in ray.nodes() if n["Alive"]]
    print("CLUSTER " + json.dumps({"nodes": sorted(nodes, key=lambda n: n["host"])}), flush=True)
    trials = int(os.environ.get("TEST_TRIALS", "4"))
    gpus = float(os.environ.get("TEST_TRIAL_GPUS", "1"))
    storage = os.path.join(os.environ.get("HPO_JOB_DIR") or os.path.abspath("ray_results"), "tune")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1, "gpu": gpus}),
        param_space={"x": tune.grid_search([float(i) for i in range(trials)]),
                     "sleep": float(os.environ.get("TEST_TRIAL_SLEEP", "0.4"))},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(name="clustertest", storage_path=storage, verbose=0),
    )
    t0 = time.time()
    results = tuner.fit()
    ok = True
    for r in results:
        m = r.metrics or {}
        ok &= r.error is None
        print("TRIAL " + json.dumps({"host": m.get("host"), "cuda": m.get("cuda"), "loss": m.get("loss"),
                                     "steps": m.get("step"), "error": r.error is not None}), flush=True)
    print(f"[driver] {len(results)} trials in {time.time() - t0:.1f}s, ok={ok}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
