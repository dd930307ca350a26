"""Ray's ports are chosen by probing on each node (cluster/ray_cluster.sh, "Ports"), not from the job id alone.

Run:  .venv/bin/python -m pytest -q -m slurm tests/test_slurm_ports.py      (~3 min, root; see test_slurm_cluster.py)
      .venv/bin/python -m pytest -q -m "not slurm" tests/test_slurm_ports.py (the unit tests, ~2 s, no cluster)

The job id only says where each job STARTS looking (block job_id % 45); two jobs whose ids
are equal modulo 45 start at the same block. Waiting for such ids is too slow, so the
slurm tests force the same start for every job with HPO_RAY_PORT_BASE, and make the ports
taken on purpose: by a socket this test holds (taken BEFORE the jobs look), or by
tests/slurm/ray_port_thief.sh (taken AFTER a node looked and BEFORE Ray binds: the race).
On practice/local_slurm.sh all nodes share one port space, so every node of every job
must end up on ports of its own.

The unit tests at the end run the port-choosing bash functions on their own (sourced in a
subshell) against sockets held by the test.
"""
from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_util import (ROOT, _assert_completed, _assert_no_leftovers, _job_info, _json_lines,  # noqa: F401
                        _run, _text, _wait_gone, slurm_cluster, submit)

JOB = "tests/slurm/ray_job.sbatch"
THIEF = ROOT / "tests" / "slurm" / "ray_port_thief.sh"
BLOCK, SLOT = 500, 125


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _held(*ports: int, family=socket.AF_INET):
    """Listen on each port (all addresses), like another job's Ray server would, while inside."""
    socks = []
    try:
        for port in ports:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            s.listen()
            socks.append(s)
        yield
    finally:
        for s in socks:
            s.close()


def _bindable(port: int) -> bool:
    try:
        with _held(port):
            return True
    except OSError:
        return False


def _ports_files(job_dir: Path) -> dict[str, dict[str, str]]:
    """{node: {key: value}} from the job's ray-ports/<node>.env files."""
    out = {}
    for f in sorted((job_dir / "ray-ports").glob("*.env")):
        out[f.stem] = dict(line.split("=", 1) for line in f.read_text().splitlines()
                           if "=" in line and not line.startswith("#"))
    return out


def _node_logs(job_dir: Path) -> str:
    return "".join(f"\n--- {p}:\n{_text(p)}" for p in sorted((job_dir / "ray-nodes").glob("*.log")))


