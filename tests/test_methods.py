"""The launchers on the laptop tier: manual grid, ASHA, PBT, BayesOpt end to end (smoke budgets).

Each runs `bash experiments/<method>/run.slurm` exactly as a learner without SLURM would, with
HPO_LOG_ROOT pointing at a temporary directory, and checks the CSV the parser wrote.
"""
import csv
import json
import math
import os

import pytest

from conftest import run_cli
from hpo.schema import COLUMNS, STATUSES

pytestmark = pytest.mark.slow


def launch(root, tmp_path, method, *args, env=None, timeout=900):
    e = {"HPO_LOG_ROOT": str(tmp_path), "HPO_JOB_ID": f"test-{method}", "RAY_AUTH_MODE": "disabled",
         "SLURM_JOB_ID": "", **(env or {})}
    p = run_cli(["bash", str(root / f"experiments/{method}/run.slurm"), *args], env=e, timeout=timeout)
    log = tmp_path / method / f"hpo-{method}-test-{method}.out"
    return p, log


def read_rows(path):
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        assert r.fieldnames == COLUMNS
        return list(r)


def finite(x):
    return x not in ("", None) and math.isfinite(float(x))


def test_manual_grid_laptop_two_combinations(root, tmp_path):
    p, log = launch(root, tmp_path, "manual", "--learning-rates", "5e-3", "--batch-sizes", "16",
                    "--weight-decays", "0.0,0.01", "--epochs", "1", "--train-samples", "160",
                    "--eval-samples", "16")
    out = log.read_text()
    assert p.returncode == 0, out[-4000:]
    assert "LAPTOP TIER" in out.splitlines()[1]
    assert "grid (tiny profile): learning_rate [0.005] x batch_size [16] x weight_decay [0.0, 0.01]" in out
    assert "===== JOB test-manual START" in out and "===== JOB test-manual FINISH" in out
    assert out.count("===== RUN ") == 4 and "JOB SUMMARY" in out
    rows = read_rows(log.with_suffix(".csv"))
    assert [r["weight_decay"] for r in rows] == ["0", "0.01"]
    for r in rows:
        assert r["status"] == "completed" and r["method"] == "manual"
        assert finite(r["eval_loss"]) and finite(r["exact_match"]) and finite(r["f1"])
        assert float(r["wall_s"]) > 0 and float(r["cpu_hours"]) > 0
    # each combination has its own output directory with its metrics.json
    assert len(list((tmp_path / "manual" / "hpo-manual-test-manual").glob("*/metrics.json"))) == 2


def test_manual_grid_one_failing_combination_does_not_stop_the_grid(root, tmp_path):
    # batch size 0 makes that run exit 2 (train.py rejects it); the other still runs
    p, log = launch(root, tmp_path, "manual", "--learning-rates", "5e-3", "--batch-sizes", "0,16",
                    "--weight-decays", "0.0", "--epochs", "1", "--train-samples", "80", "--eval-samples", "8")
    assert p.returncode == 0, log.read_text()[-3000:]
    rows = read_rows(log.with_suffix(".csv"))
    assert [r["status"] for r in rows] == ["error", "completed"]


def test_manual_best_of_an_earlier_csv_with_seeds(root, tmp_path):
    """--best-of CSV --seeds: the noise-floor exercise (one combination, several seeds)."""
    from hpo.schema import make_row, write_csv
    earlier = tmp_path / "earlier.csv"
    write_csv([make_row(method="asha", trial_id="a", status="completed", learning_rate=1e-3, batch_size=8,
                        weight_decay=0.0, eval_loss=2.0),
               make_row(method="asha", trial_id="b", status="stopped_early", learning_rate=5e-3, batch_size=16,
                        weight_decay=0.01, eval_loss=1.5)], earlier)
    p, log = launch(root, tmp_path, "manual", "--best-of", str(earlier), "--seeds", "1,2", "--epochs", "1",
                    "--train-samples", "80", "--eval-samples", "8")
    assert p.returncode == 0, log.read_text()[-3000:]
    assert "--best-of" in log.read_text() and "trial b" in log.read_text()
    rows = read_rows(log.with_suffix(".csv"))
    assert [(r["learning_rate"], r["batch_size"], r["weight_decay"], r["seed"]) for r in rows] == \
        [("0.005", "16", "0.01", "1"), ("0.005", "16", "0.01", "2")]


def test_bad_profile_is_rejected(root, tmp_path):
    p, _ = launch(root, tmp_path, "asha", env={"HPO_PROFILE": "huge"}, timeout=60)
    assert p.returncode == 2 and "HPO_PROFILE must be tiny or workshop" in p.stdout + p.stderr


