"""DeepSpeed (ZeRO-2, one CPU rank under torchrun): the command line's lr and wd reach the optimizer.

A DeepSpeed JSON with an optimizer block but no "weight_decay": "auto" silently drops weight decay.
Three runs, the same seed, data and lr: wd 0, wd 0.5 and wd 0.5 again. The optimizer's param groups
must hold the given lr and wd -- group 0 (weight matrices) the wd, group 1 (biases, LayerNorm) 0 --
and the weights must show it: the two wd 0.5 runs end identical (control: any difference below is
the weight decay's), and the decayed weight matrices of the wd 0.5 run have the smaller norm
(direction: decay shrinks them). First run JIT-compiles DeepSpeed's CPU kernels (~30-90 s, cached
in TORCH_EXTENSIONS_DIR = .cache/torch_extensions).
"""
import json
import re
import shutil

import pytest
from safetensors.torch import load_file

from conftest import run_cli

pytestmark = pytest.mark.deepspeed

LR = 3e-3
RUNS = {"wd0": 0.0, "wd0.5": 0.5, "wd0.5-again": 0.5}


@pytest.fixture(scope="module")
def ds_runs(tmp_path_factory, root):
    if shutil.which("torchrun") is None and not (root / ".venv/bin/torchrun").exists():
        pytest.skip("torchrun not found")
    torchrun = shutil.which("torchrun") or str(root / ".venv/bin/torchrun")
    out = {}
    for name, wd in RUNS.items():
        d = tmp_path_factory.mktemp(f"ds_{name}")
        p = run_cli([torchrun, "--standalone", "--nproc_per_node=1", str(root / "scripts/train.py"),
                     "--profile", "tiny", "--train-samples", "160", "--eval-samples", "16", "--epochs", "1",
                     "--learning-rate", str(LR), "--weight-decay", str(wd), "--seed", "7",
                     "--deepspeed", str(root / "deepspeed_configs/zero2.json"),
                     "--output-dir", str(d), "--save-model"], timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        out[name] = (d, p.stdout)
    return out


def weights(ds_runs, name) -> dict:
    return load_file(str(ds_runs[name][0] / "model/model.safetensors"))


def decayed(w: dict) -> dict:
    """The tensors AdamW decays: HF's Trainer decays every weight but biases and LayerNorm weights,
    which in BLOOM are exactly the 2-D tensors (embeddings, attention and MLP matrices); lm_head is
    the word embeddings' tied copy (the same parameter)."""
    return {k: v for k, v in w.items() if v.dim() == 2 and k != "lm_head.weight"}


def not_decayed(w: dict) -> dict:
    return {k: v for k, v in w.items() if v.dim() == 1}


def norm(w) -> float:
    return sum(float(v.double().pow(2).sum()) for v in (w.values() if isinstance(w, dict) else [w])) ** 0.5


def test_optimizer_param_groups_hold_cli_lr_and_wd(ds_runs):
    for name, wd in RUNS.items():
        d, stdout = ds_runs[name]
        m = json.loads((d / "metrics.json").read_text())
        assert m["deepspeed"].endswith("zero2.json")
        groups = m["optimizer_param_groups"]
        assert [g["lr"] for g in groups] == [LR, LR]
        # HF's AdamW groups, in this order: the decayed weight matrices, then biases/LayerNorm without decay
        assert [g["weight_decay"] for g in groups] == [wd, 0.0]
        # the log line shows the same, group by group (group 1's weight_decay=0 proves nothing about wd)
        line = re.search(r"\[trial\] optimizer \S+: (group 0: .*)", stdout)
        assert line, stdout[-3000:]
        g0, g1 = line.group(1).split("; ")
        assert re.fullmatch(rf"group 0: lr={LR:g} weight_decay={wd:g} tensors={groups[0]['tensors']}", g0), g0
        assert re.fullmatch(rf"group 1: lr={LR:g} weight_decay=0 tensors={groups[1]['tensors']}", g1), g1


def test_identical_runs_give_identical_weights(ds_runs):
    """The control: same seed, data, lr and wd -> the same weights, bit for bit. So the difference
    between the wd 0 and wd 0.5 runs below is the weight decay's, not noise."""
    a, b = weights(ds_runs, "wd0.5"), weights(ds_runs, "wd0.5-again")
    assert a.keys() == b.keys()
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    assert max(diff.values()) == 0.0, {k: v for k, v in diff.items() if v}


def test_weight_decay_changes_the_trained_weights(ds_runs):
    w0, w1 = weights(ds_runs, "wd0"), weights(ds_runs, "wd0.5")
    assert w0.keys() == w1.keys()
    diff = max((w0[k].float() - w1[k].float()).abs().max().item() for k in w0)
    assert diff > 1e-4


def test_weight_decay_shrinks_the_decayed_weights_only(ds_runs):
    """The direction: with the same seed, data and lr, wd > 0 ends with smaller weight matrices than
    wd = 0. Decoupled decay multiplies them by (1 - lr_t * wd) at every step, so each one's norm
    shrinks by about sum_t(lr_t) * wd (linear schedule: lr * (steps + 1) / 2 * wd, ~0.8 % here; the
    control above shows 0 difference without it). Biases and LayerNorm weights are not decayed:
    their norms stay where they were (a config that decays every parameter fails here)."""
    steps = json.loads((ds_runs["wd0.5"][0] / "metrics.json").read_text())["history"][-1]["step"]
    expected = LR * (steps + 1) / 2 * RUNS["wd0.5"]                  # fraction of the norm decayed away
    w0, w1 = weights(ds_runs, "wd0"), weights(ds_runs, "wd0.5")
    ratios = {k: norm(v) / norm(decayed(w0)[k]) for k, v in decayed(w1).items()}
    assert len(ratios) >= 9, sorted(ratios)
    for k, r in ratios.items():
        assert 1 - 2 * expected < r < 1 - expected / 4, \
            f"{k}: norm ratio wd 0.5 / wd 0 = {r:.5f}, decay alone predicts {1 - expected:.5f}; all: {ratios}"
    assert norm(decayed(w1)) < norm(decayed(w0)) * (1 - expected / 4)
    kept = norm(not_decayed(w1)) / norm(not_decayed(w0))          # LayerNorm weights dominate it
    assert abs(kept - 1) < expected / 10, f"biases/LayerNorm norm ratio {kept:.6f}: decayed too?"
