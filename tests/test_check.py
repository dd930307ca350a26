"""The setup-check job (experiments/check/run.slurm, hpo/check.py) and the budget (scripts/budget.py).

Run:  .venv/bin/python -m pytest -q tests/test_check.py                  (~1 min; the launcher tests are `slow`)
      .venv/bin/python -m pytest -q -m slurm tests/test_check.py         (the 2-node SLURM run, root, < 90 s)

* the verdicts themselves (GPUs per node, Ray's nodes) on the cases a real cluster produces, as pure
  functions: the practice cluster's emulated GPUs pass with a note, a real allocation torch cannot use fails;
* model/data found offline in an HF cache laid out as the hub writes it, and the FAIL advice when not;
* the launcher on the laptop tier: every PASS line, the trial's numbers equal to its metrics.json; and a
  missing model directory: the FAIL line with its advice, exit 1; no process outlives either run;
* on the local 2-node SLURM cluster: every check PASSes on both nodes, the trial runs on the last node;
* scripts/budget.py: GPU-hours recomputed from #SBATCH lines written here, SLURM's time formats, bad input.
"""
import json
import math
import re
import subprocess
import sys
import uuid

import pytest

import leftovers
from conftest import ROOT, run_cli
from hpo.check import Result, judge_gpus, judge_ray
from slurm_util import _assert_completed, _assert_no_leftovers, _text, _wait_gone, slurm_cluster, submit  # noqa: F401

PASS = re.compile(r"^\[check\] PASS (\S+): (.*)$", re.M)
FAIL = re.compile(r"^\[check\] FAIL (\S+): (.*) -> (.*)$", re.M)


# ----------------------------------------------------------------------------- verdicts (pure)
def probe(**kw):
    base = {"node": "n1", "slurm_gpus": "2", "cuda_visible_devices": "0,1", "nvidia_smi": "/usr/bin/nvidia-smi",
            "torch": "2.13.0", "torch_cuda": "12.4", "cuda_count": 2, "names": ["NVIDIA H100"], "capability": "9.0"}
    return {**base, **kw}


def test_gpus_real_allocation_that_torch_sees_passes():
    r = judge_gpus(probe(), "cluster", 2)
    assert r.ok and r.name == "gpus@n1", r.line()
    assert "SLURM allocated 2 GPU(s) (CUDA_VISIBLE_DEVICES=0,1)" in r.found and "(CUDA 12.4) sees 2" in r.found
    assert "2 x NVIDIA H100, compute capability 9.0" in r.found
    more = judge_gpus(probe(cuda_count=4, names=["A100"] * 4), "cluster", 2)     # more than asked: still usable
    assert more.ok and "sees 4" in more.found


def test_gpus_emulated_on_the_practice_cluster_pass_with_a_note():
    # practice/local_slurm.sh: gres handed out, CUDA_VISIBLE_DEVICES set, no driver, no nvidia-smi
    r = judge_gpus(probe(nvidia_smi=None, torch_cuda=None, cuda_count=0, names=[], capability=None), "cluster", 2)
    assert r.ok and "emulated" in r.found and "CPU" in r.found, r.line()


@pytest.mark.parametrize("kw, advice", [
    # nvidia-smi is there but torch is a CPU wheel: the classic wrong environment
    (dict(torch_cuda=None, cuda_count=0, names=[]), "CPU-only build"),
    # a CUDA build that sees fewer GPUs than SLURM gave (driver, CUDA_VISIBLE_DEVICES reset, no --nv)
    (dict(cuda_count=1), "APPTAINER_NV=1"),
])
def test_gpus_real_allocation_that_torch_cannot_use_fails(kw, advice):
    r = judge_gpus(probe(**kw), "cluster", 2)
    assert not r.ok and advice in r.fix, r.line()
    assert r.line().startswith("[check] FAIL gpus@n1: SLURM allocated 2 GPU(s)") and " -> " in r.line()


