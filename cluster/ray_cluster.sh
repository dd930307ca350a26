# cluster/ray_cluster.sh — boot a Ray cluster across the nodes of a SLURM job, and tear it down.
#
# SOURCED by every Ray launcher, after experiments/common.sh:
#
#   HPO_METHOD=asha
#   source "$SLURM_SUBMIT_DIR/experiments/common.sh"   # HPO_ROOT, HPO_TIER, hpo_on_exit, hpo_exec …
#   source "$HPO_ROOT/cluster/ray_cluster.sh"
#   ray_cluster_up                                      # cluster tier: Ray on every node; laptop: nothing
#   hpo_exec python experiments/asha/driver.py          # driver: hpo.cluster.connect_ray()
#
# Cluster tier (inside sbatch): the head runs on the batch node, one worker on each
# other node, each a background `srun --overlap -w NODE` step running this file's
# node part, which runs `cluster/container_exec.sh ray start --block …` (in the
# Apptainer image when APPTAINER_IMAGE is set) and cleans up after it. ray_cluster_up returns when every node and every GPU of
# the allocation has joined, or ENDS THE JOB (exit 1) within seconds when a node's
# `ray start` dies or HPO_RAY_BOOT_TIMEOUT_S passes, naming the node and the logs to
# read. It exports RAY_ADDRESS (head GCS), HPO_EXPECTED_NODES and HPO_EXPECTED_GPUS
# for the driver, and registers the teardown with hpo_on_exit, so on success, error
# and scancel alike no Ray process outlives the job.
# Laptop tier (plain bash): starts nothing, unsets RAY_ADDRESS; the driver starts a
# local Ray runtime (hpo.cluster.connect_ray).
#
# The same file is EXECUTED inside each srun step as `bash cluster/ray_cluster.sh node
# INDEX` (that part resolves the node's own IP and starts Ray there).
#
# Settings (environment; sbatch passes the submitting shell's environment on):
#   HPO_RAY_BOOT_TIMEOUT_S  give up booting after this many seconds        (default 60)
#   HPO_RAY_STOP_WAIT_S     teardown: wait this long for SIGTERM to work   (default 8; < KillWait)
#   HPO_RAY_NODE_KILL_S     a node's `ray start` gets SIGKILL this long after SIGTERM (default 4)
#   HPO_RAY_OBJECT_STORE_MB object store per node, in /dev/shm             (default 512)
#   HPO_RAY_PORT_BASE       first port of this job's block                 (default from the job id)
#   HPO_RAY_TMP_ROOT        node-local dir for Ray's per-node temp dirs    (default /tmp)
#   HPO_RAY_LOG_DIR         per-node step output + Ray daemon logs         (default $HPO_JOB_DIR/ray-nodes)
#   HPO_RAY_DASHBOARD       1 = start the dashboard (needs ray[default])   (default 0)
#   HPO_RAY_WORKER_WAIT_GCS 1 = workers run `ray start` once the head's GCS port is open (default 1)
#   HPO_RAY_HEAD_ARGS / HPO_RAY_WORKER_ARGS  extra `ray start` arguments (word-split)
#   HPO_RAY_BIN, HPO_PYTHON the ray CLI and python to use                  (default ray, python)
#   RAY_AUTH_MODE           token (default; fresh random RAY_AUTH_TOKEN per job unless set) | disabled
#
# Ports: every Ray port is derived from the job id (45 blocks of 500 ports in
# 10000-32499, below Linux's ephemeral range) and, inside the block, from the node's
# index in the job (4 slots of 125: GCS, raylet, object manager, agents, metrics,
# 115 worker ports). Two jobs sharing a node therefore never collide (unless their
# ids are equal modulo 45 — set HPO_RAY_PORT_BASE then), and neither do head and
# worker of one job on practice/local_slurm.sh, whose nodes share one port space.
#
# Deliberately no `set -euo pipefail` here: this file is sourced, and the launcher
# owns its shell options. Everything below works with or without them.

