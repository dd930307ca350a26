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
# INDEX` (that part resolves the node's own IP, picks free ports on that node, writes
# them to $HPO_JOB_DIR/ray-ports/<node>.env and starts Ray there; see "Ports").
#
# Settings (environment; sbatch passes the submitting shell's environment on):
#   HPO_RAY_BOOT_TIMEOUT_S  give up booting after this many seconds        (default 60)
#   HPO_RAY_STOP_WAIT_S     teardown: wait this long for SIGTERM to work   (default 8; < KillWait)
#   HPO_RAY_NODE_KILL_S     a node's `ray start` gets SIGKILL this long after SIGTERM (default 4)
#   HPO_RAY_OBJECT_STORE_MB object store per node, in /dev/shm             (default 512)
#   HPO_RAY_PORT_BASE       first port block to try; taken ones are skipped (default from the job id; "Ports")
#   HPO_RAY_PORT_TRIES      `ray start` attempts per node if its ports get taken at start (default 5)
#   HPO_RAY_TMP_ROOT        node-local dir for Ray's per-node temp dirs    (default /tmp)
#   HPO_RAY_LOG_DIR         per-node step output + Ray daemon logs         (default $HPO_JOB_DIR/ray-nodes)
#   HPO_RAY_DASHBOARD       1 = start the dashboard (needs ray[default])   (default 0)
#   HPO_RAY_WORKER_WAIT_GCS 1 = workers run `ray start` once the head's GCS port is open (default 1)
#   HPO_RAY_HEAD_ARGS / HPO_RAY_WORKER_ARGS  extra `ray start` arguments (word-split)
#   HPO_RAY_BIN, HPO_PYTHON the ray CLI and python to use                  (default ray, python)
#   RAY_AUTH_MODE           token (default; fresh random RAY_AUTH_TOKEN per job unless set) | disabled
#
# Ports. Ray needs fixed TCP ports on every node (node manager, object manager,
# agents, metrics, runtime-env agent; the head also GCS, dashboard, client server)
# plus a range for its worker processes. Many jobs share a node (a class of 30!),
# and two servers cannot listen on one port of one node: the second fails to boot.
#   * Layout: 10000-32499 (below Linux's ephemeral range 32768+, so no outgoing
#     connection ever sits on one of them) is cut into 45 BLOCKS of 500 ports, each
#     block into 4 node SLOTS of 125 (node index % 4): +0 GCS (head), +1 node
#     manager, +2 object manager, +3/+4 agent gRPC/HTTP, +5 runtime-env agent,
#     +6 metrics, +7 dashboard, +8 client server, +10..+124 worker ports. Slots keep
#     the head and the workers of one job apart on practice/local_slurm.sh, whose
#     nodes all share this machine's port space.
#   * Chosen by PROBING, not by arithmetic alone. The job id only says where to
#     START: block job_id % 45 (or HPO_RAY_PORT_BASE; the blocks then run from there
#     up to 65535). Each node, in its own srun step, right before its `ray start`,
#     reads the node's sockets (/proc/net/tcp*, what `ss -tan` shows) and takes the
#     first block whose 125 ports of its slot are all free, going on block by block
#     (after the last comes the first): the head from the job's block, a worker from
#     the head's. Why: with arithmetic alone, two jobs whose ids are equal modulo 45
#     got the same ports, and any program on one of them broke the job. Why all 125:
#     a running job keeps its fixed ports bound all the time, so its slot counts as
#     taken even while none of its worker ports happens to be in use.
#   * Written down: each node writes what it took to $HPO_JOB_DIR/ray-ports/<node>.env
#     (shared filesystem; the job log's "[ray] ports:" line sums them up). The head's
#     file is how the workers and the readiness wait learn the GCS address: nobody
#     can compute which block the head ended up in.
#   * Race: two jobs probing at the same moment both see a block free. The window is
#     small (probe, then `ray start` at once: its GCS binds ~1 s later), and the
#     loser's gcs_server/raylet logs "Failed to start the grpc server … port N"
#     ("Address already in use"). Ray itself would only give up ~40 s later, so during
#     the boot the node step watches Ray's logs for that, kills its `ray start`, says
#     so in ray-nodes/<node>.log (Ray's logs of that attempt: ray-nodes/<node>/attempt-N/)
#     and retries from a random 1-8 blocks further on (two losers of one race must not
#     meet again), at most HPO_RAY_PORT_TRIES attempts. The head writes its file only
#     once its own gcs_server logged that it listens on the port, so nobody ever
#     connects to the GCS of the job that won the race; a worker whose head had to
#     move restarts with the new address.
#
# Deliberately no `set -euo pipefail` here: this file is sourced, and the launcher
# owns its shell options. Everything below works with or without them.

