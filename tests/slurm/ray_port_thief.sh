#!/usr/bin/env bash
# tests/slurm/ray_port_thief.sh — stands in for the `ray` CLI (HPO_RAY_BIN) in
# tests/test_slurm_ports.py to stage the race that probing alone cannot prevent:
# another job takes a port AFTER cluster/ray_cluster.sh found it free and BEFORE
# Ray binds it. On the FIRST `ray start` of each node of the job it binds that
# node's first Ray port (the head's GCS port --port=, a worker's --node-manager-port=)
# itself, holds it for THIEF_HOLD_S seconds (default 60; the step's end kills it
# earlier), then runs the real ray; every later call just runs the real ray.
#
#   HPO_RAY_BIN=$PWD/tests/slurm/ray_port_thief.sh sbatch tests/slurm/ray_job.sbatch
#
# Marker per node: $HPO_JOB_DIR/thief-<node> (also the test's proof that it struck).
set -euo pipefail
real=${THIEF_RAY_BIN:-ray}
[ "${1:-}" = start ] || exec "$real" "$@"
node=${SLURMD_NODENAME:-$(hostname -s)}
marker=${HPO_JOB_DIR:?HPO_JOB_DIR unset}/thief-$node
[ -e "$marker" ] && exec "$real" "$@"
port=""
for a in "$@"; do
  case $a in --port=*) port=${a#--port=}; break ;; --node-manager-port=*) port=${a#--node-manager-port=} ;; esac
done
[ -n "$port" ] || exec "$real" "$@"
ready=$marker.ready
# like a server of another job: SO_REUSEADDR, all addresses, listening
"${HPO_PYTHON:-python}" -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
open(sys.argv[2], "w").close()
time.sleep(float(sys.argv[3]))' "$port" "$ready" "${THIEF_HOLD_S:-60}" &
for _ in $(seq 100); do [ -e "$ready" ] && break; sleep 0.05; done
echo "port $port" >"$marker"
echo "[thief] $node: took port $port before ray could bind it" >&2
exec "$real" "$@"
