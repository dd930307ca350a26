"""bench/bench_hpo.py's numbers, from synthetic job CSVs (nothing is trained or launched).

Run:  .venv/bin/python -m pytest -q tests/test_bench_hpo.py          (fast: a few seconds)

Two seeds of four methods with hand-picked eval losses and hours: the best eval loss, the total
CPU-hours, the cost to reach the manual grid's best of the same seed (in CSV row order, "never"
when no trial gets there), their median and range over the seeds, the table's verdicts, and the
result files (never replaced by a smaller one).
"""
import importlib.util
import json
import math

import pytest

from hpo.schema import make_row, write_csv
from rows import ray_row


@pytest.fixture
def bench(root, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_hpo", root / "bench" / "bench_hpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def no_launch(*a, **k):           # these tests never start a job (each is ~4 min of CPU)
        raise AssertionError(f"bench_hpo tried to launch a job: {a}")
    monkeypatch.setattr(mod, "launch", no_launch)
    return mod


# (eval_loss, wall_s) per trial in CSV row order; cpus=1, so cpu_hours = wall_s / 3600
LOSSES = {
    0: {"manual": [(1.2, 360), (0.9, 360), (1.0, 360)],            # grid's best 0.9, found after 0.2 h
        "asha": [(1.5, 180), (0.85, 180), (2.0, 36)],              # reaches it after 0.1 h, beats it
        "pbt": [(1.0, 720), (0.95, 720)],                          # never
        "bayesopt": [(1.1, 360), (1.3, 360), (0.9, 360)]},         # reaches it exactly (<=) after 0.3 h
    1: {"manual": [(0.8, 360), (0.7, 360), (0.75, 360)],           # grid's best 0.7, found after 0.2 h
        "asha": [(0.9, 180), (0.72, 180)],                         # never
        "pbt": [(0.69, 720), (0.9, 720)],                          # reaches it after 0.2 h, beats it
        "bayesopt": [(float("nan"), 360), (0.6, 36)]},             # a diverged trial, then 0.6 after 0.11 h
}


def _write_jobs(tmp_path, seeds=(0, 1), fingerprint="fp1"):
    paths = []
    for seed in seeds:
        for method, trials in LOSSES[seed].items():
            rows = [make_row(**ray_row(method=method, job_id=f"job-s{seed}", trial_id=f"{method}-{seed}-{i}",
                                       status="completed", seed=seed, eval_loss=loss, f1=10 * i + seed,
                                       wall_s=wall, gpus=0, cpus=1, data_fingerprint=fingerprint))
                    for i, (loss, wall) in enumerate(trials)]
            p = tmp_path / method / f"hpo-{method}-job-s{seed}.csv"
            p.parent.mkdir(parents=True, exist_ok=True)
            write_csv(rows, p)
            paths.append(str(p))
    return paths


def test_the_numbers_per_method_and_seed(bench, tmp_path):
    runs = bench.runs_from_csvs(_write_jobs(tmp_path))
    entries, summary, basis = bench.aggregate(runs, [0, 1])
    assert basis == "CPU"
    e = {(x["method"], x["seed"]): x for x in entries}
    assert len(entries) == 8
    # seed 0
    assert e[("manual", 0)]["best_eval_loss"] == 0.9 and e[("manual", 0)]["hours_to_grid_best"] == pytest.approx(0.2)
    assert e[("manual", 0)]["total_hours"] == pytest.approx(0.3)
    assert e[("asha", 0)]["hours_to_grid_best"] == pytest.approx(0.1) and e[("asha", 0)]["beat_grid"]
    assert e[("asha", 0)]["total_hours"] == pytest.approx(0.11) and e[("asha", 0)]["best_f1"] == 10
    assert e[("pbt", 0)]["hours_to_grid_best"] is None and not e[("pbt", 0)]["reached_grid_best"]
    assert e[("bayesopt", 0)]["hours_to_grid_best"] == pytest.approx(0.3) and not e[("bayesopt", 0)]["beat_grid"]
    # seed 1: the target is seed 1's grid (0.7), not seed 0's
    assert e[("asha", 1)]["grid_best_eval_loss"] == 0.7 and e[("asha", 1)]["hours_to_grid_best"] is None
    assert e[("pbt", 1)]["hours_to_grid_best"] == pytest.approx(0.2) and e[("pbt", 1)]["beat_grid"]
    assert e[("bayesopt", 1)]["best_eval_loss"] == 0.6 and e[("bayesopt", 1)]["hours_to_grid_best"] == pytest.approx(0.11)
    # over the seeds: median and range; "never" is worse than any number
    asha = summary["asha"]
    assert asha["reached_grid_best"] == 1 and asha["beat_grid"] == 1
    assert asha["hours_to_grid_best"] == {"median": None, "min": pytest.approx(0.1), "max": None, "n": 2, "n_never": 1}
    bo = summary["bayesopt"]["hours_to_grid_best"]
    assert (bo["median"], bo["min"], bo["max"]) == (pytest.approx(0.205), pytest.approx(0.11), pytest.approx(0.3))
    assert summary["manual"]["best_eval_loss"]["median"] == pytest.approx(0.8)
    assert summary["pbt"]["total_hours"]["median"] == pytest.approx(0.4)


def test_the_table_says_where_a_method_did_not_beat_the_grid(bench, tmp_path):
    _, summary, basis = bench.aggregate(bench.runs_from_csvs(_write_jobs(tmp_path)), [0, 1])
    text = bench.markdown(summary, basis)
    assert "| asha | 0,1 | 0.7850 [0.7200 – 0.8500] |" in text
    assert "| 0.205 [0.110 – 0.300] | 2 of 2 | 1 of 2 |" in text                     # bayesopt
    assert "asha: reached the grid's best in 1 of 2 seed(s) — NOT in 1" in text
    assert "never [0.100 – never]" in text


def test_the_command_line_writes_json_and_plot_and_never_shrinks_them(bench, tmp_path, capsys):
    csvs = _write_jobs(tmp_path)
    out = tmp_path / "out"
    assert bench.main(["--from-csvs", *csvs, "--out-dir", str(out)]) == 0
    doc = json.loads((out / "hpo_efficiency.json").read_text())
    assert len(doc["entries"]) == 8 and doc["seeds"] == [0, 1] and doc["basis"] == "CPU-hours"
    assert [x for x in doc["entries"] if x["method"] == "pbt" and x["seed"] == 0][0]["hours_to_grid_best"] is None
    assert (out / "hpo_efficiency.png").stat().st_size > 10_000
    # seed 0 alone: 4 entries < 8 -> the file stays, the new one is written beside it, exit 1
    assert bench.main(["--from-csvs", *csvs, "--seeds", "0", "--out-dir", str(out)]) == 1
    assert len(json.loads((out / "hpo_efficiency.json").read_text())["entries"]) == 8
    assert len(json.loads((out / "hpo_efficiency.new.json").read_text())["entries"]) == 4
    assert "was NOT replaced" in capsys.readouterr().err


def test_missing_runs_are_launched_and_a_dry_run_lists_them(bench, tmp_path, capsys):
    csvs = _write_jobs(tmp_path, seeds=(0,))
    assert bench.main(["--from-csvs", *csvs, "--seeds", "0,2", "--dry-run", "--log-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 job(s) to run" in out
    for m in ("manual", "asha", "pbt", "bayesopt"):
        assert f"experiments/{m}/run.slurm --seed 2" in out
    assert "--seed 0" not in out                           # seed 0 comes from the CSVs


@pytest.mark.parametrize("argv, needle", [
    ([], "give --seeds"),
    (["--seeds", "a,b"], "not a comma list"),
])
def test_bad_arguments_exit_2(bench, argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_runs_that_cannot_be_compared_are_refused(bench, tmp_path, capsys):
    csvs = _write_jobs(tmp_path / "a", seeds=(0,)) + _write_jobs(tmp_path / "b", seeds=(1,), fingerprint="fp2")
    assert bench.main(["--from-csvs", *csvs, "--out-dir", str(tmp_path / "o")]) == 2
    assert "different questions" in capsys.readouterr().err
    no_grid = [p for p in _write_jobs(tmp_path / "c", seeds=(0,)) if "manual" not in p]
    assert bench.main(["--from-csvs", *no_grid, "--out-dir", str(tmp_path / "o")]) == 2
    assert "no results for manual seed 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_spread_counts_never_as_the_worst(bench):
    assert bench.spread([1.0, None, 3.0]) == {"median": 3.0, "min": 1.0, "max": None, "n": 3, "n_never": 1}
    assert bench.spread([None, None])["median"] is None
    assert math.isclose(bench.spread([2.0, 4.0])["median"], 3.0)