def test_gpus_none_allocated_on_the_cluster_fails_and_laptop_passes():
    r = judge_gpus(probe(slurm_gpus="0", cuda_count=0), "cluster", 0)
    assert not r.ok and "--gres=gpu:N" in r.fix and "SBATCH_PARTITION" in r.fix
    # SLURM_GPUS_ON_NODE missing in the worker: what Ray registered (= the job's request per node) counts
    assert judge_gpus(probe(slurm_gpus=None, cuda_count=0, nvidia_smi=None), "cluster", 2).found.startswith(
        "SLURM allocated 2 GPU(s)")
    lap = judge_gpus(probe(slurm_gpus=None, cuda_count=0, nvidia_smi=None, torch_cuda=None), "laptop", 0)
    assert lap.ok and "laptop tier" in lap.found


def test_ray_node_count_and_gpus_per_node():
    nodes = [{"host": "n1", "ip": "127.0.1.1", "cpus": 2.0, "gpus": 2.0},
             {"host": "n2", "ip": "127.0.1.2", "cpus": 2.0, "gpus": 2.0}]
    assert judge_ray(nodes, 2, 2, "cluster").ok
    missing = judge_ray(nodes[:1], 2, 2, "cluster")
    assert not missing.ok and "1 Ray node(s) for 2 SLURM node(s)" in missing.found and "ray-nodes" in missing.fix
    no_gpu = judge_ray([nodes[0], {**nodes[1], "gpus": 0.0}], 2, 2, "cluster")
    assert not no_gpu.ok and "n2" in no_gpu.found
    assert Result("x", False, "what", "fix").line() == "[check] FAIL x: what -> fix"


# ----------------------------------------------------------------------------- model + data offline
CHECKS = """
import json, sys
from hpo.check import check_data, check_model
out = [check_model(m) for m in sys.argv[1:4]] + [check_data("squad", 10, 5, 0)]
print(json.dumps([[r.name, r.ok, r.found, r.fix] for r in out]))
"""


