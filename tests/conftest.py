"""Shared test fixtures. Tests run offline on the CPU with the tiny model and data.

Run:  make test            (or .venv/bin/python -m pytest -q; -m "not slurm" skips the cluster tests)
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")           # nothing in the tests may touch the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from hpo.tiny import ensure_tiny_model
    return str(ensure_tiny_model())


@pytest.fixture(scope="session")
def tiny_data() -> str:
    from hpo.tiny import ensure_tiny_data
    return str(ensure_tiny_data())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model)


def run_cli(args, cwd=ROOT, env=None, timeout=600):
    """Run a command with the test interpreter; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(args, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