@pytest.mark.parametrize("args, needle", [
    (["--best-of", "/nonexistent.csv"], "CSV not found"),
    (["--learning-rates", "abc"], "not a comma list of floats"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--deepspeed", "nope.json"], "DeepSpeed config not found"),
])
def test_manual_bad_options(root, tmp_path, args, needle):
    p, _ = launch(root, tmp_path, "manual", *args, timeout=60)
    assert p.returncode == 2 and needle in p.stdout + p.stderr


def test_asha_stops_trials_early(root, tmp_path):
    p, log = launch(root, tmp_path, "asha", "--smoke", "--num-samples", "6", "--reduction-factor", "3",
                    "--epochs", "3", "--learning-rate-min", "1e-5", "--learning-rate-max", "1e-2")
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    rows = read_rows(log.with_suffix(".csv"))
    assert len(rows) == 6 and {r["status"] for r in rows} <= set(STATUSES)
    stopped = [r for r in rows if r["status"] == "stopped_early"]
    assert stopped, "ASHA stopped no trial"
    for r in rows:      # every report carried EM/F1, so stopped trials have them too
        assert finite(r["eval_loss"]) and finite(r["exact_match"]) and finite(r["f1"])
        assert 1e-5 <= float(r["learning_rate"]) <= 1e-2
    assert all(float(r["epochs"]) < 3 for r in stopped)
    assert "stopped early at epoch" in out and "[tune] BEST trial" in out and "JOB SUMMARY" in out


def test_pbt_exploit_continues_from_donor_weights(root, tmp_path, tiny_model):
    p, log = launch(root, tmp_path, "pbt", "--smoke", "--epochs", "3")
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    rows = read_rows(log.with_suffix(".csv"))
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    with open(log.with_suffix(".pbt_lineage.csv"), newline="") as f:
        lineage = list(csv.DictReader(f))
    assert lineage, "PBT did no exploit"
    from transformers import AutoModelForCausalLM
    from hpo.trial import weights_fingerprint
    fresh = weights_fingerprint(AutoModelForCausalLM.from_pretrained(tiny_model))
    for e in lineage:
        assert e["trial_id"] != e["donor_id"]
        donor, loaded = float(e["donor_weights_fingerprint"]), float(e["loaded_weights_fingerprint"])
        # the exploited trial started from exactly the donor's weights, not the pretrained ones
        assert loaded == pytest.approx(donor, rel=1e-6)
        assert abs(loaded - fresh) > 1e-3 * fresh
        assert finite(e["eval_loss_after"])
    assert "continues from" in out
    # A member that was paused and resumed (synchronous PBT) but never exploited ends exactly where
    # the same trial run straight through ends: checkpoints hold the whole training state.
    from hpo.config import TrialConfig
    from hpo.trial import run_trial
    job_dir = log.with_suffix("")
    records = {json.loads(line)["trial_id"]: json.loads(line) for line in (job_dir / "trials.jsonl").open()}
    recipients = {e["trial_id"] for e in lineage}
    resumed = set()
    for res in (job_dir / "pbt").glob("hpo_trial_*/result.json"):
        for line in res.read_text().splitlines():
            r = json.loads(line)
            if r.get("loaded_weights_fingerprint") is not None:
                resumed.add(r["trial_id"])
    candidates = sorted((resumed - recipients) & set(records))
    assert candidates, f"no member was paused and resumed without an exploit: resumed {resumed}, {recipients}"
    r = records[candidates[0]]
    straight = run_trial(TrialConfig(profile="tiny", train_samples=160, eval_samples=16, epochs=3,
                                     learning_rate=r["learning_rate"], batch_size=r["batch_size"],
                                     weight_decay=r["weight_decay"], seed=0, num_threads=1,
                                     output_dir=str(tmp_path / "straight")))
    assert straight["eval_loss"] == pytest.approx(r["eval_loss"], abs=1e-4)


def test_bayesopt_suggestions_stay_in_bounds(root, tmp_path):
    p, log = launch(root, tmp_path, "bayesopt", "--smoke", "--num-samples", "5", "--learning-rate-min", "1e-3",
                    "--learning-rate-max", "5e-3", "--weight-decays", "0.0,0.1")
    assert p.returncode == 0, log.read_text()[-5000:]
    rows = read_rows(log.with_suffix(".csv"))
    assert len(rows) == 5
    for r in rows:
        assert 1e-3 * (1 - 1e-9) <= float(r["learning_rate"]) <= 5e-3 * (1 + 1e-9)
        assert r["batch_size"] in ("8", "16")
        assert 0.0 <= float(r["weight_decay"]) <= 0.1
        assert r["status"] == "completed" and finite(r["f1"])


def test_trial_on_ray_train_workers_inside_a_tune_trial(root, tmp_path):
    """The multi-GPU route (Ray Train workers under the Tune trial, reports with checkpoints), on 1 CPU worker."""
    p, log = launch(root, tmp_path, "asha", "--smoke", "--num-samples", "2", env={"HPO_TRIAL_LAUNCHER": "raytrain"})
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    rows = read_rows(log.with_suffix(".csv"))
    assert len(rows) == 2 and all(finite(r["eval_loss"]) and finite(r["f1"]) for r in rows)
    assert max(float(r["epochs"]) for r in rows) == 2
    assert "RayTrainWorker" in out                      # the trial ran on a Ray Train worker
    # every evaluation reached Tune with a checkpoint: one per epoch of every trial that ran it
    ckpts = list((tmp_path / "asha").rglob("checkpoint_*/trial_state.json"))
    assert len(ckpts) >= 2


@pytest.mark.parametrize("method, args, needle", [
    ("asha", ["--learning-rate-min", "1e-2", "--learning-rate-max", "1e-3"], "bad search space"),
    ("bayesopt", ["--batch-sizes", "8,x"], "not a comma list"),
    ("pbt", ["--no-such-flag"], "unrecognized arguments"),
    ("asha", ["--weight-decays", "-1"], "bad search space"),
    ("asha", ["--grace-period", "0"], "--grace-period"),
    ("pbt", ["--perturbation-interval", "0"], "--perturbation-interval"),
    ("bayesopt", ["--random-steps", "0"], "--random-steps"),
    ("asha", ["--deepspeed", "nope.json"], "config file not found"),
])
def test_ray_drivers_reject_bad_input(root, method, args, needle):
    """One clear message and exit 2 — before any Ray runtime starts."""
    p = run_cli(["python", str(root / f"experiments/{method}/driver.py"), *args], timeout=120,
                env={"PATH": os.path.dirname(os.sys.executable) + os.pathsep + os.environ["PATH"]})
    assert p.returncode == 2 and needle in p.stderr, p.stderr[-2000:]


def test_best_of_a_ray_trial_reruns_the_same_training_run(root, tmp_path):
    """Same (lr, bs, wd, seed) = the same run in every method: same data, epochs, global batch,
    precision and eval. A manual-grid --best-of rerun of an ASHA trial reproduces its eval_loss."""
    p, log = launch(root, tmp_path, "asha", "--smoke", "--num-samples", "2", "--grace-period", "2")
    assert p.returncode == 0, log.read_text()[-3000:]
    ray_rows = read_rows(log.with_suffix(".csv"))
    assert all(r["status"] == "completed" for r in ray_rows)
    best = min(ray_rows, key=lambda r: float(r["eval_loss"]))
    p, mlog = launch(root, tmp_path, "manual", "--smoke", "--best-of", str(log.with_suffix(".csv")))
    assert p.returncode == 0, mlog.read_text()[-3000:]
    (rerun,) = read_rows(mlog.with_suffix(".csv"))
    for col in ("batch_size", "global_batch_size", "epochs", "epochs_planned", "seed", "data_fingerprint"):
        assert rerun[col] == best[col], col
    assert float(rerun["eval_loss"]) == pytest.approx(float(best["eval_loss"]), rel=0.01)


def test_a_trial_that_fails_before_its_first_report_still_costs_its_time(tmp_path):
    """The recorder's row of a trial that crashed at once has its wall time, so its GPU-hours count."""
    import argparse
    import time

    from hpo.search.recorder import TrialRecorder
    args = argparse.Namespace(method="asha", job_dir=tmp_path, epochs=2, seed=0, gpus_per_trial=1.0,
                              cpus_per_trial=4.0)
    rec = TrialRecorder(args)
    trial = argparse.Namespace(trial_id="t1", config={"learning_rate": 1e-3, "batch_size": 8, "weight_decay": 0.0})
    rec.on_trial_start(0, [], trial)
    time.sleep(0.2)
    rec.on_trial_error(1, [], trial)
    (row,) = rec.rows()
    assert row["status"] == "error" and row["wall_s"] >= 0.2 and row["gpu_hours"] > 0
    assert row["epochs_planned"] == 2 and row["eval_loss"] is None