def _bash(script: str, **env) -> subprocess.CompletedProcess:
    """Run `script` in bash with cluster/ray_cluster.sh sourced (its functions, nothing booted)."""
    e = {"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in env.items()}}
    return subprocess.run(["bash", "-c", f"source cluster/ray_cluster.sh; {script}"], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=30)


# ----------------------------------------------------------------------------- slurm tests
@pytest.mark.slurm
def test_three_jobs_with_the_same_first_ports_all_boot(slurm_cluster, tmp_path):
    """Three 2-node jobs start looking at the SAME block (as jobs whose ids are equal modulo 45
    do) while the test holds a port of it and one of the next block: all three run at once, on
    ports of their own, none on a held port, and complete."""
    base = 26000
    while not (_bindable(base) and _bindable(base + BLOCK + SLOT + 7)):
        base += BLOCK                                   # (something of this box's already there)
    held = [base, base + BLOCK + SLOT + 7]              # block 1's head GCS; block 2's worker slot (+7)
    with _held(*held):
        ids = [submit(JOB, tmp_path / "job-%j.out", ["-N2", "--ntasks-per-node=1", "-c1", "--mem=1G"],
                      HPO_RAY_PORT_BASE=base, HPO_RAY_BOOT_TIMEOUT_S=120, TEST_TRIALS=2, TEST_TRIAL_GPUS=0)
               for _ in range(3)]
        all_running = []
        waited = _wait_gone(*ids, timeout=300,
                            on_poll=lambda st: all_running.append(all(s == "R" for s in st.values()) and len(st) == 3))
    outs = {j: tmp_path / f"job-{j}.out" for j in ids}
    dirs = {j: tmp_path / f"job-{j}" for j in ids}
    ctx = "".join(f"\n--- {o}:\n{_text(o)}{_node_logs(dirs[j])}" for j, o in outs.items())
    for j, o in outs.items():
        _assert_completed(j, o)
    assert any(all_running), "the three jobs never ran at the same time" + ctx

    ranges = []                                          # (first, last, "job/node") of every node of every job
    for j in ids:
        text = _text(outs[j])
        trials = _json_lines(text, "TRIAL")
        assert len(trials) == 2 and not any(t["error"] for t in trials), ctx
        assert re.search(r"\[ray\] cluster up: 2 node\(s\), 2 CPUs, 0 GPUs at 127\.0\.1\.1:\d+; "
                         r"boot [\d.]+ s after job start", text), ctx
        assert re.search(r"\[ray\] ports: n1 \d+-\d+ \(GCS \d+\).*; n2 \d+-\d+", text), ctx
        files = _ports_files(dirs[j])
        assert set(files) == {"n1", "n2"}, f"job {j}: ports files {sorted(files)}" + ctx
        head = files["n1"]
        assert int(head["block"]) != base, f"job {j}: head stayed on the block whose GCS port is held" + ctx
        assert f"block {base} in use" in head["note"] or int(head["attempt"]) > 1, ctx
        assert head["gcs_address"] == f"127.0.1.1:{head['first_port']}" and f"at {head['gcs_address']};" in text, ctx
        assert files["n2"]["head_gcs_address"] == head["gcs_address"], ctx
        for node, f in files.items():
            assert int(f["last_port"]) - int(f["first_port"]) == SLOT - 1, ctx
            ranges.append((int(f["first_port"]), int(f["last_port"]), f"job {j} {node}"))
    ranges.sort()
    for (a0, a1, a), (b0, b1, b) in zip(ranges, ranges[1:]):
        assert a1 < b0, f"{a} ({a0}-{a1}) and {b} ({b0}-{b1}) share ports" + ctx
    for lo, hi, who in ranges:
        assert not any(lo <= p <= hi for p in held), f"{who} ({lo}-{hi}) took a port the test holds {held}" + ctx
    for j in ids:
        _assert_no_leftovers(j, outs[j])
    moves = {j: {n: (f["first_port"], f["attempt"], f["note"]) for n, f in _ports_files(dirs[j]).items()} for j in ids}
    print(f"first block {base} (held {held}); submit->all gone {waited:.1f} s; (first port, attempt, note): {moves}")


@pytest.mark.slurm
def test_port_taken_after_the_check_is_retried(slurm_cluster, tmp_path):
    """The race: a port is taken between the node's check and Ray's bind (ray_port_thief.sh, on
    both nodes). Each node notices within seconds (not Ray's ~40 s), moves on and the job completes."""
    jid = submit(JOB, tmp_path / "job-%j.out", ["-N2", "--ntasks-per-node=1", "-c2", "--mem=2G", "--gres=gpu:1"],
                 HPO_RAY_BIN=THIEF, TEST_TRIALS=2)
    out, job_dir = tmp_path / f"job-{jid}.out", tmp_path / f"job-{jid}"
    waited = _wait_gone(jid)
    ctx = f"\n--- {out}:\n{_text(out)}{_node_logs(job_dir)}"
    _assert_completed(jid, out)
    text = _text(out)
    files = _ports_files(job_dir)
    for node in ("n1", "n2"):
        marker = job_dir / f"thief-{node}"
        assert marker.is_file(), f"the thief never struck on {node}" + ctx
        stolen = int(marker.read_text().split()[1])
        f = files[node]
        assert f["attempt"] == "2", f"{node}: attempt {f['attempt']}" + ctx
        assert not int(f["first_port"]) <= stolen <= int(f["last_port"]), ctx
        log = _text(job_dir / "ray-nodes" / f"{node}.log")
        assert re.search(rf"{node}: port {stolen} was taken between our check and Ray's start", log), ctx
        assert f"{node}: retrying (attempt 2/5)" in log, ctx
    assert re.search(r"\[ray\] ports: n1 \d+-\d+ \(GCS \d+\) \[attempt 2[^]]*\]; n2 \d+-\d+ \[attempt 2", text), ctx
    boot = re.search(r"\[ray\] cluster up: 2 node\(s\), 4 CPUs, 2 GPUs at (\S+); boot ([\d.]+) s after job start", text)
    assert boot and boot.group(1) == files["n1"]["gcs_address"], ctx
    assert float(boot.group(2)) < 40, "the retries took as long as Ray's own give-up" + ctx
    assert len(_json_lines(text, "TRIAL")) == 2, ctx
    _assert_no_leftovers(jid, out)
    print(f"job {jid}: boot {boot.group(2)} s with one port clash per node, submit->gone {waited:.1f} s")


@pytest.mark.slurm
def test_ports_taken_every_time_fails_fast_and_says_so(slurm_cluster, tmp_path):
    """HPO_RAY_PORT_TRIES bounds the retries: with 1 attempt, a clash ends the job at once, naming node and log."""
    jid = submit(JOB, tmp_path / "job-%j.out", ["-N1", "-c2", "--mem=2G", "--gres=gpu:1"],
                 HPO_RAY_BIN=THIEF, HPO_RAY_PORT_TRIES=1, TEST_TRIALS=1)
    out = tmp_path / f"job-{jid}.out"
    waited = _wait_gone(jid, timeout=90)
    text = _text(out)
    ctx = f"\n--- {out}:\n{text}{_node_logs(tmp_path / f'job-{jid}')}"
    info = _job_info(jid)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "1:0"), ctx
    assert re.search(r"node n1 \(Ray step hpo-ray-0\): its Ray step \(ray start\) exited with code 4", text), ctx
    assert "giving up after 1 attempts (HPO_RAY_PORT_TRIES=1)" in text and "ray-nodes/n1.log" in text, ctx
    assert "CLUSTER" not in text, ctx
    assert waited < 40, f"took {waited:.0f} s: not fast" + ctx
    _assert_no_leftovers(jid, out)