# ====================================================================== helpers
_ray_now() { date +%s.%N; }
_ray_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
_ray_die() { echo "[ray] ERROR: $*" >&2; exit 1; }
_ray_is_uint() { [[ ${1:-} =~ ^[0-9]+$ ]]; }

# _ray_ports INDEX: sets _RP_* for node INDEX of the job (see "Ports" above).
_ray_ports() {
  local base=$HPO_RAY_PORT_BASE p
  p=$((base + ($1 % 4) * 125))
  _RP_GCS=$base            # head only; slot 0's first port
  _RP_NODE_MANAGER=$((p + 1)); _RP_OBJECT_MANAGER=$((p + 2))
  _RP_AGENT_GRPC=$((p + 3));   _RP_AGENT_HTTP=$((p + 4))
  _RP_RUNTIME_ENV=$((p + 5));  _RP_METRICS=$((p + 6))
  _RP_DASHBOARD=$((p + 7));    _RP_CLIENT=$((p + 8))
  _RP_WORKER_MIN=$((p + 10));  _RP_WORKER_MAX=$((p + 124))
}

# ====================================================================== boot
ray_cluster_up() {
  local t0 i node gres waiter_rc=0 missing joined rc n_nodes
  t0=$(_ray_now)
  # Both tiers: the job log is parsed line by line, so the trials' output that Ray
  # forwards to the driver must arrive complete and plain. Ray's defaults would fold
  # similar lines of different trials into "[repeated 5x across cluster]" (losing
  # [eval] lines) and wrap the "(trial pid=…, ip=…)" prefixes in ANSI colours.
  export RAY_DEDUP_LOGS=${RAY_DEDUP_LOGS:-0} RAY_COLOR_PREFIX=${RAY_COLOR_PREFIX:-0}
  if [ "${HPO_TIER:-laptop}" != cluster ]; then
    unset RAY_ADDRESS
    export HPO_EXPECTED_NODES=1 HPO_EXPECTED_GPUS=0
    echo "[ray] laptop tier: no Ray cluster to boot; the driver starts a local Ray runtime on this machine ($(nproc) CPUs)"
    return 0
  fi
  [ -z "${_HPO_RAY_SRUN_PIDS+x}" ] || _ray_die "ray_cluster_up was already called in this job"

  # ---- inputs (one clear error each)
  [ -n "${SLURM_JOB_ID:-}" ] || _ray_die "HPO_TIER=cluster but SLURM_JOB_ID is unset: run this under sbatch"
  [ -n "${HPO_ROOT:-}" ] && [ -f "$HPO_ROOT/cluster/ray_cluster.sh" ] \
    || _ray_die "HPO_ROOT is not the workshop repository: source experiments/common.sh first"
  declare -F hpo_on_exit >/dev/null || _ray_die "hpo_on_exit is not defined: source experiments/common.sh first"
  for i in srun squeue scancel scontrol; do command -v "$i" >/dev/null || _ray_die "'$i' is not on PATH"; done
  for i in HPO_CPUS_PER_NODE HPO_GPUS_PER_NODE HPO_NODES; do
    _ray_is_uint "${!i:-}" || _ray_die "$i must be a whole number, got '${!i:-}' (set by experiments/common.sh)"
  done
  [ "$HPO_CPUS_PER_NODE" -ge 1 ] || _ray_die "HPO_CPUS_PER_NODE must be >= 1"
  HPO_RAY_BOOT_TIMEOUT_S=${HPO_RAY_BOOT_TIMEOUT_S:-60}
  HPO_RAY_STOP_WAIT_S=${HPO_RAY_STOP_WAIT_S:-8}
  HPO_RAY_OBJECT_STORE_MB=${HPO_RAY_OBJECT_STORE_MB:-512}
  for i in HPO_RAY_BOOT_TIMEOUT_S HPO_RAY_STOP_WAIT_S HPO_RAY_OBJECT_STORE_MB; do
    _ray_is_uint "${!i}" || _ray_die "$i must be a whole number, got '${!i}'"
  done
  [ "$HPO_RAY_OBJECT_STORE_MB" -ge 80 ] || _ray_die "HPO_RAY_OBJECT_STORE_MB must be >= 80 (Ray's minimum is 75 MB)"
  if [ -n "${HPO_RAY_PORT_BASE:-}" ]; then
    _ray_is_uint "$HPO_RAY_PORT_BASE" && [ "$HPO_RAY_PORT_BASE" -ge 1024 ] && [ "$HPO_RAY_PORT_BASE" -le 65035 ] \
      || _ray_die "HPO_RAY_PORT_BASE must be a port number in 1024..65035, got '$HPO_RAY_PORT_BASE'"
  else
    HPO_RAY_PORT_BASE=$((10000 + (SLURM_JOB_ID % 45) * 500))
  fi
  HPO_RAY_TMP_ROOT=${HPO_RAY_TMP_ROOT:-/tmp}
  # Ray puts unix sockets under <temp>/session_<date>_<pid>/sockets/…: ~55 characters
  # plus the temp dir must fit in 107 bytes (sun_path).
  [ ${#HPO_RAY_TMP_ROOT} -le 30 ] || _ray_die "HPO_RAY_TMP_ROOT='$HPO_RAY_TMP_ROOT' is too long for Ray's unix sockets (max 30 characters)"
  HPO_RAY_LOG_DIR=${HPO_RAY_LOG_DIR:-${HPO_JOB_DIR:?HPO_JOB_DIR unset: source experiments/common.sh first}/ray-nodes}
  mkdir -p "$HPO_RAY_LOG_DIR" || _ray_die "cannot create $HPO_RAY_LOG_DIR"
  export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
  case $RAY_AUTH_MODE in
    # Explicit on purpose: a ~/.ray/auth_token left by any local ray.init() otherwise
    # flips `ray start` into token mode while other clients stay disabled.
    token) [ -n "${RAY_AUTH_TOKEN:-}" ] || { RAY_AUTH_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n'); export RAY_AUTH_TOKEN; } ;;
    disabled) ;;
    *) _ray_die "RAY_AUTH_MODE must be token or disabled, got '$RAY_AUTH_MODE'" ;;
  esac
  # Ray 2.60 "drains" a node for 30 s on SIGTERM; we stop on purpose, so don't.
  export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}
  export RAY_USAGE_STATS_ENABLED=0
  export HPO_RAY_PORT_BASE HPO_RAY_TMP_ROOT HPO_RAY_LOG_DIR HPO_RAY_OBJECT_STORE_MB

  # ---- nodes: the head is the node this batch script runs on (the first of the allocation)
  mapfile -t _HPO_RAY_NODES < <(scontrol show hostnames "${SLURM_JOB_NODELIST:-}")
  [ ${#_HPO_RAY_NODES[@]} -ge 1 ] || _ray_die "cannot list the job's nodes (SLURM_JOB_NODELIST='${SLURM_JOB_NODELIST:-}')"
  local head=${SLURMD_NODENAME:-${_HPO_RAY_NODES[0]}} others=()
  for node in "${_HPO_RAY_NODES[@]}"; do [ "$node" = "$head" ] || others+=("$node"); done
  _HPO_RAY_NODES=("$head" "${others[@]}")
  n_nodes=${#_HPO_RAY_NODES[@]}
  local head_ip
  head_ip=$(hostname --ip-address 2>/dev/null | awk '{print $1}') || true   # (|| true: set -e callers)
  [ -n "$head_ip" ] || _ray_die "cannot resolve this node's IP address (hostname --ip-address)"
  _ray_ports 0
  export HPO_RAY_HEAD_ADDRESS=$head_ip:$_RP_GCS
  # Someone already listens on our GCS port (a job whose id is equal modulo 45, or
  # another program): say so now, instead of a gcs_server bind error in a log file.
  if (exec 3<>"/dev/tcp/$head_ip/$_RP_GCS") 2>/dev/null; then
    _ray_die "port $_RP_GCS on $head (this job's Ray GCS port) is already in use, probably by another job" \
             "sharing the node; resubmit with HPO_RAY_PORT_BASE=<a free base, e.g. $(( (HPO_RAY_PORT_BASE - 10000 + 500) % 22500 + 10000 ))>"
  fi
  export HPO_EXPECTED_NODES=$n_nodes HPO_EXPECTED_GPUS=$((HPO_GPUS_PER_NODE * n_nodes))
  echo "[ray] booting Ray on $n_nodes node(s) ${_HPO_RAY_NODES[*]}: head $head at $HPO_RAY_HEAD_ADDRESS," \
       "$HPO_CPUS_PER_NODE CPUs + $HPO_GPUS_PER_NODE GPUs per node, ports $HPO_RAY_PORT_BASE-$((HPO_RAY_PORT_BASE + 499))," \
       "auth=$RAY_AUTH_MODE, logs $HPO_RAY_LOG_DIR"

  # ---- one background srun step per node. Registered for teardown first, so a
  # failure anywhere below still stops whatever did start.
  _HPO_RAY_SRUN_PIDS=()
  _HPO_RAY_WAITER_PID=""
  hpo_on_exit _ray_cluster_down
  gres=()
  # the step asks for the node's GPUs explicitly so CUDA_VISIBLE_DEVICES is set inside it
  [ "$HPO_GPUS_PER_NODE" -gt 0 ] && gres=(--gres="gpu:$HPO_GPUS_PER_NODE")
  for i in "${!_HPO_RAY_NODES[@]}"; do
    node=${_HPO_RAY_NODES[i]}
    # -c: srun in SLURM >= 22.05 no longer inherits --cpus-per-task.
    # --overlap: the Ray step holds the node's CPUs/GPUs for the whole job; without it
    #   any later `srun` in the job would wait forever for free resources.
    # --export=ALL: even under `sbatch --export=NONE` the step gets the batch env (venv, RAY_*).
    # Output (ray start + srun messages) goes to one file per node, not the job log.
    srun --nodes=1 --ntasks=1 -c "$HPO_CPUS_PER_NODE" -w "$node" --overlap "${gres[@]}" \
      --export=ALL --job-name="hpo-ray-$i" \
      bash "$HPO_ROOT/cluster/ray_cluster.sh" node "$i" >"$HPO_RAY_LOG_DIR/$node.log" 2>&1 &
    _HPO_RAY_SRUN_PIDS+=($!)
  done

  # ---- readiness: a cheap GCS poller (python -m hpo.cluster wait), while we watch the steps
  "$HPO_ROOT/cluster/container_exec.sh" "${HPO_PYTHON:-python}" -m hpo.cluster wait \
    --address "$HPO_RAY_HEAD_ADDRESS" --nodes "$n_nodes" --gpus "$HPO_EXPECTED_GPUS" \
    --timeout "$HPO_RAY_BOOT_TIMEOUT_S" --quiet >"$HPO_RAY_LOG_DIR/wait.log" 2>&1 &
  _HPO_RAY_WAITER_PID=$!
  local deadline
  deadline=$(awk -v a="$t0" -v t="$HPO_RAY_BOOT_TIMEOUT_S" 'BEGIN{printf "%d", a + t + 10}')
  while :; do
    for i in "${!_HPO_RAY_SRUN_PIDS[@]}"; do
      if ! kill -0 "${_HPO_RAY_SRUN_PIDS[i]}" 2>/dev/null; then
        rc=0; wait "${_HPO_RAY_SRUN_PIDS[i]}" || rc=$?
        kill "$_HPO_RAY_WAITER_PID" 2>/dev/null || true
        _ray_report_node "${_HPO_RAY_NODES[i]}" "$i" \
          "its Ray step (ray start) exited with code $rc $(_ray_since "$t0") s into the boot"
        _ray_die "Ray cluster boot failed on node ${_HPO_RAY_NODES[i]} (see above)"
      fi
    done
    if ! kill -0 "$_HPO_RAY_WAITER_PID" 2>/dev/null; then
      waiter_rc=0; wait "$_HPO_RAY_WAITER_PID" || waiter_rc=$?
      break
    fi
    if [ "$(date +%s)" -gt "$deadline" ]; then
      kill "$_HPO_RAY_WAITER_PID" 2>/dev/null || true; waiter_rc=124; break
    fi
    sleep 0.1
  done
  _HPO_RAY_WAITER_PID=""
  if [ "$waiter_rc" != 0 ]; then
    cat "$HPO_RAY_LOG_DIR/wait.log" >&2
    joined=" $(sed -n 's/^JOINED //p' "$HPO_RAY_LOG_DIR/wait.log" | tail -1) "
    missing=0
    for i in "${!_HPO_RAY_NODES[@]}"; do
      node=${_HPO_RAY_NODES[i]}
      [[ $joined == *" $node "* ]] && continue
      missing=1
      _ray_report_node "$node" "$i" "it did not join the Ray cluster within HPO_RAY_BOOT_TIMEOUT_S=${HPO_RAY_BOOT_TIMEOUT_S}s"
    done
    [ $missing = 1 ] || echo "[ray] every node joined, but not all GPUs were registered (expected $HPO_EXPECTED_GPUS)" >&2
    _ray_die "Ray cluster incomplete after $(_ray_since "$t0") s (waiter exit $waiter_rc, output above; $HPO_RAY_LOG_DIR/wait.log)"
  fi

  export RAY_ADDRESS=$HPO_RAY_HEAD_ADDRESS   # ray.init(address=…) in hpo.cluster.connect_ray
  echo "[ray] cluster up: $n_nodes node(s), $((HPO_CPUS_PER_NODE * n_nodes)) CPUs, $HPO_EXPECTED_GPUS GPUs at $RAY_ADDRESS;" \
       "boot $(_ray_since "${HPO_T0:-$t0}") s after job start (ray_cluster_up $(_ray_since "$t0") s)"
}

# _ray_report_node NODE INDEX WHY: tell the learner exactly which files to read.
_ray_report_node() {
  local node=$1 idx=$2 why=$3
  {
    echo "[ray] node $node (Ray step hpo-ray-$idx): $why."
    echo "[ray]   step output (ray start, srun):  $HPO_RAY_LOG_DIR/$node.log — last lines:"
    tail -n 15 "$HPO_RAY_LOG_DIR/$node.log" 2>/dev/null | sed 's/^/[ray]   | /'
    echo "[ray]   Ray's logs of that node (if Ray got that far): $HPO_RAY_LOG_DIR/$node/raylet.out$([ "$idx" = 0 ] && echo ", gcs_server.out")"
    echo "[ray]     (copied there when the step ends; while it runs: $HPO_RAY_TMP_ROOT/ray-$SLURM_JOB_ID-$idx/session_latest/logs/ on $node)"
  } >&2
}

# ====================================================================== teardown
# Runs from common.sh's EXIT trap (success, error, scancel). NOT `kill $srun_pid`:
# srun answers SIGTERM by SIGKILLing the step, so `ray start --block` could not stop
# its raylet/gcs_server/workers (and under proctrack/linuxproc they would outlive
# the job). `scancel --signal=TERM JOB.STEP` signals the step's task, our node
# wrapper, which passes it to `ray start`; Ray then stops its daemons in ~1-2 s
# (drain timeout 0), the wrapper keeps the logs and removes the temp dir.
_ray_cluster_down() {
  local t0 deadline s alive p signaled=" " n_steps=0
  t0=$(_ray_now)
  [ -n "${_HPO_RAY_WAITER_PID:-}" ] && { kill "$_HPO_RAY_WAITER_PID" 2>/dev/null || true; }
  deadline=$(awk -v a="$t0" -v t="${HPO_RAY_STOP_WAIT_S:-8}" 'BEGIN{printf "%d", a + t}')
  while :; do
    alive=0
    for p in "${_HPO_RAY_SRUN_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    # (re-listed each round: a step launched just before an early failure may register late)
    for s in $(squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j' 2>/dev/null | awk '$2 ~ /^hpo-ray-[0-9]+$/ {print $1}'); do
      [[ $signaled == *" $s "* ]] && continue
      # scancel 22.05 prints "Kill job error … Invalid job id" here although the signal is delivered
      scancel --signal=TERM "$s" >/dev/null 2>&1
      signaled+="$s "; n_steps=$((n_steps + 1))
    done
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "[ray] teardown: Ray steps still running after ${HPO_RAY_STOP_WAIT_S:-8}s; killing them" >&2
      for s in $signaled; do scancel --signal=KILL "$s" >/dev/null 2>&1; done
      sleep 1
      for p in "${_HPO_RAY_SRUN_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
      break
    fi
    sleep 0.1
  done
  for p in "${_HPO_RAY_SRUN_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  # Each step removes its own temp dir; this catches a step that was SIGKILLed (this node only).
  rm -rf "${HPO_RAY_TMP_ROOT:-/tmp}/ray-$SLURM_JOB_ID-"* 2>/dev/null
  echo "[ray] teardown: $n_steps Ray step(s) stopped in $(_ray_since "$t0") s"
  return 0
}

# ====================================================================== per-node step
# `bash cluster/ray_cluster.sh node INDEX`, run by srun on the node: start Ray
# there (through container_exec.sh), block until it ends, then keep its logs and
# delete its temp dir. Exits 0 when stopped by SIGTERM (teardown), so sacct shows
# the Ray steps COMPLETED; otherwise Ray's own exit code.
_ray_node_main() {
  set -uo pipefail
  local idx=${1:-} node ip tmp role args=() child rc=0 term=0 extra
  _ray_is_uint "$idx" || { echo "usage: bash cluster/ray_cluster.sh node INDEX   (run by srun from ray_cluster_up)" >&2; return 2; }
  for v in SLURM_JOB_ID HPO_ROOT HPO_RAY_PORT_BASE HPO_RAY_TMP_ROOT HPO_RAY_LOG_DIR HPO_RAY_HEAD_ADDRESS HPO_CPUS_PER_NODE; do
    [ -n "${!v:-}" ] || { echo "[ray-node] ERROR: $v is unset: this is started by ray_cluster_up, not by hand" >&2; return 2; }
  done
  node=${SLURMD_NODENAME:-$(hostname -s)}
  ip=$(hostname --ip-address | awk '{print $1}')   # this node's address, as on a real cluster
  [ -n "$ip" ] || { echo "[ray-node] ERROR: cannot resolve the IP of $node (hostname --ip-address)" >&2; return 1; }
  tmp=$HPO_RAY_TMP_ROOT/ray-$SLURM_JOB_ID-$idx       # short, per job and node: sockets, shared /tmp
  _ray_ports "$idx"
  args=(--block --disable-usage-stats --log-style=record
        --node-ip-address="$ip" --temp-dir="$tmp"
        --num-cpus="$HPO_CPUS_PER_NODE" --num-gpus="${HPO_GPUS_PER_NODE:-0}"
        --object-store-memory=$((${HPO_RAY_OBJECT_STORE_MB:-512} * 1000 * 1000))
        --node-manager-port="$_RP_NODE_MANAGER" --object-manager-port="$_RP_OBJECT_MANAGER"
        --min-worker-port="$_RP_WORKER_MIN" --max-worker-port="$_RP_WORKER_MAX"
        --dashboard-agent-grpc-port="$_RP_AGENT_GRPC" --dashboard-agent-listen-port="$_RP_AGENT_HTTP"
        --runtime-env-agent-port="$_RP_RUNTIME_ENV" --metrics-export-port="$_RP_METRICS")
  if [ "$idx" = 0 ]; then
    role="head"
    args+=(--head --port="$_RP_GCS" --dashboard-port="$_RP_DASHBOARD")
    # (the dashboard listens on the head's localhost only: reach it with ssh -L)
    if [ "${HPO_RAY_DASHBOARD:-0}" = 1 ]; then args+=(--include-dashboard=true)
    else args+=(--include-dashboard=false); fi
    # The head also starts a Ray Client server (default port 10001: jobs would collide)
    # but only if grpcio is installed; giving its port without grpcio is an error.
    if "$HPO_ROOT/cluster/container_exec.sh" "${HPO_PYTHON:-python}" -c \
        'import importlib.util as u, sys; sys.exit(u.find_spec("grpc") is None)' 2>/dev/null; then
      args+=(--ray-client-server-port="$_RP_CLIENT")
    fi
    extra=${HPO_RAY_HEAD_ARGS:-}
  else
    role="worker"
    args+=(--address="$HPO_RAY_HEAD_ADDRESS")
    extra=${HPO_RAY_WORKER_ARGS:-}
    # Start only once the head's GCS port accepts connections: a worker that tries
    # too early gets "connection refused" and gRPC backs off for ~1 s, and on a
    # shared-core test cluster the head boots faster without a worker competing.
    if [ "${HPO_RAY_WORKER_WAIT_GCS:-1}" = 1 ]; then
      local t_end=$((SECONDS + ${HPO_RAY_BOOT_TIMEOUT_S:-60}))
      until timeout 1 bash -c "exec 3<>/dev/tcp/${HPO_RAY_HEAD_ADDRESS%:*}/${HPO_RAY_HEAD_ADDRESS##*:}" 2>/dev/null; do
        [ $SECONDS -lt $t_end ] || { echo "[ray-node] $node: head GCS $HPO_RAY_HEAD_ADDRESS not reachable" >&2; break; }
        sleep 0.05
      done
    fi
  fi
  # shellcheck disable=SC2206  # word-splitting of the extra args is intended
  [ -n "$extra" ] && args+=($extra)
  echo "[ray-node] $node: $role, ip $ip, temp $tmp, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}, $(date '+%T')"
  echo "[ray-node] ${HPO_RAY_BIN:-ray} start ${args[*]}"
  mkdir -p "$tmp"
  # `scancel --signal=TERM JOB.STEP` under proctrack/cgroup signals only the step's
  # task, i.e. this shell, not its children: forward it to `ray start` (which then
  # stops raylet, gcs_server, workers; a second TERM, e.g. from proctrack/linuxproc
  # that signals the whole tree, is ignored by Ray) and wait for Ray to finish.
  # A `ray start` blocked inside a C call (e.g. still connecting to an unreachable GCS)
  # cannot run its Python SIGTERM handler: SIGKILL it after HPO_RAY_NODE_KILL_S; when
  # this task exits, slurmstepd kills whatever is left in the step.
  child="" killer=""
  _ray_node_stop() {
    [ -n "$child" ] || return 0
    kill -TERM "$child" 2>/dev/null
    [ -n "$killer" ] || { (sleep "${HPO_RAY_NODE_KILL_S:-4}"; kill -KILL "$child" 2>/dev/null) & killer=$!; }
  }
  trap 'term=1; _ray_node_stop' TERM
  env -u RAY_ADDRESS "$HPO_ROOT/cluster/container_exec.sh" "${HPO_RAY_BIN:-ray}" start "${args[@]}" &
  child=$!
  [ $term = 1 ] && _ray_node_stop   # TERM arrived before the child existed
  while :; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break      # still there: wait was interrupted by the trap
  done
  [ -n "$killer" ] && kill "$killer" 2>/dev/null
  # Keep the daemon logs (small) with the job's results; the temp dir is node-local.
  local src=$tmp/session_latest/logs dst=$HPO_RAY_LOG_DIR/$node f
  if [ -d "$src" ]; then
    mkdir -p "$dst"
    for f in raylet.out raylet.err gcs_server.out gcs_server.err monitor.log dashboard.log \
             dashboard_agent.log runtime_env_agent.log log_monitor.log ray_process_exit.log; do
      [ -f "$src/$f" ] && cp "$src/$f" "$dst/"
    done
  fi
  rm -rf "$tmp"
  echo "[ray-node] $node: ray start exited with code $rc$([ $term = 1 ] && echo ' after SIGTERM (teardown)'), $(date '+%T')"
  [ $term = 1 ] && return 0
  return "$rc"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then   # executed, not sourced
  case ${1:-} in
    node) shift; _ray_node_main "$@"; exit $? ;;
    *) echo "usage: source cluster/ray_cluster.sh && ray_cluster_up   (in a launcher, after experiments/common.sh)" >&2
       echo "       bash cluster/ray_cluster.sh node INDEX                (inside the srun step; started by ray_cluster_up)" >&2
       exit 2 ;;
  esac
fi
