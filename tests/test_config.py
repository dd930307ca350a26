"""hpo/config.py is the one source of every trial setting: names, help, per-tier defaults.

Run: .venv/bin/python -m pytest -q tests/test_config.py      (fast: no training)
"""
import importlib.util
import sys
from dataclasses import fields

import pytest

from conftest import run_cli
from hpo import logfmt
from hpo.config import (HYPERPARAMETERS, PROFILES, SMOKE, TrialConfig, option_name, trial_config_from,
                        trial_parser)
from hpo.schema import COLUMNS
from hpo.search import options


def _driver(root, method):
    spec = importlib.util.spec_from_file_location(f"driver_{method}", root / f"experiments/{method}/driver.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_help_lists_every_field_with_its_help(root):
    out = " ".join(run_cli([sys.executable, str(root / "scripts/train.py"), "--help"], timeout=60).stdout.split())
    for f in fields(TrialConfig):
        if f.metadata.get("cli", True):
            assert option_name(f.name) in out, f.name
    # per-tier defaults are shown from PROFILES, not written twice
    assert f"tiny: {PROFILES['tiny'].trial['epochs']}, workshop: {PROFILES['workshop'].trial['epochs']}" in out


def test_one_name_from_command_line_to_csv_column():
    for name in HYPERPARAMETERS + ("seed", "epochs"):
        assert name in COLUMNS and name in {f.name for f in fields(TrialConfig)}
        assert option_name(name) == "--" + name.replace("_", "-")
    # the log lines use the column names as keys
    line = logfmt.eval_line("t", 1.0, 5, {"eval_loss": 1.0, "exact_match": 2.0, "f1": 3.0},
                            {"learning_rate": 1e-3, "batch_size": 8, "weight_decay": 0.01})
    keys = set(logfmt.parse_kv(line[len(logfmt.EVAL):]))
    assert set(HYPERPARAMETERS) <= keys and "lr" not in keys and "bs" not in keys and "wd" not in keys


def test_to_argv_round_trips_through_the_train_py_parser():
    cfg = TrialConfig(profile="workshop", learning_rate=3e-5, batch_size=2, weight_decay=0.01, seed=7, epochs=3.0,
                      precision="fp32", keep_unanswerable=True, trial_id="x", output_dir="/tmp/o",
                      deepspeed=None, max_length=256)
    back = trial_config_from(trial_parser().parse_args(cfg.to_argv()))
    assert back == cfg


def test_ray_drivers_take_budget_and_space_from_the_profile(monkeypatch):
    monkeypatch.setenv("HPO_GPUS", "0")
    for profile in PROFILES:
        for method in ("asha", "pbt", "bayesopt"):
            a = options.parse_args(method, ["--profile", profile])
            p = PROFILES[profile]
            assert a.epochs == p.trial["epochs"] and a.num_samples == p.trials[method]
            assert (a.learning_rate_min, a.learning_rate_max) == p.space.learning_rate
            assert a.batch_sizes == list(p.space.batch_size) and a.weight_decays == list(p.space.weight_decay)
            assert a.seed == TrialConfig().seed
    a = options.parse_args("asha", ["--smoke"])
    assert (a.epochs, a.num_samples, a.train_samples, a.eval_samples) == \
        (SMOKE["epochs"], SMOKE["trials"], SMOKE["train_samples"], SMOKE["eval_samples"])
    # the command line wins over --smoke and the profile
    a = options.parse_args("asha", ["--smoke", "--epochs", "5", "--num-samples", "3"])
    assert (a.epochs, a.num_samples) == (5, 3)


def test_every_method_trains_the_same_epochs_by_default(root, monkeypatch):
    """The tiny profile's epochs once differed (manual 3, ASHA/PBT 4, BayesOpt 3): now one value."""
    monkeypatch.setenv("HPO_GPUS", "0")
    manual = _driver(root, "manual").parse_args(["--profile", "tiny"])
    cfg = trial_config_from(manual)
    assert cfg.value("epochs") == PROFILES["tiny"].trial["epochs"]
    assert manual.learning_rates == list(PROFILES["tiny"].grid.learning_rate)
    for method in ("asha", "pbt", "bayesopt"):
        assert options.parse_args(method, ["--profile", "tiny"]).epochs == cfg.value("epochs")


def test_a_ray_trial_config_is_built_from_the_driver_options(monkeypatch):
    monkeypatch.setenv("HPO_GPUS", "0")
    a = options.parse_args("asha", ["--profile", "tiny", "--max-length", "96", "--precision", "fp32"])
    cfg = trial_config_from(a, learning_rate=1e-3, batch_size=8, weight_decay=0.0, trial_id="t",
                            output_dir="/tmp/x").resolved()
    assert (cfg.max_length, cfg.precision, cfg.epochs, cfg.seed) == (96, "fp32", a.epochs, a.seed)
    assert cfg.train_samples == PROFILES["tiny"].trial["train_samples"]


@pytest.mark.parametrize("argv, needle", [
    (["--epochs", "2.5"], "--epochs must be a whole number"),
    (["--profile", "huge"], "invalid choice"),
    (["--resume", "no-such-job"], "--resume no-such-job: no job directory"),
    (["--max-failures", "-1"], "--max-failures must be >= 0"),
    (["--data-seed", "x"], "invalid int value"),
])
def test_driver_options_bad_values(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        options.parse_args("asha", argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_resume_of_a_directory_without_a_search_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        options.parse_args("asha", ["--resume", str(tmp_path)])
    assert e.value.code == 2 and "holds no asha search to continue" in capsys.readouterr().err


def test_eval_batch_size_must_be_positive():
    from hpo.config import ConfigError
    with pytest.raises(ConfigError, match="--eval-batch-size"):
        TrialConfig(eval_batch_size=0).resolved()


@pytest.mark.parametrize("argv, needle", [
    (["--gpus-per-run", "0"], "--gpus-per-run must be >= 1"),
    (["--resume", "no-such-job"], "--resume no-such-job: no job directory"),
])
def test_manual_driver_bad_values(root, argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        _driver(root, "manual").parse_args(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("env, argv, expected", [
    ({"HPO_TIER": "laptop", "HPO_GPUS_PER_NODE": "0", "HPO_CPUS": "4"}, [], 4),      # one run per CPU
    ({"HPO_TIER": "laptop", "HPO_GPUS_PER_NODE": "0", "HPO_CPUS": "4"}, ["--runs-at-once", "1"], 1),
    ({"HPO_TIER": "cluster", "HPO_GPUS_PER_NODE": "0", "HPO_CPUS": "8"}, [], 1),      # srun steps: one at a time
    ({"HPO_TIER": "laptop", "HPO_GPUS_PER_NODE": "1", "HPO_CPUS": "8"}, [], 1),       # a GPU: each run holds it
])
def test_manual_runs_at_once_default(root, monkeypatch, env, argv, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _driver(root, "manual").parse_args(["--profile", "tiny", *argv]).runs_at_once == expected


@pytest.mark.parametrize("env, value, needle", [
    ({"HPO_TIER": "cluster", "HPO_GPUS_PER_NODE": "2"}, "2", "--runs-at-once > 1 is for a CPU-only machine"),
    ({"HPO_TIER": "laptop", "HPO_GPUS_PER_NODE": "1"}, "2", "--runs-at-once > 1 is for a CPU-only machine"),
    ({"HPO_TIER": "laptop", "HPO_GPUS_PER_NODE": "0"}, "0", "--runs-at-once must be >= 1, got 0"),
])
def test_manual_runs_at_once_bad_values_exit_2(root, monkeypatch, capsys, env, value, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        _driver(root, "manual").parse_args(["--profile", "tiny", "--runs-at-once", value])
    assert e.value.code == 2 and needle in capsys.readouterr().err