# ----------------------------------------------------------------------------- unit tests (no cluster)
def _pick(slot: int, first: int, **env) -> tuple[int | None, str]:
    r = _bash(f"_ray_pick_block {slot} {first}", **env)
    return (int(r.stdout) if r.returncode == 0 else None), r.stderr


def _free_block(start: int = 20000) -> int:
    """A block whose slots 0 and 1 are both free right now (this box runs other jobs too)."""
    for b in range(start, 32000, BLOCK):
        if _pick(0, b)[0] == b and _pick(1, b)[0] == b:
            return b
    pytest.skip("no free port block on this machine")


def test_pick_block_skips_a_block_with_a_port_in_use():
    b = _free_block()
    with _held(b + 1):                                  # slot 0's node manager port
        got, err = _pick(0, b)
        assert got is not None and got != b, (got, err)
        assert f"port {b + 1} is in use" in err, err
        assert _pick(1, b)[0] == b, "a port of slot 0 must not move slot 1"
    with _held(b + SLOT + 60):                          # a worker port of slot 1
        got, err = _pick(1, b)
        assert got is not None and got != b and f"port {b + SLOT + 60} is in use" in err, (got, err)
        assert _pick(0, b)[0] == b
    assert _pick(0, b)[0] == b                          # free again once the socket is closed
    assert _pick(4, b)[0] == b                          # node index 4 -> slot 0
    with contextlib.ExitStack() as stack:               # an IPv6 socket counts too (/proc/net/tcp6)
        try:
            stack.enter_context(_held(b + 2, family=socket.AF_INET6))
        except OSError:
            pytest.skip("no IPv6 on this machine (the IPv4 checks above passed)")
        got, err = _pick(0, b)
        assert got != b and f"port {b + 2} is in use" in err, (got, err)


