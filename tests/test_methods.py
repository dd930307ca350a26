"""The launchers on the laptop tier: manual grid, ASHA, PBT, BayesOpt end to end (smoke budgets).

Each runs `bash experiments/<method>/run.slurm` exactly as a learner without SLURM would, with
HPO_LOG_ROOT pointing at a temporary directory, and checks the CSV the parser wrote; then that no
process the job started outlived it (tests/leftovers.py: its environment marker, its process tree).
The method's rules are checked against Ray Tune's own records of every result (each trial's
progress.csv), not only against the rows and lines the job prints from them:
ASHA stops a trial only at a rung and only below the cut there; a PBT exploit copies a better
member's whole training state and then perturbs lr/wd within the search space.
"""
import csv
import json
import math
import os
import re
import uuid

import pytest

import leftovers
from conftest import run_cli
from hpo.schema import COLUMNS, STATUSES

pytestmark = pytest.mark.slow


def launch(root, tmp_path, method, *args, env=None, timeout=900):
    # a job id of its own: the leftovers check matches processes by it (HPO_JOB_TAG=<job id>-<random>),
    # so a concurrent run of the suite cannot be mistaken for this job's leftovers
    job_id = f"test-{method}-{uuid.uuid4().hex[:8]}"
    # plots cost ~1 s of CPU per job: drawn only where a test looks at them (env={"HPO_PLOTS": "1"})
    e = {"HPO_LOG_ROOT": str(tmp_path), "HPO_JOB_ID": job_id, "RAY_AUTH_MODE": "disabled",
         "SLURM_JOB_ID": "", "HPO_PLOTS": "0", **(env or {})}
    log = tmp_path / method / f"hpo-{method}-{job_id}.out"
    with leftovers.Watch(job_id) as watch:
        p = run_cli(["bash", str(root / f"experiments/{method}/run.slurm"), *args], env=e, timeout=timeout)
    tail = (log.read_text(errors="replace")[-3000:] if log.exists() else "<no log>")
    # Nothing the job started may outlive it: Ray's local runtime and its workers, trials, their children.
    leftovers.assert_gone(job_id, watch, context=f"--- {log} (tail):\n{tail}")
    if p.returncode == 0:
        # ... and that check is not vacuous: the job's marker reached the processes doing the work
        # (on this tier ray.init() starts the raylet, and the raylet the `ray::` workers running trials)
        worker = "train.py" if method == "manual" else "ray::"
        assert watch.matching(worker, marker_only=True), \
            f"no {worker} process carried {leftovers.MARKER}={job_id}-…; seen:\n{watch.summary()}"
    return p, log


def tune_results(job_dir, method) -> dict[str, list[dict]]:
    """Ray Tune's own record of every result each trial reported (<trial dir>/progress.csv, one row
    per tune.report, in order), by trial id. Independent of trials.jsonl and the job's CSV."""
    out = {}
    for d in sorted((job_dir / method).glob("hpo_trial_*")):
        with open(d / "progress.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def at_epoch(results, epoch) -> dict:
    """A trial's (last) result at that epoch."""
    hits = [r for r in results if float(r["epoch"]) == epoch]
    assert hits, f"no result at epoch {epoch}: {[r['epoch'] for r in results]}"
    return hits[-1]


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
    job_id = log.name[len("hpo-manual-"):-len(".out")]
    assert f"===== JOB {job_id} START" in out and f"===== JOB {job_id} FINISH" in out
    assert out.count("===== RUN ") == 4 and "JOB SUMMARY" in out
    # two runs at a time (one per CPU, one thread each, like a Ray trial here), each block whole
    assert "[job] 2 run(s) at a time, 0 GPU + 1 CPU each" in out and "--num-threads 1" in out
    lines = out.splitlines()
    started2 = next(i for i, line in enumerate(lines) if line.startswith("[job] RUN 2/2 started"))
    end1 = next(i for i, line in enumerate(lines) if line.startswith("===== RUN 1/2 END"))
    start2 = next(i for i, line in enumerate(lines) if line.startswith("===== RUN 2/2 START"))
    assert started2 < end1 < start2
    assert [line.split()[1] for line in lines if line.startswith("[eval]")] == \
        ["trial=run01_lr0.005_bs16_wd0", "trial=run02_lr0.005_bs16_wd0.01"]
    rows = read_rows(log.with_suffix(".csv"))
    assert [r["weight_decay"] for r in rows] == ["0", "0.01"]
    for r in rows:
        assert r["status"] == "completed" and r["method"] == "manual"
        assert finite(r["eval_loss"]) and finite(r["exact_match"]) and finite(r["f1"])
        assert float(r["wall_s"]) > 0 and float(r["cpu_hours"]) == pytest.approx(float(r["wall_s"]) / 3600, rel=0.02)
    # each combination has its own output directory with its metrics.json
    assert len(list(log.with_suffix("").glob("*/metrics.json"))) == 2


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
    (["--runs-at-once", "0"], "--runs-at-once must be >= 1"),
])
def test_manual_bad_options(root, tmp_path, args, needle):
    p, _ = launch(root, tmp_path, "manual", *args, timeout=60)
    assert p.returncode == 2 and needle in p.stdout + p.stderr


