"""Connect a Ray Tune driver to "the cluster": the one this SLURM job booted, or a local one.

Run: imported by every Ray driver (`from hpo.cluster import connect_ray`), and used
as a command by cluster/ray_cluster.sh to wait until the job's Ray cluster is complete:

    python -m hpo.cluster wait --address 127.0.1.1:21010 --nodes 2 --gpus 4 --timeout 60
    python -m hpo.cluster wait --address-file $HPO_JOB_DIR/ray-ports/n1.env --nodes 2 --gpus 4

(--address-file: the head's ports file, written by cluster/ray_cluster.sh once the head's
GCS listens; followed if the head has to move to other ports during the boot.)

`connect_ray()` decides by the environment, so the same driver runs on both tiers:

* cluster tier — `cluster/ray_cluster.sh` started one Ray node per SLURM node and
  exported RAY_ADDRESS (head's GCS), HPO_EXPECTED_NODES and HPO_EXPECTED_GPUS. We
  join that cluster and wait (bounded: HPO_RAY_WAIT_S, default 120 s) until every
  node and GPU of the allocation has registered. The boot script already waited,
  so normally this returns at once.
* laptop tier — no RAY_ADDRESS: start a private Ray runtime on this machine with
  HPO_CPUS (or all) CPUs and no dashboard.

Both print one line saying what the driver got, so the job log shows it.

The `wait` command deliberately avoids `ray.init()`: that needs the head's raylet
up, starts a driver core worker (0.4-1.5 s on the 2-core test box) and cannot
tell a node that never joins from one that is slow. It polls the GCS directly
(0.1 s period) for about 0.6 s of imports, so the boot check adds almost nothing
to the job's boot time (median 4.8 s for 2 nodes there). Nothing here runs at
import time and `ray` is only imported inside functions.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time

__all__ = ["connect_ray", "wait_for_cluster"]


def _env_number(name: str, default, kind=int, what="a whole number"):
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "a whole number")


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number of seconds")


def _alive_summary(ray) -> tuple[int, float, float]:
    """(alive nodes, CPUs, GPUs) of the connected cluster, from ray.nodes()."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in alive)
    gpus = sum(n.get("Resources", {}).get("GPU", 0.0) for n in alive)
    return len(alive), cpus, gpus


def connect_ray(num_cpus: int | None = None):
    """Join the job's Ray cluster (RAY_ADDRESS set) or start a local runtime; return `ray`.

    num_cpus: laptop tier only — CPUs for the local runtime (default HPO_CPUS,
    else os.cpu_count()). On the cluster tier the CPUs come from the allocation.
    Raises RuntimeError when the cluster does not reach the expected size in
    HPO_RAY_WAIT_S seconds (the driver then exits non-zero and the job FAILS).
    """
    import ray

    address = os.environ.get("RAY_ADDRESS", "").strip()
    t0 = time.time()
    if not address:
        n = num_cpus or _env_int("HPO_CPUS", 0) or os.cpu_count() or 1
        ray.init(num_cpus=n, include_dashboard=False)
        print(f"[ray] laptop tier: local Ray runtime with {n} CPUs "
              f"(started in {time.time() - t0:.1f}s)", flush=True)
        return ray

    want_nodes = _env_int("HPO_EXPECTED_NODES", 1)
    want_gpus = _env_int("HPO_EXPECTED_GPUS", 0)
    wait_s = _env_float("HPO_RAY_WAIT_S", 120.0)
    ray.init(address=address)
    t_init = time.time() - t0
    deadline = time.time() + wait_s
    while True:
        nodes, cpus, gpus = _alive_summary(ray)
        if nodes >= want_nodes and gpus >= want_gpus:
            break
        if time.time() > deadline:
            raise RuntimeError(
                f"Ray cluster at {address} has {nodes}/{want_nodes} nodes and {gpus:g}/{want_gpus} GPUs "
                f"after {wait_s:g}s (HPO_RAY_WAIT_S). See the [ray] lines at the top of the job log "
                f"and the per-node logs under $HPO_JOB_DIR/ray-nodes/.")
        time.sleep(0.25)
    print(f"[ray] connected to {address}: {nodes} nodes, {cpus:g} CPUs, {gpus:g} GPUs "
          f"(ray.init {t_init:.1f}s, waited {time.time() - t0 - t_init:.1f}s)", flush=True)
    return ray


# --------------------------------------------------------------------- wait command
def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _nodes_via_gcs(client) -> list[tuple[str, str, float, float]]:
    """[(hostname, ip, CPUs, GPUs)] of the alive nodes, straight from the GCS."""
    info = client.get_all_node_info(timeout=2)
    out = []
    for node in info.values():
        if node.state != 0:  # GcsNodeInfo.ALIVE == 0
            continue
        res = dict(node.resources_total)
        out.append((node.node_manager_hostname, node.node_manager_address,
                    res.get("CPU", 0.0), res.get("GPU", 0.0)))
    return out