def test_pick_block_ring_override_and_none_free():
    r = _bash('echo "$(SLURM_JOB_ID=46 _ray_first_block) $(SLURM_JOB_ID=90 _ray_first_block)'
              ' $(_ray_block_after 32000 1) $(_ray_block_after 10000 3)'
              ' $(HPO_RAY_PORT_BASE=30000 _ray_first_block)"')
    assert r.stdout.split() == ["10500", "10000", "10000", "11500", "30000"], r.stdout + r.stderr
    # HPO_RAY_PORT_BASE=65035: the ring is that one block (65035-65534)
    if not _bindable(65035 + 7):
        pytest.skip("port 65042 is in use on this machine")
    assert _pick(0, 65035, HPO_RAY_PORT_BASE=65035)[0] == 65035
    with _held(65035 + 7):
        got, err = _pick(0, 65035, HPO_RAY_PORT_BASE=65035)
        assert got is None and "no free ports" in err and "port 65042 is in use" in err, (got, err)


def test_ports_file_roundtrip(tmp_path):
    """What a node writes, the others read back (bash and python), and only for the same job run."""
    f = tmp_path / "n1.env"
    write = f'_ray_write_ports {f} gcs_address=127.0.1.1:26000 attempt=2 block=26000 first_port=26000 last_port=26124'
    r = _bash(f'{write} && _ray_read_ports {f} && echo "$_PF_gcs_address $_PF_attempt $_PF_first_port-$_PF_last_port"',
              SLURM_JOB_ID=77)
    assert r.returncode == 0 and r.stdout.strip() == "127.0.1.1:26000 2 26000-26124", r.stdout + r.stderr
    assert not list(tmp_path.glob("*.tmp.*")), "the temporary file was left behind"
    assert _bash(f"_ray_read_ports {f}", SLURM_JOB_ID=78).returncode == 1          # another job's file
    assert _bash(f"_ray_read_ports {f}", SLURM_JOB_ID=77, SLURM_RESTART_COUNT=1).returncode == 1  # before a requeue
    assert _bash(f"_ray_read_ports {tmp_path}/n2.env", SLURM_JOB_ID=77).returncode == 1

    code = ("import sys; from hpo.cluster import address_from_ports_file as a; "
            f"print(a({str(f)!r}), a({str(tmp_path / 'none.env')!r}))")
    for job, want in (("77", "127.0.1.1:26000 None"), ("78", "None None")):
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": job})
        assert r.stdout.strip() == want, r.stdout + r.stderr


def test_wait_reads_the_address_file(tmp_path):
    """`python -m hpo.cluster wait --address-file`: no file yet -> says so; the file's address is used."""
    f = tmp_path / "n1.env"
    t0 = time.time()
    r = _run([sys.executable, "-m", "hpo.cluster", "wait", "--address-file", str(f), "--nodes", "1",
              "--timeout", "0.5"], cwd=ROOT)
    assert r.returncode == 1 and "wrote no GCS address" in r.stdout and "JOINED" in r.stdout, r.stdout + r.stderr
    f.write_text("job=5\nrestart=0\ngcs_address=127.0.0.1:9\n")
    r = _run([sys.executable, "-m", "hpo.cluster", "wait", "--address-file", str(f), "--nodes", "1",
              "--timeout", "0.5"], cwd=ROOT, env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "5"})
    assert r.returncode == 1 and "nothing listens on the head's GCS port 127.0.0.1:9" in r.stdout, r.stdout + r.stderr
    assert time.time() - t0 < 20


def test_wait_follows_the_head_when_it_moves(tmp_path, monkeypatch, capsys):
    """The head lost a port race and wrote a new address: the readiness wait switches to it."""
    import threading

    from hpo import cluster
    f = tmp_path / "n1.env"
    f.write_text("job=5\nrestart=0\ngcs_address=127.0.0.1:1111\n")
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setattr(cluster, "_port_open", lambda host, port: port == 2222)   # only the new GCS is up
    monkeypatch.setattr(cluster, "_gcs_poller", lambda address: lambda: [("n1", "127.0.0.1", 2.0, 1.0)])
    threading.Timer(0.5, lambda: f.write_text("job=5\nrestart=0\nattempt=2\ngcs_address=127.0.0.1:2222\n")).start()
    t0 = time.time()
    assert cluster.wait_for_cluster(None, 1, 1, timeout=10, address_file=str(f))
    assert 0.4 < time.time() - t0 < 5
    assert "moved from 127.0.0.1:1111 to 127.0.0.1:2222" in capsys.readouterr().out