def test_asha_stops_trials_early_at_rungs_below_the_cut(root, tmp_path):
    """ASHA's rule, re-derived from Tune's own records: a trial is stopped only at a rung (epochs
    grace_period * reduction_factor**k) and only when its eval_loss there is not among the best
    1/reduction_factor of the losses recorded at that rung before it; every other trial continues.
    One trial at a time (--max-concurrent 1): the order in which ASHA saw the results is then the
    order of the trials, so each decision is determined and can be checked exactly."""
    grace, rf, epochs = 1, 3, 3
    p, log = launch(root, tmp_path, "asha", "--smoke", "--num-samples", "6", "--reduction-factor", str(rf),
                    "--grace-period", str(grace), "--epochs", str(epochs), "--learning-rate-min", "1e-5",
                    "--learning-rate-max", "1e-2", "--max-concurrent", "1", "--cpus-per-trial", "2")
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    rows = read_rows(log.with_suffix(".csv"))
    assert len(rows) == 6 and {r["status"] for r in rows} <= set(STATUSES)
    for r in rows:      # every report carried EM/F1, so stopped trials have them too
        assert finite(r["eval_loss"]) and finite(r["exact_match"]) and finite(r["f1"])
        assert 1e-5 <= float(r["learning_rate"]) <= 1e-2
    assert "stopped early at epoch" in out and "[tune] BEST trial" in out and "JOB SUMMARY" in out

    import numpy as np
    results = tune_results(log.with_suffix(""), "asha")
    order = sorted(results)                       # Tune numbers its trials in creation order
    assert order == sorted(r["trial_id"] for r in rows), (order, [r["trial_id"] for r in rows])
    for a, b in zip(order, order[1:]):            # one at a time: b began after a's last result
        assert int(results[b][0]["timestamp"]) >= int(results[a][-1]["timestamp"]), (a, b)
    rungs, r = [], grace
    while r < epochs:
        rungs.append(r)
        r *= rf
    row_of = {r["trial_id"]: r for r in rows}
    for tid in order:                             # a trial that ended early ended at a rung
        last = int(results[tid][-1]["training_iteration"])
        assert last == epochs or last in rungs, f"{tid} stopped at epoch {last}, not at a rung {rungs}"
        assert float(row_of[tid]["epochs"]) == last
    recorded = {r: [] for r in rungs}             # rung -> losses recorded there so far, in order
    decisions = []
    for tid in order:
        res = results[tid]
        assert [int(x["training_iteration"]) for x in res] == list(range(1, len(res) + 1))
        assert all(float(x["epoch"]) == int(x["training_iteration"]) for x in res)   # 1 iteration = 1 epoch
        end, stopped = epochs, False
        for x in res:
            it, loss = int(x["training_iteration"]), float(x["eval_loss"])
            if it not in recorded:
                continue
            earlier = recorded[it]
            # Ray's cut (mode=min): the (1 - 1/rf) percentile of the negated losses recorded before
            cut = None if not earlier else -float(np.nanpercentile([-v for v in earlier], (1 - 1 / rf) * 100))
            below = cut is not None and loss > cut
            decisions.append(f"{tid} epoch {it}: loss {loss:.4f} vs cut {cut} of {len(earlier)} earlier "
                             f"-> {'STOP' if below else 'continue'}")
            earlier.append(loss)
            if below:
                end, stopped = it, True
                break
        table = "\n".join(decisions)
        assert int(res[-1]["training_iteration"]) == end, \
            f"{tid} ended at epoch {res[-1]['training_iteration']}, ASHA's rule says {end}:\n{table}"
        assert row_of[tid]["status"] == ("stopped_early" if stopped else "completed"), (row_of[tid], table)
    statuses = [row_of[t]["status"] for t in order]
    assert "stopped_early" in statuses and "completed" in statuses, "\n".join(decisions)


