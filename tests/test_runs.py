"""hpo/runs.py: the manual grid's runs — forked runs train exactly as new processes do, several
runs at a time print whole blocks in grid order, and a stop leaves every running run resumable.

Run:  .venv/bin/python -m pytest -q tests/test_runs.py          (~40 s, CPU)
"""
import json
import os
import signal
import sys
import threading
import time

import pytest

from conftest import ROOT, run_cli
from hpo import logparse
from hpo.runs import GridRunner, Run

SMALL = ["--train-samples", "48", "--eval-samples", "8", "--epochs", "2", "--num-threads", "1",
         "--max-new-tokens", "4", "--learning-rate", "5e-3"]


def test_forked_run_trains_exactly_like_a_new_process(tmp_path):
    """The same train.py command line, as a new process and forked from a process that imported the
    training stack (python -m hpo.runs: preload, then fork): the same metrics to the last bit, and
    the forked run's setup does not include the imports."""
    new = run_cli([sys.executable, str(ROOT / "scripts/train.py"), *SMALL, "--output-dir", str(tmp_path / "new")],
                  timeout=300)
    assert new.returncode == 0, new.stderr[-3000:]
    forked = run_cli([sys.executable, "-m", "hpo.runs", *SMALL, "--output-dir", str(tmp_path / "forked")],
                     timeout=300)
    assert forked.returncode == 0, forked.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("new", "forked"))
    assert a["eval_loss"] == b["eval_loss"] and a["f1"] == b["f1"]
    assert [h["eval_loss"] for h in a["history"]] == [h["eval_loss"] for h in b["history"]]
    assert b["setup_s"] < a["setup_s"] - 1.0, (a["setup_s"], b["setup_s"])     # the imports were paid once
    bad = run_cli([sys.executable, "-m", "hpo.runs", "--batch-size", "0", "--output-dir", str(tmp_path / "bad")],
                  timeout=300)
    assert bad.returncode == 2 and "--batch-size" in bad.stderr          # train.py's exit code and message


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _run(tmp_path, k, n, seconds, rc=0):
    """A stand-in for a training run: prints an [eval] line, sleeps, prints a [result] line."""
    trial = f"run{k}"
    d = tmp_path / trial
    script = (f"print('[eval] trial={trial} epoch=1.00 step=1 eval_loss={k}.5 exact_match=0 f1=0', flush=True); "
              f"print('loading 0%\\rloading 100%', flush=True); "
              f"import time; time.sleep({seconds}); "
              f"print('[result] ' + __import__('json').dumps({{'trial_id': '{trial}', 'eval_loss': {k}.25}}));"
              f"__import__('pathlib').Path(r'{d}/metrics.json').write_text('{{\"trial_id\": \"{trial}\"}}');"
              f"raise SystemExit({rc})")
    return Run(k, n, trial, d, {"learning_rate": 0.001 * k, "cpus": 1}, cmd=[sys.executable, "-c", script])


def _job_log(tmp_path, out: str):
    log = tmp_path / "hpo-manual-7.out"
    log.write_text("===== JOB 7 START : 2026-12-03 10:00:00 UTC =====\n[job] method=manual job_id=7 job_name=hpo-manual "
                   "tier=laptop profile=tiny nodes=1 gpus=0 cpus=2 host=vm log=x\n" + out
                   + "===== JOB 7 FINISH : 2026-12-03 10:05:00 UTC (rc=0, elapsed=300.0s) =====\n")
    return logparse.parse_log(log)


def test_several_at_once_print_whole_blocks_in_grid_order(tmp_path, capsys, restore_signals):
    """Run 1 takes longer than run 2: both run together, run 2 ends first, yet run 1's block is
    printed first and no block interleaves with another; the parser reads both, without warnings."""
    runner = GridRunner(at_once=2)
    t0 = time.time()
    for run in (_run(tmp_path, 1, 3, 1.5), _run(tmp_path, 2, 3, 0.2), _run(tmp_path, 3, 3, 0.2, rc=3)):
        runner.submit(run)
    runner.finish()
    elapsed = time.time() - t0
    out = capsys.readouterr().out
    assert elapsed < 1.5 + 0.2 + 0.2 + 1.0           # runs 2 and 3 ran while run 1 did: not one after another
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("===== RUN ") and " START " in line]
    ends = [i for i, line in enumerate(lines) if line.startswith("===== RUN ") and " END " in line]
    assert [lines[i].split()[2] for i in starts] == ["1/3", "2/3", "3/3"]
    for k, (s, e) in enumerate(zip(starts, ends), start=1):            # each block whole, its own lines only
        assert s < e and all(f"run{k}" in line for line in lines[s + 1:e] if line.startswith("["))
        assert (k == 1 or ends[k - 2] < s)
    # a run's output is copied as streaming would print it: a progress bar's \r stays inside its line
    assert out.count("loading 0%\rloading 100%\n") == 3
    started2 = next(i for i, line in enumerate(lines) if line.startswith("[job] RUN 2/3 started"))
    assert started2 < ends[0] and "cpus=1" in lines[starts[0]]        # run 2 started before run 1 ended
    assert len(runner.records) == 2 and runner.failed == 1
    parsed = _job_log(tmp_path, out)
    assert [(r["trial_id"], r["status"]) for r in parsed.rows] == \
        [("run1", "completed"), ("run2", "completed"), ("run3", "error")]
    assert not parsed.warnings, [w.message for w in parsed.warnings]
    assert json.loads((tmp_path / "run1" / "run.json").read_text())["wall_s"] >= 1.5


def test_stop_leaves_every_running_run_incomplete_with_its_time(tmp_path, capsys, restore_signals):
    """USR1 (the walltime warning) with two runs in flight: both process groups stopped, each run's
    time kept in run.json for --resume, both blocks printed with `stopped=1`: incomplete, no warnings."""
    stopped = []
    runner = GridRunner(at_once=2, on_stop=lambda: stopped.append(True))
    runs = [_run(tmp_path, 1, 2, 60), _run(tmp_path, 2, 2, 60)]
    for run in runs:
        runner.submit(run)
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    with pytest.raises(SystemExit) as e:
        runner.finish()
    assert e.value.code == 0 and stopped == [True]
    for run in runs:                                      # the runs are gone, not left running
        with pytest.raises(ProcessLookupError):
            os.killpg(run.child.pid, 0)
        spent = json.loads((run.run_dir / "run.json").read_text())
        assert spent["rc"] == -signal.SIGUSR1 and 1.0 <= spent["wall_s"] < 30
    out = capsys.readouterr().out
    assert out.count("stopped=1") == 2 and "[job] SIGUSR1: grid stopped" in out
    parsed = _job_log(tmp_path, out)
    assert [(r["trial_id"], r["status"]) for r in parsed.rows] == [("run1", "incomplete"), ("run2", "incomplete")]
    assert all(1.0 <= float(r["wall_s"]) < 30 for r in parsed.rows)
    assert not parsed.warnings, [w.message for w in parsed.warnings]