# ====================================================================== helpers
_ray_now() { date +%s.%N; }
_ray_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
_ray_die() { echo "[ray] ERROR: $*" >&2; exit 1; }
_ray_is_uint() { [[ ${1:-} =~ ^[0-9]+$ ]]; }

# ====================================================================== ports (see "Ports" above)
_RAY_BLOCK=500 _RAY_SLOT=125

# _ray_port_ring: the blocks a job may use: _RR_N blocks from port _RR_LO on (45 from
# 10000, or as many as fit from HPO_RAY_PORT_BASE up to 65535), tried round-robin.
_ray_port_ring() {
  if [ -n "${HPO_RAY_PORT_BASE:-}" ]; then
    _RR_LO=$HPO_RAY_PORT_BASE; _RR_N=$(((65536 - HPO_RAY_PORT_BASE) / _RAY_BLOCK))
  else
    _RR_LO=10000; _RR_N=45
  fi
}

# _ray_first_block: the job's first-choice block (HPO_RAY_PORT_BASE, else from the job id).
_ray_first_block() {
  _ray_port_ring
  if [ -n "${HPO_RAY_PORT_BASE:-}" ]; then echo "$HPO_RAY_PORT_BASE"
  else echo $((_RR_LO + (SLURM_JOB_ID % _RR_N) * _RAY_BLOCK)); fi
}
# _ray_block_after BLOCK K: the block K places after BLOCK, round the ring.
_ray_block_after() {
  _ray_port_ring
  echo $((_RR_LO + ((($1 - _RR_LO) / _RAY_BLOCK + $2) % _RR_N) * _RAY_BLOCK))
}

# _ray_pick_block INDEX FIRST: print the first block, from block FIRST on (round the ring),
# whose slot for node INDEX has all its 125 ports free on THIS node; say on stderr why the
# blocks before it were skipped. Exit 1 when none is free, 2 when the sockets can't be read.
# "In use" = any TCP socket on the port, IPv4 or IPv6, any address, in any state except
# TIME_WAIT (06), which does not stop a server from binding. Reads /proc/net/tcp{,6}
# itself (that is what `ss` shows; no dependency, a few ms).
_ray_pick_block() {
  local slot=$(($1 % 4)) first=$2 files=() f
  _ray_port_ring
  for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] || { echo "[ray-node] cannot read /proc/net/tcp: cannot tell which ports are free" >&2; return 2; }
  awk -v slot="$slot" -v first="$first" -v lo="$_RR_LO" -v n="$_RR_N" -v bs="$_RAY_BLOCK" -v ss="$_RAY_SLOT" '
    function hex(s,   i, v) { v = 0; s = toupper(s)
      for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789ABCDEF", substr(s, i, 1)) - 1
      return v }
    # lines: "sl local_address rem_address st ...", local_address = HEXIP:HEXPORT
    FNR > 1 && $4 != "06" { split($2, a, ":"); busy[hex(a[2])] = 1 }
    END {
      k0 = int((first - lo) / bs); if (k0 < 0) k0 = 0
      for (k = 0; k < n; k++) {
        b = lo + ((k0 + k) % n) * bs; p = b + slot * ss
        for (q = p; q < p + ss && !(q in busy); q++) ;
        if (q == p + ss) { print b; exit 0 }
        if (k < 5) printf "[ray-node] ports %d-%d (block %d, slot %d) are not free: port %d is in use\n", p, p + ss - 1, b, slot, q > "/dev/stderr"
        else if (k == 5) printf "[ray-node] ... (further blocks in use)\n" > "/dev/stderr"
      }
      printf "[ray-node] no free ports: slot %d is in use in all %d blocks from port %d on\n", slot, n, lo > "/dev/stderr"
      exit 1
    }' "${files[@]}"
}