def test_pbt_exploit_continues_from_donor_weights(root, tmp_path, tiny_model):
    """PBT's rules, against Ray Tune's own records of every result (progress.csv) and the checkpoints:
    at each exploit the donor was a top-quantile member and the recipient a bottom-quantile one at
    that epoch (donor better); the recipient continued the donor's whole training state (weights,
    optimizer, schedule: replaying the exploit from the donor's checkpoint gives the recipient's next
    loss) with explored hyperparameters: learning rate moved (x0.8, x1.2 or resampled) and inside
    the search space, weight decay one of the searched values."""
    from hpo.config import PROFILES
    space = PROFILES["tiny"].space
    p, log = launch(root, tmp_path, "pbt", "--smoke", "--epochs", "3", env={"HPO_PLOTS": "1"})
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    # the job drew its plots next to its CSV: every member's curve, its lr/wd schedule
    for kind in ("curves", "schedule"):
        png = log.with_suffix(f".{kind}.png")
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
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

    job_dir = log.with_suffix("")
    results = tune_results(job_dir, "pbt")
    assert sorted(results) == sorted(r["trial_id"] for r in rows)
    # Ray's own account of each exploit (independent of the lineage file): "Cloning trial D ... into trial R"
    cloned = re.findall(r"\[Exploit\] Cloning trial (\S+) \(score = \S+\) into trial (\S+) ", out)
    assert sorted(cloned) == sorted((e["donor_id"], e["trial_id"]) for e in lineage), (cloned, lineage)
    n_quantile = math.ceil(len(results) * 0.25)            # --quantile-fraction 0.25 (the default)
    for e in lineage:
        epoch, rid, did = float(e["epoch"]), e["trial_id"], e["donor_id"]
        # exploit: ranked by the eval_loss every member reported at that epoch, the donor is in the
        # top quantile, the recipient in the bottom one -- so the donor was the better member
        losses = {t: float(at_epoch(res, epoch)["eval_loss"]) for t, res in results.items()}
        ranked = sorted(losses, key=losses.get)
        ctx = f"epoch {epoch:g}: {rid} <- {did}; losses {losses}"
        assert losses[did] < losses[rid], ctx
        assert did in ranked[:n_quantile] and rid in ranked[-n_quantile:], ctx
        assert float(e["donor_eval_loss"]) == pytest.approx(losses[did]), ctx
        assert float(e["eval_loss_before"]) == pytest.approx(losses[rid]), ctx
        # explore: the donor's hyperparameters, perturbed; the recipient's next results carry them
        donor_at = at_epoch(results[did], epoch)
        after = at_epoch(results[rid], epoch + 1)
        donor_lr, new_lr = float(donor_at["learning_rate"]), float(e["new_learning_rate"])
        new_wd = float(e["new_weight_decay"])
        assert float(after["learning_rate"]) == pytest.approx(new_lr), ctx
        assert float(after["weight_decay"]) == pytest.approx(new_wd), ctx
        assert after["batch_size"] == donor_at["batch_size"], ctx         # not mutated: the donor's
        assert float(after["eval_loss"]) == pytest.approx(float(e["eval_loss_after"])), ctx
        assert not math.isclose(new_lr, donor_lr, rel_tol=1e-9), f"explore left learning_rate at {donor_lr}: {ctx}"
        perturbed = any(math.isclose(new_lr, donor_lr * f, rel_tol=1e-9) for f in (0.8, 1.2))
        assert space.learning_rate[0] <= new_lr <= space.learning_rate[1], \
            f"learning_rate {new_lr:g} ({'x0.8/1.2 of' if perturbed else 'resampled, donor'} {donor_lr:g}) " \
            f"outside the search space {space.learning_rate}: {ctx}"
        assert new_wd in space.weight_decay, ctx
        # whose training state: the donor's optimizer step count at the exploit, then one more epoch
        assert int(e["donor_global_step"]) == int(donor_at["step"]), ctx
        assert int(after["step"]) * epoch == int(donor_at["step"]) * (epoch + 1), ctx

    # Replay the first exploit from the donor's checkpoint on disk (Tune keeps them all on the tiny
    # profile) with the recipient's new lr/wd: the recipient's next eval_loss must come out exactly.
    # This pins the whole transfer (weights, optimizer moments, schedule, data order), not one scalar.
    from hpo.config import TrialConfig
    from hpo.trial import run_trial
    e = lineage[0]
    epoch, did = float(e["epoch"]), e["donor_id"]
    ckpts = [c.parent for c in (job_dir / "pbt").glob(f"hpo_trial_{did}_*/checkpoint_*/trial_state.json")
             if json.loads(c.read_text())["epochs_done"] == epoch
             and json.loads(c.read_text())["global_step"] == int(e["donor_global_step"])]
    assert ckpts, f"no checkpoint of donor {did} at epoch {epoch:g} under {job_dir / 'pbt'}"
    donor_at = at_epoch(results[did], epoch)
    replay = run_trial(TrialConfig(profile="tiny", train_samples=160, eval_samples=16, epochs=3,
                                   learning_rate=float(e["new_learning_rate"]),
                                   batch_size=int(donor_at["batch_size"]),
                                   weight_decay=float(e["new_weight_decay"]), seed=0, num_threads=1,
                                   trial_id=e["trial_id"], resume_from=str(ckpts[0]),
                                   output_dir=str(tmp_path / "replay")))
    assert replay["history"][0]["epoch"] == epoch + 1
    assert replay["history"][0]["eval_loss"] == pytest.approx(float(e["eval_loss_after"]), abs=1e-4)

    # A member that was paused and resumed (synchronous PBT) but never exploited ends exactly where
    # the same trial run straight through ends: checkpoints hold the whole training state.
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