def test_model_and_data_found_offline_in_the_hf_cache_or_fail_with_the_fill_command(tmp_path, tiny_model):
    """A hub cache as `hf download` lays it out (refs/main -> snapshots/<commit>/): the model check
    reads it offline; a hub id that is not in it, or whose weights are missing, FAILs with the command
    that fills the cache; so does a data set that is not cached (no network is ever tried)."""
    import shutil
    from pathlib import Path
    hub = tmp_path / "hf" / "hub"
    for repo, with_weights in (("hpo-test/tiny-bloom", True), ("hpo-test/no-weights", False)):
        d = hub / f"models--{repo.replace('/', '--')}"
        (d / "refs").mkdir(parents=True)
        (d / "refs" / "main").write_text("abc123")
        snap = d / "snapshots" / "abc123"
        shutil.copytree(tiny_model, snap)
        if not with_weights:
            (snap / "model.safetensors").unlink()
    size = Path(tiny_model, "model.safetensors").stat().st_size
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = run_cli([sys.executable, "-c", CHECKS, "hpo-test/tiny-bloom", "hpo-test/missing", "hpo-test/no-weights"],
                env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    (ok, missing, no_weights, data) = json.loads(p.stdout.strip().splitlines()[-1])
    assert ok[1], ok
    assert "bloom, 2 layers, hidden 128" in ok[2] and "tokenizer (512 tokens)" in ok[2]
    assert f"model.safetensors ({size / 1e6:.1f} MB)" in ok[2] and str(hub) in ok[2]
    assert not missing[1] and "not found offline" in missing[2]
    assert "hf download hpo-test/missing --include '*.json' --include model.safetensors" in missing[3]
    assert not no_weights[1] and "no weights file" in no_weights[2]
    assert "hf download hpo-test/no-weights" in no_weights[3]
    assert not data[1] and data[0] == "data" and "datasets.load_dataset('squad')" in data[3], data


# ----------------------------------------------------------------------------- the launcher, laptop tier
def launch(tmp_path, *args):
    job_id = f"test-check-{uuid.uuid4().hex[:8]}"
    env = {"HPO_LOG_ROOT": str(tmp_path), "HPO_JOB_ID": job_id, "RAY_AUTH_MODE": "disabled", "SLURM_JOB_ID": "",
           "HPO_PROFILE": ""}
    log = tmp_path / "check" / f"hpo-check-{job_id}.out"
    with leftovers.Watch(job_id) as watch:
        p = run_cli(["bash", str(ROOT / "experiments/check/run.slurm"), *args], env=env, timeout=300)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "<no log>"
    leftovers.assert_gone(job_id, watch, context=f"--- {log} (tail):\n{tail}")
    assert log.exists() and "[check] VERDICT" in log.read_text(), p.stdout[-3000:] + p.stderr[-3000:]
    return p, log, tmp_path / "check" / f"hpo-check-{job_id}"


@pytest.mark.slow
def test_laptop_check_passes_and_prints_every_check(tmp_path, tiny_data):
    p, log, job_dir = launch(tmp_path, "--smoke")
    text = log.read_text()
    assert p.returncode == 0, text[-4000:]
    passed = dict(PASS.findall(text))
    host = next(n for n in passed if n.startswith("gpus@"))
    assert set(passed) == {"ray", host, "model", "data", "trial"}, text[-4000:]
    assert not FAIL.findall(text) and "[check] VERDICT: PASS - all 5 checks passed" in text
    assert "1 node(s) of 1" in passed["ray"] and "laptop tier" in passed[host]
    # the data check's sample is the methods' (the profile's 1600/100): the same fingerprint they record
    from hpo.config import PROFILES
    from hpo.data import load_squad
    t = PROFILES["tiny"].trial
    fp = load_squad(tiny_data, t["train_samples"], t["eval_samples"], 0).fingerprint
    assert f"fingerprint {fp}" in passed["data"]
    assert f"{t['train_samples']} train / {t['eval_samples']} validation" in passed["data"]
    # the trial's PASS line = its metrics.json, written through the real trial code (1 epoch, SMOKE sample)
    metrics = json.loads((job_dir / "trial" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and (metrics["train_examples"], metrics["eval_examples"]) == (160, 16)
    assert math.isfinite(metrics["eval_loss"]) and f"eval_loss={metrics['eval_loss']:.4f}" in passed["trial"]
    # ... and its [eval] line reached the log before the verdict (Ray forwards worker output asynchronously)
    assert re.search(rf"\[eval\] trial=check epoch=1\.00 .*eval_loss={metrics['eval_loss']:.4f}", text)
    assert text.index("[eval] trial=check") < text.index("[check] PASS trial")
    seconds = float(re.search(r" in ([\d.]+) s \(setup", passed["trial"]).group(1))
    assert 0 < seconds < 240


@pytest.mark.slow
def test_laptop_check_fails_on_a_missing_model_with_its_advice(tmp_path):
    p, log, _ = launch(tmp_path, "--smoke", "--model", str(tmp_path / "no-such-model"))
    text = log.read_text()
    assert p.returncode == 1, text[-4000:]
    failed = {name: (what, fix) for name, what, fix in FAIL.findall(text)}
    assert set(failed) == {"model", "trial"}, text[-4000:]
    assert f"model directory not found: {tmp_path / 'no-such-model'}" in failed["model"][0]
    assert "save_pretrained" in failed["model"][1]
    assert "not run" in failed["trial"][0] and "model" in failed["trial"][0]
    assert {"ray", "data"} <= set(dict(PASS.findall(text)))
    assert "[check] VERDICT: FAIL - 2 of 5 checks failed (model, trial)" in text
    assert re.search(r"===== JOB \S+ FINISH : .* \(rc=1,", text)


def test_driver_rejects_bad_options():
    for args, needle in ((["--max-seconds", "0"], "--max-seconds must be > 0"),
                         (["--smoke", "--profile", "workshop"], "--smoke checks the tiny profile"),
                         (["--learning-rate", "-1"], "--learning-rate: must be a positive number")):
        p = run_cli([sys.executable, str(ROOT / "experiments/check/driver.py"), *args], timeout=60)
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)


# ----------------------------------------------------------------------------- SLURM: 2 nodes
@pytest.mark.slurm
def test_sbatch_check_two_nodes_all_pass(slurm_cluster, tmp_path):
    jid = submit("experiments/check/run.slurm", tmp_path / "hpo-check-%j.out",
                 ["-N2", "-c2", "--mem=4G", "--gres=gpu:2"], time_min=3,
                 # a smaller sample than the default (SMOKE's 160/16): on 2 shared cores the trial's
                 # imports already take most of its time, and the test must stay well under 90 s
                 script_args=["--smoke", "--train-samples", "32", "--eval-samples", "8"])
    waited = _wait_gone(jid, timeout=90)
    log = tmp_path / f"hpo-check-{jid}.out"
    _assert_completed(jid, log)
    text = _text(log)
    passed = dict(PASS.findall(text))
    assert set(passed) == {"ray", "gpus@n1", "gpus@n2", "model", "data", "trial"}, text[-5000:]
    assert not FAIL.findall(text) and "[check] VERDICT: PASS - all 6 checks passed" in text
    assert "2 node(s) of 2" in passed["ray"] and "n1 (127.0.1.1: 2 CPU, 2 GPU)" in passed["ray"] \
        and "n2 (127.0.1.2: 2 CPU, 2 GPU)" in passed["ray"]
    for node in ("n1", "n2"):       # SLURM's gres reached each node's Ray step; torch sees none: emulated
        assert passed[f"gpus@{node}"].startswith("SLURM allocated 2 GPU(s)") and "emulated" in passed[f"gpus@{node}"]
    assert " on n2 (" in passed["trial"], passed["trial"]          # the last node, not the batch node
    metrics = json.loads((tmp_path / f"hpo-check-{jid}" / "trial" / "metrics.json").read_text())
    assert f"eval_loss={metrics['eval_loss']:.4f}" in passed["trial"]
    assert (metrics["train_examples"], metrics["eval_examples"]) == (32, 8) and "(32 train / 8 eval" in passed["trial"]
    assert waited < 90
    _assert_no_leftovers(jid, log)


@pytest.mark.slurm
def test_sbatch_check_says_fail_when_ray_does_not_boot(slurm_cluster, tmp_path):
    """Ray's boot ends the job before the driver starts: run.slurm itself prints the FAIL line and verdict."""
    jid = submit("experiments/check/run.slurm", tmp_path / "hpo-check-%j.out",
                 ["-N2", "-c2", "--mem=4G", "--gres=gpu:2"], time_min=3, script_args=["--smoke"],
                 HPO_RAY_BIN="/bin/false")          # every node's `ray start` fails at once
    _wait_gone(jid, timeout=60)
    log = tmp_path / f"hpo-check-{jid}.out"
    text = _text(log)
    assert re.search(r"^\[check\] FAIL ray: the Ray cluster did not come up on all 2 node\(s\) .* -> read "
                     r".*ray-nodes/", text, re.M), text[-3000:]
    assert "[check] VERDICT: FAIL - Ray did not boot" in text and not PASS.findall(text)
    assert text.index("[check] VERDICT") < text.index(f"===== JOB {jid} FINISH")
    assert re.search(rf"===== JOB {jid} FINISH : .* \(rc=1,", text)
    _assert_no_leftovers(jid, log)


# ----------------------------------------------------------------------------- scripts/budget.py
def run_slurm(nodes="#SBATCH --nodes=2", gres="#SBATCH --gres=gpu:2", time="#SBATCH --time=00:45:00", extra=""):
    return "\n".join(["#!/bin/bash", "# a comment before the options does not end them",
                      f"{nodes}              # trailing comment", gres, "", time, extra, "echo start",
                      "#SBATCH --time=99:00:00   # after the first command: sbatch ignores it"]) + "\n"


def budget(*args, files=None, tmp_path=None):
    exp = tmp_path / "experiments"
    for name, text in (files or {}).items():
        (exp / name).mkdir(parents=True, exist_ok=True)
        (exp / name / "run.slurm").write_text(text)
    return subprocess.run([sys.executable, str(ROOT / "scripts/budget.py"), "--experiments", str(exp), *args],
                          capture_output=True, text=True, timeout=60)


def rows(stdout):
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("job", "---") and not cells[0].startswith("**"):
            out[cells[0]] = cells
    return out


def total(stdout, label):
    m = re.search(rf"^\| \*\*{label}\*\*.*\*\*([\d.]+)\*\* \|$", stdout, re.M)
    assert m, stdout
    return float(m.group(1))


def test_budget_per_job_student_and_class(tmp_path):
    files = {"check": run_slurm(time="#SBATCH -t 10"),                                   # minutes
             "asha": run_slurm(),                                                        # 2 x 2 x 0.75 h
             "manual": run_slurm(nodes="#SBATCH -N 1", gres="#SBATCH --gres=gpu:a100:1",
                                 time="#SBATCH --time=1-02:30:00"),                      # 1 x 1 x 26.5 h
             "extra": run_slurm(nodes="#SBATCH --nodes 1-3", gres="#SBATCH --gpus=6",     # 6 GPUs in all
                                time="#SBATCH --time=30:00")}                             # 30 min 0 s
    p = budget("--students", "7", "--team-size", "2", files=files, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    r = rows(p.stdout)
    assert list(r) == ["check", "manual", "asha", "extra"]           # session order, then by name
    assert r["check"] == ["check", "2", "2", "0:10:00", f"{2 * 2 * 10 / 60:.2f}"]
    assert r["asha"][1:] == ["2", "2", "0:45:00", "3.00"]
    assert r["manual"][1:] == ["1", "1", "26:30:00", "26.50"]
    assert r["extra"][1:] == ["3", "2", "0:30:00", "3.00"]              # the range's maximum: 3 nodes
    per_student = 2 * 2 * 10 / 60 + 3 + 26.5 + 3
    assert total(p.stdout, "per student") == pytest.approx(per_student, abs=0.006)
    assert "7 students in teams of 2 = 4 sets of jobs" in p.stdout       # ceil(7 / 2)
    assert total(p.stdout, "per class") == pytest.approx(4 * per_student, abs=0.006)


def test_budget_of_the_repository_adds_up(tmp_path):
    """The real run.slurm files: one row per job directory (the check included), and the totals are
    the sums of the rows, whatever the time limits are today."""
    exp = sorted(d.name for d in (ROOT / "experiments").iterdir() if (d / "run.slurm").is_file())
    for args, sets in ((["--students", "30"], 30), (["--students", "30", "--team-size", "4"], 8)):
        p = subprocess.run([sys.executable, str(ROOT / "scripts/budget.py"), *args],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        r = rows(p.stdout)
        assert sorted(r) == exp and "check" in r
        for name, nodes, gpn, _, gpu_h in r.values():
            assert float(gpu_h) > 0, name
        per_student = total(p.stdout, "per student")
        assert per_student == pytest.approx(sum(float(c[4]) for c in r.values()), abs=0.006 * len(r))
        assert total(p.stdout, "per class") == pytest.approx(sets * per_student, abs=0.01 * sets)


@pytest.mark.parametrize("files, args, needle", [
    ({}, [], "no */run.slurm under"),
    ({"a": run_slurm(time="")}, [], "no '#SBATCH --time'"),
    ({"a": run_slurm(time="#SBATCH --time=UNLIMITED")}, [], "is not a SLURM time"),
    ({"a": run_slurm(nodes="#SBATCH --nodes=two")}, [], "is not a node count"),
    ({"a": run_slurm()}, ["--students", "0"], "--students must be >= 1"),
    ({"a": run_slurm()}, ["--students", "3", "--team-size", "4"], "larger than the class"),
    ({"a": run_slurm()}, ["--team-size", "2"], "--team-size needs --students"),
])
def test_budget_bad_input(tmp_path, files, args, needle):
    p = budget(*args, files=files, tmp_path=tmp_path)
    assert p.returncode == 2 and needle in p.stderr and not p.stdout, (p.stdout, p.stderr)