# _ray_ports BLOCK INDEX: sets _RP_* to the ports of node INDEX (slot INDEX % 4) in BLOCK.
_ray_ports() {
  local p=$(($1 + ($2 % 4) * _RAY_SLOT))
  _RP_BLOCK=$1 _RP_FIRST=$p _RP_LAST=$((p + _RAY_SLOT - 1))
  _RP_GCS=$p                   # head only
  _RP_NODE_MANAGER=$((p + 1)); _RP_OBJECT_MANAGER=$((p + 2))
  _RP_AGENT_GRPC=$((p + 3));   _RP_AGENT_HTTP=$((p + 4))
  _RP_RUNTIME_ENV=$((p + 5));  _RP_METRICS=$((p + 6))
  _RP_DASHBOARD=$((p + 7));    _RP_CLIENT=$((p + 8))
  _RP_WORKER_MIN=$((p + 10));  _RP_WORKER_MAX=$((p + 124))
}

# Ports files, $HPO_RAY_PORTS_DIR/<node>.env: KEY=VALUE lines. Written whole, then renamed
# into place, so a reader on another node never sees half a file.
_ray_write_ports() {   # FILE KEY=VALUE...
  local f=$1; shift
  { echo "# Ray ports of SLURM job $SLURM_JOB_ID on $(hostname -s), written by cluster/ray_cluster.sh at $(date '+%T')"
    printf '%s\n' "job=$SLURM_JOB_ID" "restart=${SLURM_RESTART_COUNT:-0}" "$@"
  } >"$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
}
# _ray_read_ports FILE: sets _PF_<key>; fails when the file is missing or left by another
# run (a job dir reused by --output, or this job before a requeue).
_ray_read_ports() {
  local k v
  _PF_job="" _PF_restart="" _PF_attempt="" _PF_block="" _PF_first_port="" _PF_last_port="" _PF_gcs_address="" _PF_note=""
  [ -f "$1" ] || return 1
  while IFS='=' read -r k v; do
    case $k in job|restart|attempt|block|first_port|last_port|gcs_address|note) printf -v "_PF_$k" '%s' "$v" ;; esac
  done <"$1"
  [ "$_PF_job" = "$SLURM_JOB_ID" ] && [ "$_PF_restart" = "${SLURM_RESTART_COUNT:-0}" ]
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
    export HPO_RAY_PORT_BASE
  fi
  HPO_RAY_PORT_TRIES=${HPO_RAY_PORT_TRIES:-5}
  { _ray_is_uint "$HPO_RAY_PORT_TRIES" && [ "$HPO_RAY_PORT_TRIES" -ge 1 ]; } \
    || _ray_die "HPO_RAY_PORT_TRIES must be a whole number >= 1, got '$HPO_RAY_PORT_TRIES'"
  HPO_RAY_TMP_ROOT=${HPO_RAY_TMP_ROOT:-/tmp}
  # Ray puts unix sockets under <temp>/session_<date>_<pid>/sockets/…: ~55 characters
  # plus the temp dir must fit in 107 bytes (sun_path).
  [ ${#HPO_RAY_TMP_ROOT} -le 30 ] || _ray_die "HPO_RAY_TMP_ROOT='$HPO_RAY_TMP_ROOT' is too long for Ray's unix sockets (max 30 characters)"
  HPO_RAY_LOG_DIR=${HPO_RAY_LOG_DIR:-${HPO_JOB_DIR:?HPO_JOB_DIR unset: source experiments/common.sh first}/ray-nodes}
  mkdir -p "$HPO_RAY_LOG_DIR" || _ray_die "cannot create $HPO_RAY_LOG_DIR"
  # Where each node writes the ports it chose (shared filesystem; see "Ports"). Emptied
  # first: a job dir reused (same --output, a requeue) must not hand out old addresses.
  HPO_RAY_PORTS_DIR=$HPO_JOB_DIR/ray-ports
  mkdir -p "$HPO_RAY_PORTS_DIR" || _ray_die "cannot create $HPO_RAY_PORTS_DIR"
  rm -f "$HPO_RAY_PORTS_DIR"/*.env "$HPO_RAY_PORTS_DIR"/*.tmp.* "$HPO_RAY_PORTS_DIR/up"
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
  export HPO_RAY_PORT_TRIES HPO_RAY_PORTS_DIR HPO_RAY_TMP_ROOT HPO_RAY_LOG_DIR HPO_RAY_OBJECT_STORE_MB HPO_RAY_BOOT_TIMEOUT_S

  # ---- nodes: the head is the node this batch script runs on (the first of the allocation)
  mapfile -t _HPO_RAY_NODES < <(scontrol show hostnames "${SLURM_JOB_NODELIST:-}")
  [ ${#_HPO_RAY_NODES[@]} -ge 1 ] || _ray_die "cannot list the job's nodes (SLURM_JOB_NODELIST='${SLURM_JOB_NODELIST:-}')"
  local head=${SLURMD_NODENAME:-${_HPO_RAY_NODES[0]}} others=()
  for node in "${_HPO_RAY_NODES[@]}"; do [ "$node" = "$head" ] || others+=("$node"); done
  _HPO_RAY_NODES=("$head" "${others[@]}")
  n_nodes=${#_HPO_RAY_NODES[@]}
  # The workers find the head's GCS address in the head's ports file (see "Ports").
  export HPO_RAY_HEAD_NODE=$head
  local head_file=$HPO_RAY_PORTS_DIR/$head.env
  export HPO_EXPECTED_NODES=$n_nodes HPO_EXPECTED_GPUS=$((HPO_GPUS_PER_NODE * n_nodes))
  local from
  from="$(_ray_first_block) (job id % 45)"
  [ -n "${HPO_RAY_PORT_BASE:-}" ] && from="$HPO_RAY_PORT_BASE (HPO_RAY_PORT_BASE)"
  echo "[ray] booting Ray on $n_nodes node(s) ${_HPO_RAY_NODES[*]}: head $head," \
       "$HPO_CPUS_PER_NODE CPUs + $HPO_GPUS_PER_NODE GPUs per node, auth=$RAY_AUTH_MODE;" \
       "each node takes free ports from block $from on and writes them to $HPO_RAY_PORTS_DIR/; logs $HPO_RAY_LOG_DIR"

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

  # ---- readiness: a cheap GCS poller (python -m hpo.cluster wait), while we watch the steps.
  # It reads the GCS address from the head's ports file as soon as the head writes it
  # (and follows it if the head has to move to other ports).
  "$HPO_ROOT/cluster/container_exec.sh" "${HPO_PYTHON:-python}" -m hpo.cluster wait \
    --address-file "$head_file" --nodes "$n_nodes" --gpus "$HPO_EXPECTED_GPUS" \
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

  _ray_read_ports "$head_file" && [ -n "$_PF_gcs_address" ] \
    || _ray_die "the cluster is up but the head's ports file $head_file has no GCS address"
  export HPO_RAY_HEAD_ADDRESS=$_PF_gcs_address
  export RAY_ADDRESS=$HPO_RAY_HEAD_ADDRESS   # ray.init(address=…) in hpo.cluster.connect_ray
  # Tell the node steps the boot is over (they stop watching for port clashes) …
  echo "$SLURM_JOB_ID" >"$HPO_RAY_PORTS_DIR/up"
  # … and the learner which ports each node took (the files hold every port).
  local summary=""
  for node in "${_HPO_RAY_NODES[@]}"; do
    _ray_read_ports "$HPO_RAY_PORTS_DIR/$node.env" || { summary+=" $node ?;"; continue; }
    summary+=" $node $_PF_first_port-$_PF_last_port"
    [ "$node" = "$head" ] && summary+=" (GCS ${_PF_gcs_address##*:})"
    [ -n "$_PF_note" ] && summary+=" [$_PF_note]"
    summary+=";"
  done
  echo "[ray] ports:${summary%;} (details: $HPO_RAY_PORTS_DIR/<node>.env)"
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
    if _ray_read_ports "$HPO_RAY_PORTS_DIR/$node.env"; then
      echo "[ray]   ports it chose: $_PF_first_port-$_PF_last_port, attempt $_PF_attempt ($HPO_RAY_PORTS_DIR/$node.env)"
    else
      echo "[ray]   ports: none in use ($HPO_RAY_PORTS_DIR/$node.env not written; the step output says which it tried;" \
           "logs of failed attempts: $HPO_RAY_LOG_DIR/$node/attempt-N/)"
    fi
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
# `bash cluster/ray_cluster.sh node INDEX`, run by srun on the node: choose this node's
# ports (see "Ports"), start Ray there on them (through container_exec.sh), watch the
# boot for a port taken under it (then retry on other ports), block until Ray ends,
# then keep its logs and delete its temp dir. Exits 0 when stopped by SIGTERM
# (teardown), so sacct shows the Ray steps COMPLETED; otherwise Ray's own exit code,
# or 3 (no free ports on this node), 4 (ports taken under it HPO_RAY_PORT_TRIES times).

# What Ray's daemons log when a port they were given is already taken: the gRPC servers
# (gcs_server, raylet) "Failed to start the grpc server … The specified port is N",
# the Python agents "Address already in use".
_RAY_CLASH_RE='Failed to start the grpc server|[Aa]ddress already in use'
_RAY_DAEMON_LOGS=(gcs_server.out gcs_server.err raylet.out raylet.err runtime_env_agent.err
                  runtime_env_agent.log dashboard_agent.err dashboard_agent.log)

# _ray_port_in_use PORT: is there a TCP socket on PORT on this node (as in _ray_pick_block)?
_ray_port_in_use() {
  local hex
  printf -v hex '%04X' "$1"
  grep -qs -E "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:[0-9A-F]+ (0[0-57-9A-F]|[1-9A-F][0-9A-F]) " /proc/net/tcp /proc/net/tcp6
}
# _ray_descendants PID: the pids of PID's children, grandchildren, … (one per line)
_ray_descendants() {
  ps -e -o pid= -o ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { todo = root; while (todo != "") { n = split(todo, a, " "); todo = ""
            for (i = 1; i <= n; i++) { m = split(kids[a[i]], c, " ")
              for (j = 1; j <= m; j++) { print c[j]; todo = todo " " c[j] } } } }'
}
_ray_re_escape() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

_ray_node_main() {
  set -uo pipefail
  local idx=${1:-} node ip tmp role args=() ports=() extra=() child="" killer="" rc=0 term=0 v
  _ray_is_uint "$idx" || { echo "usage: bash cluster/ray_cluster.sh node INDEX   (run by srun from ray_cluster_up)" >&2; return 2; }
  for v in SLURM_JOB_ID HPO_ROOT HPO_RAY_TMP_ROOT HPO_RAY_LOG_DIR HPO_RAY_PORTS_DIR HPO_RAY_HEAD_NODE HPO_CPUS_PER_NODE; do
    [ -n "${!v:-}" ] || { echo "[ray-node] ERROR: $v is unset: this is started by ray_cluster_up, not by hand" >&2; return 2; }
  done
  node=${SLURMD_NODENAME:-$(hostname -s)}
  ip=$(hostname --ip-address | awk '{print $1}')   # this node's address, as on a real cluster
  [ -n "$ip" ] || { echo "[ray-node] ERROR: cannot resolve the IP of $node (hostname --ip-address)" >&2; return 1; }
  tmp=$HPO_RAY_TMP_ROOT/ray-$SLURM_JOB_ID-$idx       # short, per job and node: sockets, shared /tmp
  local my_file=$HPO_RAY_PORTS_DIR/$node.env head_file=$HPO_RAY_PORTS_DIR/$HPO_RAY_HEAD_NODE.env
  local tries=${HPO_RAY_PORT_TRIES:-5} boot_end=$((SECONDS + ${HPO_RAY_BOOT_TIMEOUT_S:-60} + 10))
  local attempt=0 first block note why clash_line client=0 head_addr="" head_attempt="" head_block=""
  args=(--block --disable-usage-stats --log-style=record
        --node-ip-address="$ip" --temp-dir="$tmp"
        --num-cpus="$HPO_CPUS_PER_NODE" --num-gpus="${HPO_GPUS_PER_NODE:-0}"
        --object-store-memory=$((${HPO_RAY_OBJECT_STORE_MB:-512} * 1000 * 1000)))
  # shellcheck disable=SC2206  # word-splitting of the extra args is intended
  if [ "$idx" = 0 ]; then
    role="head"
    # (the dashboard listens on the head's localhost only: reach it with ssh -L)
    if [ "${HPO_RAY_DASHBOARD:-0}" = 1 ]; then args+=(--include-dashboard=true)
    else args+=(--include-dashboard=false); fi
    # The head also starts a Ray Client server (default port 10001: jobs would collide)
    # but only if grpcio is installed; giving its port without grpcio is an error.
    "$HPO_ROOT/cluster/container_exec.sh" "${HPO_PYTHON:-python}" -c \
      'import importlib.util as u, sys; sys.exit(u.find_spec("grpc") is None)' 2>/dev/null && client=1
    extra=(${HPO_RAY_HEAD_ARGS:-})
    first=$(_ray_first_block)
  else
    role="worker"
    extra=(${HPO_RAY_WORKER_ARGS:-})
    first=""                                         # the head's block, from its ports file
  fi
  echo "[ray-node] $node: $role, ip $ip, temp $tmp, CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}, $(date '+%T')"

  # `scancel --signal=TERM JOB.STEP` under proctrack/cgroup signals only the step's
  # task, i.e. this shell, not its children: forward it to `ray start` (which then
  # stops raylet, gcs_server, workers; a second TERM, e.g. from proctrack/linuxproc
  # that signals the whole tree, is ignored by Ray) and wait for Ray to finish.
  # A `ray start` blocked inside a C call (e.g. still connecting to an unreachable GCS)
  # cannot run its Python SIGTERM handler: SIGKILL it after HPO_RAY_NODE_KILL_S; when
  # this task exits, slurmstepd kills whatever is left in the step.
  _ray_node_stop() {
    [ -n "$child" ] || return 0
    kill -TERM "$child" 2>/dev/null
    [ -n "$killer" ] || { (sleep "${HPO_RAY_NODE_KILL_S:-4}"; kill -KILL "$child" 2>/dev/null) & killer=$!; }
  }
  trap 'term=1; _ray_node_stop' TERM

  # The ports file: every port this node uses, and (head) the GCS address for the others.
  _ray_node_write_ports() {
    local kv=("node=$node" "role=$role" "index=$idx" "attempt=$attempt" "ip=$ip" "block=$block"
              "first_port=$_RP_FIRST" "last_port=$_RP_LAST")
    [ $role = head ] && kv+=("gcs_address=$ip:$_RP_GCS" "dashboard_port=$_RP_DASHBOARD")
    [ $role = head ] && [ $client = 1 ] && kv+=("client_server_port=$_RP_CLIENT")
    [ $role = worker ] && kv+=("head_gcs_address=$head_addr")
    kv+=("node_manager_port=$_RP_NODE_MANAGER" "object_manager_port=$_RP_OBJECT_MANAGER"
         "dashboard_agent_grpc_port=$_RP_AGENT_GRPC" "dashboard_agent_listen_port=$_RP_AGENT_HTTP"
         "runtime_env_agent_port=$_RP_RUNTIME_ENV" "metrics_export_port=$_RP_METRICS"
         "worker_ports=$_RP_WORKER_MIN-$_RP_WORKER_MAX" "note=$note")
    _ray_write_ports "$my_file" "${kv[@]}"
  }

  # Worker: wait (within the boot time) until the head has written its GCS address.
  _ray_node_find_head() {
    until _ray_read_ports "$head_file" && [ -n "$_PF_gcs_address" ]; do
      [ $term = 0 ] || return 0
      [ $SECONDS -lt $boot_end ] || {
        echo "[ray-node] $node: ERROR: the head ($HPO_RAY_HEAD_NODE) wrote no GCS address to $head_file in time" >&2; return 1; }
      : "$HPO_RAY_PORTS_DIR"/*    # (listing the dir makes an NFS client notice a new file at once)
      sleep 0.05
    done
    head_addr=$_PF_gcs_address head_attempt=$_PF_attempt head_block=$_PF_block
    # The head writes its address once its GCS listens, so this is normally open at once.
    # A worker that tries too early gets "connection refused" and gRPC backs off for ~1 s.
    if [ "${HPO_RAY_WORKER_WAIT_GCS:-1}" = 1 ]; then
      until timeout 1 bash -c "exec 3<>/dev/tcp/${head_addr%:*}/${head_addr##*:}" 2>/dev/null; do
        [ $term = 0 ] || return 0
        [ $SECONDS -lt $boot_end ] || { echo "[ray-node] $node: head GCS $head_addr not reachable" >&2; break; }
        sleep 0.05
      done
    fi
  }

  # Watch one attempt until the boot is over. Sets why= up (the batch script saw the
  # whole cluster join) | timeout (boot time over) | term (SIGTERM) | exited (`ray start`
  # ended; rc) | clash (a port was taken under us: clash_line) | moved (the head moved).
  _ray_node_watch_boot() {
    local logs=$tmp/session_latest/logs t_start=$SECONDS published=0 dead f files
    why="" clash_line=""
    while :; do
      [ $term = 0 ] || { why=term; return; }
      dead=0; kill -0 "$child" 2>/dev/null || dead=1
      files=(); for f in "${_RAY_DAEMON_LOGS[@]}"; do [ -f "$logs/$f" ] && files+=("$logs/$f"); done
      [ ${#files[@]} = 0 ] || clash_line=$(grep -h -m1 -E "$_RAY_CLASH_RE" "${files[@]}" 2>/dev/null)
      if [ $dead = 1 ]; then
        wait "$child"; rc=$?; child=""
        [ -n "$clash_line" ] && why=clash || why=exited
        return
      fi
      [ -n "$clash_line" ] && { why=clash; return; }
      # Head: publish the GCS address once OUR gcs_server says it listens on the port
      # (a port merely in use may be the GCS of the job that won a race). Fallback, should
      # Ray ever word that line differently: the port is in use 8 s on and nothing clashed.
      if [ $role = head ] && [ $published = 0 ]; then
        if grep -qs -E "listening on port $_RP_GCS([^0-9]|\$)" "$logs/gcs_server.out" \
           || { [ $((SECONDS - t_start)) -ge 8 ] && _ray_port_in_use "$_RP_GCS"; }; then
          _ray_node_write_ports; published=1
          echo "[ray-node] $node: GCS listens on $ip:$_RP_GCS; address written to $my_file ($(date '+%T'))"
        fi
      fi
      # Worker: the head had to move to other ports: our `ray start` talks to a dead GCS.
      if [ $role = worker ] && _ray_read_ports "$head_file" && [ "$_PF_attempt" != "$head_attempt" ]; then
        why=moved; return
      fi
      : "$HPO_RAY_PORTS_DIR"/*
      [ -e "$HPO_RAY_PORTS_DIR/up" ] && { why=up; return; }
      [ $SECONDS -lt $boot_end ] || { why=timeout; return; }
      if [ $role = head ] && [ $published = 0 ]; then sleep 0.05 & else sleep 0.25 & fi
      wait $!                                         # (returns at once on SIGTERM)
    done
  }

  # Discard a failed attempt: SIGKILL `ray start` and everything it started, at once
  # (nothing in it is worth a graceful stop, and a `ray start` still booting ignores
  # SIGTERM for seconds). Its process tree, then any daemon already orphaned: they all
  # carry this node's temp dir in their command line.
  _ray_node_end_attempt() {
    if [ -n "$child" ]; then
      # shellcheck disable=SC2046  # one pid per word
      kill -KILL "$child" $(_ray_descendants "$child") 2>/dev/null; wait "$child" 2>/dev/null; child=""
    fi
    [ -n "$killer" ] && { kill "$killer" 2>/dev/null; killer=""; }
    pkill -KILL -f -- "$(_ray_re_escape "$tmp")/session_" 2>/dev/null
    local f dst=$HPO_RAY_LOG_DIR/$node/attempt-$attempt      # keep its daemon logs: they show the clash
    mkdir -p "$dst" && for f in "${_RAY_DAEMON_LOGS[@]}"; do
      [ -f "$tmp/session_latest/logs/$f" ] && cp "$tmp/session_latest/logs/$f" "$dst/"
    done
    rm -rf "$tmp"
    [ $role = head ] && rm -f "$my_file"                # nobody may connect to it any more
  }

  while [ $term = 0 ]; do
    attempt=$((attempt + 1))
    if [ $role = worker ]; then
      _ray_node_find_head || return 1
      [ $term = 0 ] || break
      [ -n "$first" ] || first=$head_block             # start where the head got its ports
    fi
    # Probe, then start at once: the shorter the gap, the rarer a race with another job.
    block=$(_ray_pick_block "$idx" "$first") || {
      echo "[ray-node] $node: ERROR: no free ports for Ray on this node; set HPO_RAY_PORT_BASE to a free range" >&2; return 3; }
    _ray_ports "$block" "$idx"
    note=""
    [ "$attempt" -gt 1 ] && note="attempt $attempt"
    [ "$block" != "$first" ] && note="${note:+$note, }block $first in use"
    ports=(--node-manager-port="$_RP_NODE_MANAGER" --object-manager-port="$_RP_OBJECT_MANAGER"
           --min-worker-port="$_RP_WORKER_MIN" --max-worker-port="$_RP_WORKER_MAX"
           --dashboard-agent-grpc-port="$_RP_AGENT_GRPC" --dashboard-agent-listen-port="$_RP_AGENT_HTTP"
           --runtime-env-agent-port="$_RP_RUNTIME_ENV" --metrics-export-port="$_RP_METRICS")
    if [ $role = head ]; then
      ports+=(--head --port="$_RP_GCS" --dashboard-port="$_RP_DASHBOARD")
      [ $client = 1 ] && ports+=(--ray-client-server-port="$_RP_CLIENT")
    else
      ports+=(--address="$head_addr")
      _ray_node_write_ports
    fi
    echo "[ray-node] $node: attempt $attempt/$tries: ports $_RP_FIRST-$_RP_LAST (block $block, slot $((idx % 4))) are free; starting Ray on them, $(date '+%T')"
    echo "[ray-node] ${HPO_RAY_BIN:-ray} start ${args[*]} ${ports[*]} ${extra[*]}"
    mkdir -p "$tmp"
    env -u RAY_ADDRESS "$HPO_ROOT/cluster/container_exec.sh" "${HPO_RAY_BIN:-ray}" start "${args[@]}" "${ports[@]}" "${extra[@]}" &
    child=$!
    [ $term = 1 ] && _ray_node_stop   # TERM arrived before the child existed
    _ray_node_watch_boot
    case $why in
      up|timeout|term|exited) break ;;
    esac
    # clash or moved: stop this attempt; try again (bounded) on other ports
    if [ $why = clash ]; then
      v=$(grep -h -o -m1 -E "specified port is [0-9]+|resolved for '[^']*:[0-9]+" "$tmp"/session_latest/logs/* 2>/dev/null)
      v=${v%%$'\n'*}; v=${v##*[!0-9]}
      echo "[ray-node] $node: port ${v:-?} was taken between our check and Ray's start (another job starting at the" \
           "same moment?); Ray's log says: ${clash_line%%$'\n'*}" | cut -c1-400
    else
      echo "[ray-node] $node: the head moved to other ports ($_PF_gcs_address, its attempt $_PF_attempt): restarting with it"
    fi
    _ray_node_end_attempt
    if [ "$attempt" -ge "$tries" ]; then
      echo "[ray-node] $node: ERROR: giving up after $attempt attempts (HPO_RAY_PORT_TRIES=$tries)" >&2
      rc=4; break
    fi
    # after a clash: 1-8 blocks further on, at random, so that two jobs that lost the same race part ways
    [ $why = clash ] && first=$(_ray_block_after "$block" $((1 + RANDOM % 8)))
    [ $why = moved ] && first=$block
    echo "[ray-node] $node: retrying (attempt $((attempt + 1))/$tries) from block $first"
  done

  # The boot is over: now just wait for Ray to end (the teardown's SIGTERM, or Ray dying).
  if [ -n "$child" ]; then
    while :; do
      wait "$child"; rc=$?
      kill -0 "$child" 2>/dev/null || break      # still there: wait was interrupted by the trap
    done
  fi
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