def test_tpe_searcher_suggests_from_the_search_space(root, tmp_path):
    """--searcher tpe: Optuna's TPE searches the hyperparameters themselves (log learning rate,
    categorical batch size and weight decay), where the Gaussian process searches floats (log10 of
    the learning rate, an index for the batch size, a weight-decay range): every suggestion is one of
    the searched values, and Tune's record of each trial's config has TPE's parameters."""
    p, log = launch(root, tmp_path, "bayesopt", "--searcher", "tpe", "--smoke", "--num-samples", "4",
                    "--random-steps", "2", "--learning-rate-min", "1e-3", "--learning-rate-max", "5e-3",
                    "--weight-decays", "0.0,0.1")
    out = log.read_text()
    assert p.returncode == 0, out[-5000:]
    assert "searcher tpe, 2 random start-up trials" in out
    rows = read_rows(log.with_suffix(".csv"))
    assert len(rows) == 4 and all(r["status"] == "completed" and finite(r["eval_loss"]) for r in rows)
    for r in rows:
        assert 1e-3 * (1 - 1e-9) <= float(r["learning_rate"]) <= 5e-3 * (1 + 1e-9)
        assert r["batch_size"] in ("8", "16")
        assert float(r["weight_decay"]) in (0.0, 0.1), r        # a choice, not a point of the GP's range
    configs = [json.loads(f.read_text()) for f in sorted(log.with_suffix("").glob("bayesopt/hpo_trial_*/params.json"))]
    assert len(configs) == 4 and all(set(c) == {"learning_rate", "batch_size", "weight_decay"} for c in configs), configs
    assert len({c["learning_rate"] for c in configs}) == 4        # four different suggestions


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
