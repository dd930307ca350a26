"""Several trials per GPU: what can be checked without a GPU.

Run:  .venv/bin/python -m pytest -q tests/test_fractional.py          (fast: nothing is trained)

bench/bench_fractional.py needs a CUDA GPU to measure; here: its plan (the trial commands it would
start), its arithmetic (trials per GPU-hour, the extrapolation to a workshop trial, a k that does not
fit), the result file's name, its dry run on a CPU (exit 0), bad input (exit 2); the drivers' warning
when --gpus-per-trial < 1 with a big model; and the trial's peak-memory line.
"""
import importlib.util

import pytest

from hpo.search import options


@pytest.fixture(scope="module")
def bench(root):
    spec = importlib.util.spec_from_file_location("bench_fractional", root / "bench" / "bench_fractional.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_plan_starts_k_workshop_trials_with_their_own_seeds(bench, capsys):
    assert bench.main(["--dry-run", "--trials-per-gpu", "1,2,4", "--model", "m", "--dataset", "d.json"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "scripts/train.py" in line]
    assert len(lines) == 1 + 2 + 4
    k4 = [line for line in lines if "--trial-id k4-" in line]
    assert [f"--seed {i} " in line for i, line in enumerate(k4)] == [True] * 4
    assert all("--profile workshop --model m --dataset d.json --train-samples 200 --eval-samples 20 --epochs 1"
               in line for line in lines)
    assert "training x 25, evaluation x 25" in out          # 1000 x 5 / (200 x 1); 100 x 5 / (20 x 1)


def test_trials_per_gpu_hour_and_the_workshop_extrapolation(bench):
    full = bench.parse_args([]).full_trial
    assert full == {"train_samples": 1000, "eval_samples": 100, "epochs": 5}
    assert bench.scale_factors(full, 100, 10, 1) == {"train": 1000 * 5 / 100, "eval": 100 * 5 / 10}
    # 30 s of start-up, 60 s of training and 10 s of evaluation -> 30 + 60 x 50 + 10 x 50
    t = {"wall_s": 100.0, "train_s": 60.0, "eval_s": 10.0, "peak_memory_gib": 9.0, "tokens_per_s": 1000.0,
         "train_examples": 100, "eval_examples": 10, "epochs": 1.0}
    assert bench.workshop_trial_s(t, full) == pytest.approx(3530.0)
    # a data file with fewer questions than asked for: scaled by what the trial really trained on
    assert bench.workshop_trial_s(dict(t, train_examples=50), full) == pytest.approx(30 + 60 * 100 + 10 * 50)
    slow = dict(t, wall_s=120.0, train_s=80.0, peak_memory_gib=11.0)
    e = bench.summarize(2, [t, slow], full, device_gib=80.0)
    assert e["ok"] and e["wall_s"] == 120.0 and e["trials_per_gpu_hour"] == pytest.approx(2 * 3600 / 120)
    assert e["workshop_trial_s"] == pytest.approx(30 + 80 * 50 + 10 * 50)          # the slower trial sets it
    assert e["workshop_trials_per_gpu_hour"] == pytest.approx(2 * 3600 / 4530)
    assert (e["peak_memory_gib"], e["sum_peak_memory_gib"], e["memory_share"]) == (11.0, 20.0, 0.25)
    bad = bench.summarize(4, [t, {"error": "rc=1: torch.OutOfMemoryError: CUDA out of memory"}], full, 80.0)
    assert not bad["ok"] and "1 of 4 trial(s) failed: rc=1: torch.OutOfMemoryError" in bad["error"]


@pytest.mark.parametrize("name, slug", [("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-80GB", "a100_sxm4_80gb"),
                                        ("Tesla V100-PCIE-16GB", "tesla_v100_pcie_16gb")])
def test_the_result_file_is_named_after_the_gpu(bench, name, slug):
    assert bench.gpu_slug(name) == slug


@pytest.mark.parametrize("argv, needle", [
    (["--trials-per-gpu", "1,x"], "not a comma list"),
    (["--trials-per-gpu", "0,2"], "distinct integers >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_input_exits_2(bench, argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_drivers_warn_when_a_big_model_shares_a_gpu(monkeypatch, capsys, tiny_model):
    monkeypatch.setenv("HPO_GPUS", "4")
    monkeypatch.setenv("HPO_CUDA", "1")
    a = options.parse_args("asha", ["--profile", "workshop", "--gpus-per-trial", "0.25"])
    out = capsys.readouterr().out
    assert a.max_concurrent == 16
    assert "WARNING: --gpus-per-trial 0.25 puts up to 4 trials on one GPU" in out
    assert "bigscience/bloom-560m (~0.56 B parameters: ~8 GiB" in out and "peak_memory_gib" in out
    options.parse_args("pbt", ["--profile", "workshop", "--model", "someorg/unknown-model", "--gpus-per-trial", "0.5"])
    out = capsys.readouterr().out            # a model it cannot size: warned all the same, without a number
    assert "up to 2 trials on one GPU" in out and "every trial of someorg/unknown-model must fit" in out
    for argv in (["--profile", "workshop"], ["--profile", "tiny", "--gpus-per-trial", "0.5"],
                 ["--profile", "workshop", "--model", tiny_model, "--gpus-per-trial", "0.5"]):
        options.parse_args("asha", argv)
        assert "WARNING" not in capsys.readouterr().out, argv


def test_the_peak_memory_line_says_how_many_trials_fit():
    from hpo.trial import describe_peak_memory, peak_memory
    mem = peak_memory()                   # CPU here: the process's peak RSS
    assert mem["gib"] > 0.05 and mem["device_gib"] is None
    assert describe_peak_memory(mem).startswith(f"peak memory {mem['gib']:.2f} GiB (peak RSS")
    gpu = {"gib": 9.8, "what": "torch.cuda.max_memory_allocated", "reserved_gib": 11.5, "device_gib": 139.8,
           "device_name": "NVIDIA H200"}
    assert "about 11 such trial(s) fit on one GPU" in describe_peak_memory(gpu)      # 139.8 // (11.5 + 0.5)
