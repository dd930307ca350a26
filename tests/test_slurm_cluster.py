"""The Ray-on-SLURM boot path (cluster/ray_cluster.sh, hpo/cluster.py) on a real local SLURM cluster.

Run:  .venv/bin/python -m pytest -m slurm tests/test_slurm_cluster.py -x -q      (~2-3 min)

The `slurm` tests need root on a Debian-like box: the session fixture brings up
the two-node cluster with `practice/local_slurm.sh up` (installing slurm+munge via
apt the first time) and takes it down again afterwards if it was down before.
Where that cannot work (not root, no apt and no slurm, not Linux) they SKIP with
the reason; set HPO_TEST_REQUIRE_SLURM=1 (CI) to turn such skips into failures.

Every job is submitted from the repository root (SLURM_SUBMIT_DIR = repo) with the
test's venv first on PATH, polled with `squeue -h -j ID` every 0.25 s under a
bound, and checked through `scontrol show job` (MinJobAge=600 keeps it). Each
assertion message carries the job's .out file. The .out files, and with them
each job's HPO_JOB_DIR (Tune results, ray-nodes/ logs), live in pytest's tmp_path.

The unmarked tests at the end are quick unit tests of the scripts' argument
handling (cluster/container_exec.sh, cluster/ray_cluster.sh laptop tier,
practice/local_slurm.sh, python -m hpo.cluster); they need no cluster.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_util import (LOCAL_SLURM, ROOT, VENV_BIN, _assert_completed, _assert_no_leftovers,  # noqa: F401
                        JOB_WAIT_S, _in_queue, _job_env, _job_info, _json_lines, _run, _text, _wait_gone,
                        slurm_cluster, submit, watch_of)

JOB = "tests/slurm/ray_job.sbatch"
STUB_BIN = ROOT / "tests" / "slurm" / "bin"
JOB_TIME_LIMIT_S = 300            # the --time every test job gets (5 min)


# ----------------------------------------------------------------------------- helpers
def _submit(out: Path, sbatch_args: list[str], **env) -> str:
    return submit(JOB, out, sbatch_args, time_min=JOB_TIME_LIMIT_S // 60, **env)


# ----------------------------------------------------------------------------- slurm tests
@pytest.mark.slurm
def test_two_node_job_runs_tune_on_both_nodes(slurm_cluster, tmp_path):
    out = tmp_path / "job-%j.out"
    jid = _submit(out, ["-N2", "--ntasks-per-node=1", "-c2", "--gres=gpu:2"])
    out = tmp_path / f"job-{jid}.out"
    waited = _wait_gone(jid)
    _assert_completed(jid, out)
    text = _text(out)
    ctx = f"\n--- {out}:\n{text}"

    cluster = _json_lines(text, "CLUSTER")
    assert cluster, "driver printed no CLUSTER line" + ctx
    nodes = cluster[0]["nodes"]
    assert [(n["host"], n["cpus"], n["gpus"]) for n in nodes] == [("n1", 2, 2), ("n2", 2, 2)], ctx
    assert {n["ip"] for n in nodes} == {"127.0.1.1", "127.0.1.2"}, ctx

    trials = _json_lines(text, "TRIAL")
    assert len(trials) == 4 and not any(t["error"] for t in trials), ctx
    assert all(t["steps"] == 3 for t in trials), ctx
    assert {t["host"] for t in trials} == {"n1", "n2"}, "trials did not run on both nodes" + ctx
    assert {t["cuda"] for t in trials} <= {"0", "1"}, "each trial should see exactly one GPU" + ctx

    boot = re.search(r"\[ray\] cluster up: 2 node\(s\), 4 CPUs, 4 GPUs .*boot ([\d.]+) s", text)
    assert boot, "no '[ray] cluster up' line" + ctx
    assert re.search(r"\[ray\] teardown: \d Ray step\(s\) stopped in [\d.]+ s", text), ctx
    assert re.search(r"===== JOB \d+ FINISH : .*\(rc=0,", text), ctx
    # the Ray daemon logs were kept with the job's results
    job_dir = tmp_path / f"job-{jid}"              # HPO_JOB_DIR: beside the job's .out file
    assert (job_dir / "ray-nodes" / "n1" / "gcs_server.out").is_file(), ctx
    assert (job_dir / "ray-nodes" / "n2" / "raylet.out").is_file(), ctx
    _assert_no_leftovers(jid, out)
    # ... and that check saw the job: its marker (HPO_JOB_TAG from experiments/common.sh) reached the
    # Ray daemons and the `ray::` workers running the trials on both nodes
    seen = watch_of(jid)
    for needle in ("raylet", "ray::"):
        tagged = [p for p in seen.matching(needle) if p.tag.startswith(f"{jid}-")]
        assert {p.node for p in tagged} >= {"n1", "n2"}, f"{needle} with the job's marker:\n{seen.summary()}"
    print(f"job {jid}: boot {boot.group(1)} s, submit->gone {waited:.1f} s")


@pytest.mark.slurm
def test_two_jobs_share_the_nodes(slurm_cluster, tmp_path):
    """Two 2-node jobs (1 GPU + 2 CPUs per node each) run at once on the same nodes: no port clash."""
    ids = [_submit(tmp_path / "job-%j.out", ["-N2", "--ntasks-per-node=1", "-c2", "--gres=gpu:1"],
                   TEST_TRIAL_GPUS=1, TEST_TRIALS=2) for _ in range(2)]
    both_running = []
    _wait_gone(*ids, timeout=JOB_WAIT_S + 60,
               on_poll=lambda st: both_running.append(all(s == "R" for s in st.values()) and len(st) == 2))
    outs = [tmp_path / f"job-{j}.out" for j in ids]
    ctx = "".join(f"\n--- {o}:\n{_text(o)}" for o in outs)
    for j, o in zip(ids, outs):
        _assert_completed(j, o)
    assert any(both_running), "the two jobs never ran at the same time" + ctx
    seen = []                                   # per job: {(node, CUDA_VISIBLE_DEVICES) of its trials}
    for o in outs:
        trials = _json_lines(_text(o), "TRIAL")
        assert len(trials) == 2 and not any(t["error"] for t in trials), ctx
        nodes = _json_lines(_text(o), "CLUSTER")[0]["nodes"]
        assert [(n["host"], n["gpus"]) for n in nodes] == [("n1", 1), ("n2", 1)], ctx
        seen.append({(t["host"], t["cuda"]) for t in trials})
    # SLURM gave each job a different GPU of a shared node, and Ray kept SLURM's ids
    assert not seen[0] & seen[1], f"both jobs' trials used the same GPU of a node: {seen}" + ctx
    for j, o in zip(ids, outs):
        _assert_no_leftovers(j, o)


@pytest.mark.slurm
@pytest.mark.parametrize("worker_args, expect", [
    # the worker's `ray start` dies at once (bad option): reported as a dead step
    pytest.param("--no-such-option", r"node n2 \(Ray step hpo-ray-1\): its Ray step \(ray start\) exited with code 2",
                 id="step-dies"),
    # the worker can never reach its GCS: reported by the bounded readiness wait
    pytest.param("--address=127.0.0.1:9", r"node n2 \(Ray step hpo-ray-1\): it did not join the Ray cluster",
                 id="never-joins"),
])
def test_boot_failure_fails_fast(slurm_cluster, tmp_path, worker_args, expect):
    jid = _submit(tmp_path / "job-%j.out", ["-N2", "--ntasks-per-node=1", "-c2", "--gres=gpu:2"],
                  HPO_RAY_WORKER_ARGS=worker_args, HPO_RAY_BOOT_TIMEOUT_S=5)
    out = tmp_path / f"job-{jid}.out"
    waited = _wait_gone(jid, timeout=60)
    text = _text(out)
    ctx = f"\n--- {out}:\n{text}"
    info = _job_info(jid)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0", f"{info['JobState']} {info['ExitCode']}" + ctx
    assert waited < 40, f"boot failure took {waited:.0f}s (time limit {JOB_TIME_LIMIT_S}s): not fast" + ctx
    assert re.search(expect, text), ctx
    assert re.search(r"ray-nodes/n2\.log", text) and "raylet.out" in text, "message must name the logs" + ctx
    assert "[ray] ERROR: Ray cluster" in text and "(rc=1," in text, ctx
    assert "CLUSTER" not in text, "the driver must not run after a failed boot" + ctx
    _assert_no_leftovers(jid, out)


@pytest.mark.slurm
def test_scancel_leaves_nothing_behind(slurm_cluster, tmp_path):
    """scancel of a running Ray job: every Ray daemon, srun step and temp dir is gone with the job."""
    jid = _submit(tmp_path / "job-%j.out", ["-N2", "--ntasks-per-node=1", "-c2", "--gres=gpu:2"],
                  TEST_TRIAL_SLEEP=5)
    out = tmp_path / f"job-{jid}.out"
    deadline = time.time() + 90
    while "CLUSTER " not in _text(out):         # the driver is connected and Tune is starting
        assert _in_queue(jid) and time.time() < deadline, f"job {jid} never got to the driver\n{_text(out)}"
        time.sleep(0.25)
    time.sleep(1)
    _run(["scancel", jid])
    waited = _wait_gone(jid, timeout=60)
    assert _job_info(jid)["JobState"] == "CANCELLED", _text(out)
    _assert_no_leftovers(jid, out)
    print(f"job {jid}: scancel -> gone in {waited:.1f} s")


@pytest.mark.slurm
def test_container_branch_routes_every_step_through_apptainer(slurm_cluster, tmp_path):
    """With APPTAINER_IMAGE set, each `ray start` step, the readiness wait and the driver run via `apptainer exec --nv`."""
    image = tmp_path / "hpo.sif"
    image.write_text("stub image\n")
    calls = tmp_path / "apptainer-calls.log"
    env = {"APPTAINER_IMAGE": image, "APPTAINER_STUB_LOG": calls, "TEST_TRIALS": 2}
    jid = _submit(tmp_path / "job-%j.out", ["-N2", "--ntasks-per-node=1", "-c2", "--gres=gpu:2"], **env,
                  PATH=f"{STUB_BIN}:{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    out = tmp_path / f"job-{jid}.out"
    _wait_gone(jid)
    _assert_completed(jid, out)
    log = calls.read_text() if calls.exists() else ""
    ctx = f"\n--- apptainer calls:\n{log}\n--- {out}:\n{_text(out)}"
    records = [shlex.split(line) for line in log.splitlines()]
    assert records, "the stub apptainer was never called" + ctx

    def calls_with(*words):
        return [r for r in records if all(w in " ".join(r) for w in words)]

    heads, workers = calls_with("ray", "start", "--head"), calls_with("ray", "start", "--address=")
    assert len(heads) == 1 and heads[0][0] == "n1", ctx
    assert len(workers) == 1 and workers[0][0] == "n2", ctx
    assert calls_with("-m", "hpo.cluster", "wait"), ctx
    assert calls_with("tests/slurm/tune_driver.py"), ctx
    for host, *args in records:
        assert args[:2] == ["exec", "--nv"], f"not 'apptainer exec --nv': {args}" + ctx
        binds = args[args.index("--bind") + 1].split(",")
        assert str(ROOT) in binds and "/tmp" in binds, f"binds {binds} lack the repo or Ray's temp root" + ctx
        assert str(image) in args, ctx
    _assert_no_leftovers(jid, out)


# ----------------------------------------------------------------------------- unit tests (no cluster)
def _sh(cmd: list[str], **env) -> subprocess.CompletedProcess:
    return _run(cmd, cwd=ROOT, env=_job_env(**env))


def test_container_exec_runs_on_host_without_image():
    r = _sh(["cluster/container_exec.sh", "bash", "-c", "echo host:$PWD"])
    assert r.returncode == 0 and r.stdout.strip() == f"host:{ROOT}", r.stderr


def test_container_exec_missing_image_is_a_clear_error(tmp_path):
    r = _sh(["cluster/container_exec.sh", "true"], APPTAINER_IMAGE=tmp_path / "nope.sif",
            PATH=f"{STUB_BIN}:/usr/bin:/bin", APPTAINER_STUB_LOG=tmp_path / "calls")
    assert r.returncode == 2 and "image not found" in r.stderr, r.stderr
    assert not (tmp_path / "calls").exists()


def test_container_exec_missing_apptainer_is_a_clear_error(tmp_path):
    image = tmp_path / "x.sif"
    image.touch()
    r = _sh(["cluster/container_exec.sh", "true"], APPTAINER_IMAGE=image, PATH="/usr/bin:/bin")
    assert r.returncode == 2 and "not on PATH" in r.stderr, r.stderr


def test_container_exec_uses_apptainer_with_nv_and_binds(tmp_path):
    image, calls = tmp_path / "x.sif", tmp_path / "calls"
    image.touch()
    r = _sh(["cluster/container_exec.sh", "bash", "-c", "echo in:$PWD"], APPTAINER_IMAGE=image,
            APPTAINER_STUB_LOG=calls, PATH=f"{STUB_BIN}:/usr/bin:/bin", HPO_ROOT=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"in:{ROOT}", r.stderr
    args = shlex.split(calls.read_text().splitlines()[0])[1:]
    assert args[:2] == ["exec", "--nv"] and str(ROOT) in args[args.index("--bind") + 1].split(","), args
    assert args[-4:] == [str(image), "bash", "-c", "echo in:$PWD"], args


def test_ray_cluster_laptop_tier_starts_nothing(tmp_path):
    script = ("HPO_METHOD=clustertest HPO_JOB_ID=unit-test; export RAY_ADDRESS=1.2.3.4:5; "
              "source experiments/common.sh >/dev/null; source cluster/ray_cluster.sh; ray_cluster_up; "
              "echo \"addr=${RAY_ADDRESS-unset} nodes=$HPO_EXPECTED_NODES dedup=$RAY_DEDUP_LOGS\"")
    r = _sh(["bash", "-c", script], HPO_ROOT=ROOT, HPO_LOG_ROOT=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "laptop tier" in r.stdout and "local Ray runtime" in r.stdout, r.stdout
    assert "addr=unset nodes=1 dedup=0" in r.stdout, r.stdout   # every trial line reaches the log


def test_ray_cluster_script_usage_errors():
    r = _sh(["bash", "cluster/ray_cluster.sh"])
    assert r.returncode == 2 and "usage" in r.stderr
    r = _sh(["bash", "cluster/ray_cluster.sh", "node", "x"])
    assert r.returncode == 2 and "usage" in r.stderr
    r = _sh(["bash", "cluster/ray_cluster.sh", "node", "0"])   # outside ray_cluster_up
    assert r.returncode == 2 and "started by ray_cluster_up" in r.stderr


def test_local_slurm_unknown_subcommand():
    r = _sh(["bash", str(LOCAL_SLURM), "sideways"])
    assert r.returncode == 2 and "usage" in r.stderr


def test_hpo_cluster_wait_cli():
    r = _sh([sys.executable, "-m", "hpo.cluster"])
    assert r.returncode == 2
    r = _sh([sys.executable, "-m", "hpo.cluster", "wait", "--address", "nonsense", "--nodes", "1"])
    assert r.returncode == 2 and "host:port" in r.stderr
    # nothing listens there: gives up after the timeout with exit 1, without importing ray's GCS client
    t0 = time.time()
    r = _sh([sys.executable, "-m", "hpo.cluster", "wait", "--address", "127.0.0.1:9", "--nodes", "1",
             "--timeout", "0.5"])
    assert r.returncode == 1 and "nothing listens" in r.stdout and time.time() - t0 < 10, r.stdout + r.stderr


@pytest.mark.parametrize("ci, cluster_up, rc, make_calls, needle", [
    # CI: a cluster that does not start fails the run before `make test`
    ("true", False, 1, ["venv"], "ERROR: the local SLURM cluster could not start"),
    # elsewhere: the slurm tests skip with the reason
    ("", False, 0, ["venv", "test"], "slurm-marked tests will skip with the reason"),
    # cluster up: a slurm test that skips is a failure (HPO_TEST_REQUIRE_SLURM=1)
    ("true", True, 0, ["venv", "test HPO_TEST_REQUIRE_SLURM=1"], "local SLURM cluster up"),
])
def test_ci_run_fails_on_ci_when_the_cluster_does_not_start(tmp_path, ci, cluster_up, rc, make_calls, needle):
    """.ci/run with stand-ins for make and practice/local_slurm.sh (nothing is installed or started)."""
    repo, bin_dir, calls = tmp_path / "repo", tmp_path / "bin", tmp_path / "calls"
    (repo / ".ci").mkdir(parents=True)
    (repo / "practice").mkdir()
    bin_dir.mkdir()
    (repo / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (repo / "practice" / "local_slurm.sh").write_text(
        f'echo "local_slurm $*" >> {calls}; [ "$1" = down ] && exit 0; echo "stub: cannot start"; exit {0 if cluster_up else 1}\n')
    make = bin_dir / "make"
    make.write_text(f'#!/bin/bash\necho "make $*${{HPO_TEST_REQUIRE_SLURM:+ HPO_TEST_REQUIRE_SLURM=1}}" >> {calls}\n')
    make.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HPO_TEST_REQUIRE_SLURM")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", CI=ci)
    r = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == rc, r.stdout + r.stderr
    assert needle in r.stdout + r.stderr, r.stdout + r.stderr
    made = [line[len("make "):] for line in calls.read_text().splitlines() if line.startswith("make ")]
    assert made == make_calls, calls.read_text()
    if cluster_up:        # brought down again at the end
        assert "local_slurm down" in calls.read_text()
