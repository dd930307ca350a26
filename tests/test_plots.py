"""Tests of the workshop's plots (hpo/plots.py, scripts/plot.py, the plots of scripts/parse_logs.py
and scripts/compare.py) and of compare's fairness figures (hpo/report.py: the pick, allocated vs
used hours, hours to within 1 % of the best).

Run: .venv/bin/python -m pytest tests/test_plots.py -q        (~10 s on 2 CPU cores)

The inputs are small synthetic jobs written with the project's own writers (hpo.logfmt for the log
lines, hpo.schema for the rows and CSVs, tests/rows.py for a Ray trial's row), so a change of the
log format or the schema shows up here. The plot functions describe what they drew, counted on the
figure itself: lines per trial, x markers per stopped trial, arrows per exploit.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpo import logfmt
from hpo.plots import compare_plots, job_plots, pareto_front, plot_best_so_far, read_job_log
from hpo.report import (best_of_each, best_row, best_of_each_markdown, cumulative_best, hours_to_near_best, load_csvs,
                        pick_trial)
from hpo.schema import make_row, write_csv
from rows import ray_row

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
PNG = b"\x89PNG\r\n\x1a\n"
# the drivers' first [tune] lines, as experiments/asha/driver.py and experiments/bayesopt/driver.py print them
ASHA_BANNER = ("[tune] asha: 4 trials x <= 4 epochs, 2 at a time, 0 GPU + 1 CPU per trial; learning_rate "
               "0.0003..0.01 (log), batch_size [8, 16], weight_decay [0.0, 0.01]; profile tiny; "
               "ASHA rungs at epochs [1, 2] (then max_t=4)")
BAYES_BANNER = ("[tune] bayesopt: 5 trials x <= 2 epochs, 2 at a time, 0 GPU + 1 CPU per trial; learning_rate "
                "0.0003..0.01 (log), batch_size [8, 16], weight_decay [0.0, 0.01]; profile tiny; "
                "searcher bayesopt, 2 random start-up trials")


def _eval(trial, epoch, loss, f1, lr=1e-3, bs=8, wd=0.0, step=None, prefix="(hpo_trial pid=4242) "):
    return prefix + logfmt.eval_line(trial, epoch, step if step is not None else int(epoch * 10),
                                     {"eval_loss": loss, "exact_match": f1 / 2, "f1": f1},
                                     {"learning_rate": lr, "batch_size": bs, "weight_decay": wd})


def _log(path, method, lines, job_id="77"):
    head = [f"===== JOB {job_id} START : 2026-01-01 10:00:00 UTC =====",
            logfmt.kv_line(logfmt.JOB_INFO, method=method, job_id=job_id, job_name=f"hpo-{method}",
                           tier="laptop", nodes=1, gpus=0, cpus=2)]
    tail = [f"===== JOB {job_id} FINISH : 2026-01-01 10:10:00 UTC (rc=0, elapsed=600.0s) ====="]
    path.write_text("\n".join(head + lines + tail) + "\n")
    return path


def _job(tmp_path, method, rows, lines):
    """<tmp>/logs/<method>/hpo-<method>-77.{out,csv}: the log and the CSV of one job."""
    d = tmp_path / "logs" / method
    d.mkdir(parents=True)
    log = _log(d / f"hpo-{method}-77.out", method, lines)
    csv_path = write_csv([make_row(**r) for r in rows], d / f"hpo-{method}-77.csv")
    return log, csv_path


def _png_ok(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 10_000, path
    assert path.read_bytes()[:8] == PNG


def _counts(made, name):
    """The description of the plot whose file name ends with `name`."""
    (plot,) = [m for m in made if m["path"].name.endswith(name)]
    _png_ok(plot["path"])
    return plot


# --------------------------------------------------------------------------- reading the log

def test_read_job_log_dedupes_ranks_and_reads_the_banner(tmp_path):
    lines = [ASHA_BANNER,
             _eval("t1", 1, 2.0, 10),
             _eval("t1", 1, 2.0, 10, prefix="(hpo_trial pid=4243) "),          # a second rank: once
             "[rank0]: " + _eval("t1", 2, 1.5, 20, prefix=""),                 # torchrun prefix
             " 50%|#####     | 19/38\r 75%|######   | 28/38" + _eval("t2", 1, 2.5, 5),   # glued to a bar
             _eval("t2", 1, 2.4, 6),                                          # same (epoch, step): the later wins
             "(hpo_trial pid=1) [eval] trial=t3 epoch=1.00 step=10 eval_loss=oops f1=1",
             _eval("t1", 2, 1.5, 20) + " [repeated 2x across cluster]"]
    log = _log(tmp_path / "job.out", "asha", lines)
    job = read_job_log(log)
    assert job.rungs == [1.0, 2.0]
    assert [(p["epoch"], p["eval_loss"], p["f1"]) for p in job.history["t1"]] == [(1, 2.0, 10), (2, 1.5, 20)]
    assert [(p["epoch"], p["eval_loss"]) for p in job.history["t2"]] == [(1, 2.4)]
    assert job.history["t1"][0]["learning_rate"] == 1e-3 and job.history["t1"][0]["batch_size"] == 8
    assert "t3" not in job.history and len(job.warnings) == 1 and "eval_loss='oops'" in job.warnings[0]


def test_importing_the_plots_draws_nothing():
    code = "import sys, hpo.plots; print('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


# --------------------------------------------------------------------------- one job's plots

def _asha_job(tmp_path, banner=True):
    # t1 and t2 complete 4 epochs; t3 stopped at the rung at epoch 1, t4 at the rung at epoch 2
    spec = {"t1": [2.0, 1.5, 1.2, 1.0], "t2": [2.1, 1.6, 1.3, 1.1], "t3": [2.6], "t4": [2.2, 1.9]}
    lines = [ASHA_BANNER] if banner else []
    for e in range(1, 5):
        lines += [_eval(t, e, losses[e - 1], 10 * e) for t, losses in spec.items() if len(losses) >= e]
    rows = [ray_row(trial_id=t, status="completed" if len(v) == 4 else "stopped_early", epochs=len(v),
                    eval_loss=v[-1], f1=10 * len(v), epochs_planned=4, gpus=0, cpus=1)
            for t, v in spec.items()]
    return _job(tmp_path, "asha", rows, lines)


def test_asha_curves_one_line_per_trial_x_where_stopped_and_the_rungs(tmp_path):
    log, csv_path = _asha_job(tmp_path)
    made, warnings = job_plots(log, csv_path)
    assert warnings == []
    plot = _counts(made, "hpo-asha-77.curves.png")
    assert plot["path"].parent == csv_path.parent                        # beside the CSV
    loss, f1 = plot["axes"]
    assert (loss["trial"], loss["stopped"], loss["rung"]) == (4, 2, 2)
    assert (f1["trial"], f1["stopped"], f1["rung"]) == (4, 2, 2)
    assert loss["ylabel"].startswith("eval loss (") and f1["ylabel"] == "F1 (%)" and loss["xlabel"] == "epoch"
    assert len(made) == 1                                                 # no method-specific plot for ASHA


def test_asha_rungs_from_the_stops_when_the_log_does_not_print_them(tmp_path):
    log, csv_path = _asha_job(tmp_path, banner=False)
    made, _ = job_plots(log, csv_path, out_dir=tmp_path / "plots")
    loss = _counts(made, "curves.png")["axes"][0]
    assert loss["rung"] == 2 and loss["stopped"] == 2                    # stops at epochs 1 and 2


def test_pbt_schedule_arrows_per_exploit_and_broken_curves(tmp_path):
    # three members, 3 epochs; p3 copies p1 after epoch 1 (lr 1e-3 -> 4e-3), p2 copies p3 after epoch 2
    lr = {"p1": [2e-3] * 3, "p2": [1e-3, 1e-3, 5e-3], "p3": [1e-3, 4e-3, 4e-3]}
    wd = {"p1": [0.0] * 3, "p2": [0.01, 0.01, 0.0], "p3": [0.01, 0.0, 0.0]}
    loss = {"p1": [2.0, 1.6, 1.4], "p2": [2.2, 1.9, 1.3], "p3": [2.5, 1.5, 1.2]}
    lines = [_eval(t, e + 1, loss[t][e], 10 * (e + 1), lr=lr[t][e], wd=wd[t][e]) for e in range(3) for t in lr]
    rows = [ray_row(method="pbt", trial_id=t, status="completed", epochs=3, eval_loss=loss[t][-1],
                    learning_rate=lr[t][-1], weight_decay=wd[t][-1]) for t in lr]
    log, csv_path = _job(tmp_path, "pbt", rows, lines)
    cols = ["epoch", "trial_id", "donor_id", "donor_global_step", "old_learning_rate", "new_learning_rate",
            "old_weight_decay", "new_weight_decay", "eval_loss_before", "donor_eval_loss", "eval_loss_after"]
    with open(csv_path.with_suffix(".pbt_lineage.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerow([1.0, "p3", "p1", 10, 1e-3, 4e-3, 0.01, 0.0, 2.5, 2.0, 1.5])
        w.writerow([2.0, "p2", "p3", 20, 1e-3, 5e-3, 0.01, 0.0, 1.9, 1.5, 1.3])
    made, warnings = job_plots(log, csv_path)
    assert warnings == []
    sched = _counts(made, ".schedule.png")
    ax_lr, ax_wd = sched["axes"]
    assert (ax_lr["member"], ax_lr["exploit"], ax_lr["exploit_label"]) == (3, 2, 2)
    assert (ax_wd["member"], ax_wd["exploit"]) == (3, 2)
    assert "log scale" in ax_lr["ylabel"] and "2 exploits" in sched["title"]
    curves = _counts(made, ".curves.png")["axes"][0]
    # one line per member; each exploited member continues in a second piece, joined by a dashed exploit line
    assert (curves["trial"], curves["trial_cont"], curves["exploit"]) == (3, 2, 2)

    (tmp_path / "logs/pbt/hpo-pbt-77.pbt_lineage.csv").unlink()          # no lineage: drawn, without arrows
    made, warnings = job_plots(log, csv_path)
    assert "exploit" not in _counts(made, ".schedule.png")["axes"][0]
    assert any("no PBT lineage file" in w for w in warnings)


def test_bayesopt_suggestions_in_order_coloured_by_loss(tmp_path):
    losses = [1.3, 1.2, 0.9, float("nan"), 1.1]
    rows = [ray_row(method="bayesopt", trial_id=f"b{i}", status="completed", learning_rate=10 ** (-3 + i / 4),
                    batch_size=8 if i % 2 else 16, eval_loss=loss, epochs=2)
            for i, loss in enumerate(losses)]
    lines = [BAYES_BANNER] + [_eval(r["trial_id"], e, 1.5, 10) for r in rows for e in (1, 2)]
    log, csv_path = _job(tmp_path, "bayesopt", rows, lines)
    made, warnings = job_plots(log, csv_path)
    assert warnings == []
    (ax,) = _counts(made, ".suggestions.png")["axes"]
    # one point and one loss label per trial (the NaN one a grey x), the best a star, start-up shaded
    assert (ax["trial"], ax["loss_label"], ax["best"], ax["random"]) == (5, 5, 1, 1)
    assert "order" in ax["xlabel"] and "learning rate" in ax["ylabel"]
    assert _counts(made, ".curves.png")["axes"][0]["trial"] == 5


# --------------------------------------------------------------------------- the command lines

def _run(script, *args, cwd=None):
    return subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_parse_logs_draws_the_plots_and_a_failing_plot_loses_nothing(tmp_path):
    log = tmp_path / "hpo-manual-1.out"
    log.write_text((ROOT / "tests/fixtures/logs/manual_ranks.out").read_text())
    res = _run("parse_logs.py", log, "--quiet")
    assert res.returncode == 0, res.stderr
    _png_ok(tmp_path / "hpo-manual-1.curves.png")
    csv_text = (tmp_path / "hpo-manual-1.csv").read_text()

    # the PNG's name taken by a directory: the plot fails, the CSV is written all the same
    (tmp_path / "hpo-manual-1.curves.png").unlink()
    (tmp_path / "hpo-manual-1.curves.png").mkdir()
    (tmp_path / "hpo-manual-1.csv").unlink()
    res = _run("parse_logs.py", log)
    assert res.returncode == 0 and "WARNING: plot curves failed" in res.stderr
    assert (tmp_path / "hpo-manual-1.csv").read_text() == csv_text and "JOB SUMMARY" in res.stdout

    res = _run("parse_logs.py", log, "--no-plots", "--csv", tmp_path / "n" / "x.csv")
    assert res.returncode == 0 and not list((tmp_path / "n").glob("*.png"))


def test_plot_cli_redraws_from_the_log_or_the_csv(tmp_path):
    log, csv_path = _asha_job(tmp_path)
    out = tmp_path / "elsewhere"
    res = _run("plot.py", csv_path, "--out-dir", out)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(out / "hpo-asha-77.curves.png")]
    _png_ok(out / "hpo-asha-77.curves.png")
    assert not list(csv_path.parent.glob("*.png"))                      # --out-dir: nothing beside the CSV
    res = _run("plot.py", tmp_path / "missing.out")
    assert res.returncode == 2 and res.stderr.strip() == f"ERROR: no such log file: {tmp_path / 'missing.out'}"
    bad = tmp_path / "bad.csv"
    bad.write_text("trial,loss\nx,1\n")
    res = _run("plot.py", bad)
    assert res.returncode == 2 and "not the results schema" in res.stderr


# --------------------------------------------------------------------------- compare: the numbers

def _rows(method, specs, gpus=1, job="j1"):
    """specs: (trial, status, eval_loss, f1, hours) — each trial holds `gpus` devices for `hours`."""
    return [make_row(method=method, job_id=job, trial_id=t, status=s, learning_rate=1e-3, batch_size=8,
                     weight_decay=0.0, epochs=4 if s == "completed" else 1, epochs_planned=4, eval_loss=loss,
                     exact_match=f1 / 2, f1=f1, gpus=gpus, cpus=2, wall_s=h * 3600 / max(gpus, 1))
            for t, s, loss, f1, h in specs]


def test_hours_to_within_one_percent_of_the_best():
    rows = _rows("manual", [("a", "completed", 2.0, 10, 1.0), ("b", "completed", 0.995, 40, 1.0),
                            ("c", "completed", 1.2, 20, 1.0), ("d", "completed", 0.99, 45, 1.0)])
    # best 0.99, limit 0.9999: b (0.995) is the first trial within 1 %, after 2 GPU-hours
    assert hours_to_near_best(rows, "GPU") == pytest.approx(2.0)
    assert hours_to_near_best(rows, "CPU") == pytest.approx(4.0)        # 2 CPUs x 1 h each
    curve = cumulative_best(rows, "GPU")
    assert [(p["hours"], p["f1"], p["eval_loss"]) for p in curve] == [
        (1.0, 10, 2.0), (2.0, 40, 0.995), (3.0, 40, 0.995), (4.0, 45, 0.99)]
    just_out = _rows("manual", [("a", "completed", 1.0101, 10, 1.0), ("b", "completed", 1.0, 20, 3.0)])
    assert hours_to_near_best(just_out, "GPU") == pytest.approx(4.0)     # 1.0101 > 1.01: not within 1 %


def test_the_pick_is_the_one_rule_and_a_stopped_pick_is_never_silent():
    rows = _rows("asha", [("s1", "stopped_early", 0.8, 30, 0.2), ("c1", "completed", 0.9, 50, 1.0)])
    pick, why = pick_trial(rows)
    assert pick is best_row(rows) and pick["trial_id"] == "s1"          # the drivers' BEST trial, too
    assert "the pick s1 was stopped early at epoch 1 of 4" in why
    assert "the best completed trial is c1 (eval loss 0.9000)" in why and "--best-of" in why
    only_stopped = _rows("asha", [("s1", "stopped_early", 0.8, 30, 0.2)])
    pick, why = pick_trial(only_stopped)
    assert pick["trial_id"] == "s1" and "no trial completed" in why
    assert pick_trial(rows[1:]) == (rows[1], "")                          # completed: no note


def test_compare_allocated_used_near_best_and_stopped_early(tmp_path):
    manual = write_csv(_rows("manual", [("m1", "completed", 2.0, 10, 1.0), ("m2", "completed", 0.995, 40, 1.0),
                                        ("m3", "completed", 0.99, 45, 1.0)]), tmp_path / "hpo-manual-1.csv")
    (tmp_path / "hpo-manual-1.summary.json").write_text(json.dumps({"job_gpu_hours": 5.0, "job_cpu_hours": 10.0}))
    asha = write_csv(_rows("asha", [("s1", "stopped_early", 0.8, 30, 0.25), ("c1", "completed", 0.9, 50, 1.0),
                                    ("s2", "stopped_early", 1.5, 5, 0.25)]), tmp_path / "hpo-asha-2.csv")
    res = _run("compare.py", manual, asha, "--out-dir", tmp_path / "cmp")
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "cmp" / "best_of_each.csv", newline="") as f:
        best = {r["method"]: r for r in csv.DictReader(f)}
    m, a = best["manual"], best["asha"]
    assert (m["trial_id"], m["method_gpu_hours"], m["allocated_gpu_hours"], m["gpu_hours_to_within_1pct"]) == (
        "m3", "3", "5", "2")                                             # used 3 of 5 allocated; within 1 % after 2
    assert (m["allocated_cpu_hours"], m["cpu_hours_to_within_1pct"], m["n_stopped_early"], m["pick_note"]) == (
        "10", "4", "0", "")
    assert (a["trial_id"], a["status"], a["n_stopped_early"], a["allocated_gpu_hours"]) == ("s1", "stopped_early", "2", "")
    assert a["gpu_hours_to_within_1pct"] == "0.25" and a["method_gpu_hours"] == "1.5"   # s1 (0.8) came first
    assert "the best completed trial is c1" in a["pick_note"]
    assert "asha: allocated hours unknown (no job summary" in res.stdout
    assert "| GPU-h to within 1 % of best |" in res.stdout and "| 3 (2) |" in res.stdout
    assert f"plots: {tmp_path / 'cmp' / 'best_so_far.png'}, {tmp_path / 'cmp' / 'pareto.png'}" in res.stdout
    _png_ok(tmp_path / "cmp" / "best_so_far.png")
    _png_ok(tmp_path / "cmp" / "pareto.png")

    # a method with no completed trial: its pick is marked in the table, the note says so
    lone = write_csv(_rows("pbt", [("p1", "stopped_early", 1.0, 20, 1.0)]), tmp_path / "hpo-pbt-3.csv")
    rows, notes = best_of_each(load_csvs([lone]))
    md = best_of_each_markdown(rows, notes)
    assert "| stopped_early (!) |" in md and "- pbt: the pick p1 was stopped early" in md and "no trial completed" in md


def test_pareto_front_by_hand():
    pts = [(1.0, 10), (2.0, 30), (2.0, 20), (3.0, 25), (0.5, 5), (4.0, 40), (4.0, 40)]
    assert pareto_front(pts) == [(0.5, 5), (1.0, 10), (2.0, 30), (4.0, 40)]


def test_compare_plots_series_per_method_and_the_hour_unit(tmp_path):
    by_method = {
        "manual": _rows("manual", [("m1", "completed", 2.0, 10, 1.0), ("m2", "completed", 1.0, 40, 1.0)]),
        "asha": _rows("asha", [("s1", "stopped_early", 1.5, 5, 0.25), ("c1", "completed", 0.9, 50, 1.0)]),
    }
    made, warnings = compare_plots(by_method, tmp_path, allocated={"manual": 3.0, "asha": None})
    assert warnings == []
    f1_ax, loss_ax = _counts(made, "best_so_far.png")["axes"]
    assert f1_ax["method"] == 2 and loss_ax["method"] == 2               # one line per method, on one axis
    assert f1_ax["stopped"] == 1 and loss_ax["near_best"] == 2
    assert f1_ax["allocated"] == 1                                        # only manual's allocation is known
    assert f1_ax["xlabel"] == "cumulative GPU-hours (GPU-h)"
    (ax,) = _counts(made, "pareto.png")["axes"]
    # 3 completed points, 1 stopped (hollow); the front: s1 (0.25 h, F1 5), then c1 (1 h, F1 50), which
    # beats m1 and m2 at the same cost
    assert (ax["trial"], ax["stopped"], ax["pareto"], ax["pareto_label"]) == (3, 1, 1, 2)

    cpu_only = {"manual": _rows("manual", [("m1", "completed", 2.0, 10, 1.0)], gpus=0)}
    d = plot_best_so_far(cpu_only, tmp_path / "cpu.png")
    assert d["axes"][0]["xlabel"] == "cumulative CPU-hours (CPU-h; no trial used a GPU)"