def address_from_ports_file(path: str) -> str | None:
    """The head's GCS address from its ports file (cluster/ray_cluster.sh), None while there is none.

    The file is KEY=VALUE lines; one left by another run (same job dir, or this job
    before a requeue: `job`/`restart` differ from SLURM_JOB_ID/SLURM_RESTART_COUNT) counts as none.
    """
    try:
        os.listdir(os.path.dirname(path) or ".")  # an NFS client then sees a new file at once
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    kv = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    if "SLURM_JOB_ID" in os.environ and (kv.get("job"), kv.get("restart")) != (
            os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_RESTART_COUNT") or "0"):
        return None
    host, sep, port = kv.get("gcs_address", "").rpartition(":")
    return f"{host}:{port}" if sep and host and port.isdigit() else None


def _gcs_poller(address: str):
    """A function returning the alive nodes of the cluster at `address` (see wait_for_cluster)."""
    try:
        from ray._raylet import GcsClient  # private; present in ray 2.x
        client = GcsClient(address=address)
        return lambda: _nodes_via_gcs(client)
    except Exception:  # pragma: no cover - other ray versions
        import ray
        ray.shutdown()
        ray.init(address=address, log_to_driver=False)
        return lambda: [(n["NodeManagerHostname"], n["NodeManagerAddress"],
                         n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
                        for n in ray.nodes() if n["Alive"]]


def wait_for_cluster(address: str | None, nodes: int, gpus: int, timeout: float,
                     quiet: bool = False, address_file: str | None = None) -> bool:
    """Poll the GCS at `address` until `nodes` nodes with `gpus` GPUs in total are alive.

    With `address_file` the address is read from that ports file instead, as soon as it
    appears, and followed when it changes (the head moved to other ports during the boot).
    Returns True when complete, False on timeout (after printing who has joined).
    Uses ray's internal GcsClient (no ray.init, no driver worker) so it is cheap;
    falls back to ray.init()+ray.nodes() if that private API is missing.
    """
    deadline = time.time() + timeout
    current, poll = (None if address_file else address), None
    joined: list = []
    while True:
        if address_file:
            new = address_from_ports_file(address_file)
            if new != current:
                if current and not quiet:
                    print(f"[ray] wait: the head moved from {current} to {new}", flush=True)
                current, poll, joined = new, None, []
        if current and poll is None:
            host, _, port = current.rpartition(":")
            # GcsClient blocks ~40 s when nothing listens: probe the port first.
            if _port_open(host, int(port)):
                poll = _gcs_poller(current)
        if poll is not None:
            try:
                joined = poll()
            except Exception as exc:  # GCS restarting or gone: keep trying until the deadline
                if not quiet:
                    print(f"[ray] wait: GCS query failed ({type(exc).__name__}); retrying", flush=True)
            have_gpus = sum(g for *_, g in joined)
            if len(joined) >= nodes and have_gpus >= gpus:
                return True
        if time.time() > deadline:
            if not current:
                print(f"[ray] wait: the head wrote no GCS address to {address_file} within {timeout:g}s", flush=True)
            elif poll is None:
                print(f"[ray] wait: nothing listens on the head's GCS port {current} after {timeout:g}s", flush=True)
            else:
                have_gpus = sum(g for *_, g in joined)
                names = " ".join(f"{h}({ip}: {c:g} CPU, {g:g} GPU)" for h, ip, c, g in sorted(joined)) or "none"
                print(f"[ray] wait: timed out after {timeout:g}s with {len(joined)}/{nodes} nodes, "
                      f"{have_gpus:g}/{gpus} GPUs; joined: {names}", flush=True)
            print("JOINED " + " ".join(h for h, *_ in joined), flush=True)
            return False
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.cluster",
        description="Helpers for the job's Ray cluster (used by cluster/ray_cluster.sh).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait", help="wait until N nodes and G GPUs have joined the Ray cluster")
    w.add_argument("--address", default=os.environ.get("RAY_ADDRESS", ""),
                   help="head GCS address host:port (default $RAY_ADDRESS)")
    w.add_argument("--address-file", default="",
                   help="read the address from the head's ports file (cluster/ray_cluster.sh) instead")
    w.add_argument("--nodes", type=int, required=True, help="nodes expected")
    w.add_argument("--gpus", type=int, default=0, help="GPUs expected in total")
    w.add_argument("--timeout", type=float, default=60.0, help="seconds before giving up (exit 1)")
    w.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "wait":
        host, sep, port = args.address.rpartition(":")
        if not args.address_file and (not sep or not host or not port.isdigit()):
            parser.error(f"--address must be host:port, got {args.address!r}")
        if args.nodes < 1 or args.gpus < 0 or args.timeout <= 0:
            parser.error("need --nodes >= 1, --gpus >= 0 and --timeout > 0")
        ok = wait_for_cluster(args.address, args.nodes, args.gpus, args.timeout, args.quiet,
                              address_file=args.address_file or None)
        return 0 if ok else 1
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
