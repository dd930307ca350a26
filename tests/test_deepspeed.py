"""DeepSpeed (ZeRO-2, one CPU rank under torchrun): the command line's lr and wd reach the optimizer.

A DeepSpeed JSON with an optimizer block but no "weight_decay": "auto" silently drops weight decay. Here two runs that differ only in
--weight-decay must end with different weights, and the optimizer's param groups must hold the
given lr and wd. First run JIT-compiles DeepSpeed's CPU kernels (~30-90 s, cached in
TORCH_EXTENSIONS_DIR = .cache/torch_extensions).
"""
import json
import shutil

import pytest
from safetensors.torch import load_file

from conftest import run_cli

pytestmark = pytest.mark.deepspeed


@pytest.fixture(scope="module")
def ds_runs(tmp_path_factory, root):
    if shutil.which("torchrun") is None and not (root / ".venv/bin/torchrun").exists():
        pytest.skip("torchrun not found")
    torchrun = shutil.which("torchrun") or str(root / ".venv/bin/torchrun")
    out = {}
    for wd in (0.0, 0.5):
        d = tmp_path_factory.mktemp(f"ds_wd{wd}")
        p = run_cli([torchrun, "--standalone", "--nproc_per_node=1", str(root / "scripts/train.py"),
                     "--profile", "tiny", "--train-samples", "160", "--eval-samples", "16", "--epochs", "1",
                     "--learning-rate", "3e-3", "--weight-decay", str(wd), "--seed", "7",
                     "--deepspeed", str(root / "deepspeed_configs/zero2.json"),
                     "--output-dir", str(d), "--save-model"], timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        out[wd] = (d, p.stdout)
    return out


def test_optimizer_param_groups_hold_cli_lr_and_wd(ds_runs):
    for wd, (d, stdout) in ds_runs.items():
        m = json.loads((d / "metrics.json").read_text())
        assert m["deepspeed"].endswith("zero2.json")
        groups = m["optimizer_param_groups"]
        assert {g["lr"] for g in groups} == {3e-3}
        # HF's AdamW groups: decay on weights, none on biases/LayerNorm
        assert sorted(g["weight_decay"] for g in groups) == sorted([wd, 0.0])
        assert f"weight_decay={wd:g}" in stdout


def test_weight_decay_changes_the_trained_weights(ds_runs):
    w0 = load_file(str(ds_runs[0.0][0] / "model/model.safetensors"))
    w1 = load_file(str(ds_runs[0.5][0] / "model/model.safetensors"))
    assert w0.keys() == w1.keys()
    diff = max((w0[k].float() - w1[k].float()).abs().max().item() for k in w0)
    assert diff > 1e-4
