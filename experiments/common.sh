# experiments/common.sh — sourced (never run) by every experiments/<method>/run.slurm.
#
# What it gives each launcher, so the launchers only show their method:
#   * HPO_ROOT (the repository), found from $SLURM_SUBMIT_DIR under sbatch — the
#     batch script runs from a spool copy, so $0 is useless there;
#   * the tier: `cluster` inside a SLURM job, `laptop` under plain `bash`
#     (then the log is tee'd to logs/<method>/<name>-<local id>.out itself);
#   * the site hook: $HPO_SITE_SETUP or experiments/site.sh, sourced once — the ONE
#     place for `module load …` / `conda activate …` (see experiments/site.example.sh);
#   * the job markers `===== JOB <id> START/FINISH =====`, FINISH from an EXIT
#     trap, so it is printed on success, on error and on scancel (SIGTERM);
#   * hpo_on_exit CMD: cleanups (e.g. Ray teardown) run by that trap before FINISH,
#     and hpo_after_finish CMD: run after FINISH (the log → CSV parser), so the
#     job summary sees the finish time;
#   * hpo_run CMD…: CMD in the background + wait, so that SIGTERM (scancel, walltime) runs the
#     trap at once and is forwarded to CMD — a foreground CMD would hold the trap until it exits,
#     and SLURM's SIGKILL (KillWait later) would then take the FINISH line and the CSV with it;
#   * hpo_exec CMD…: hpo_run, on the host or in `apptainer exec` (cluster/container_exec.sh).
#
# Inputs: HPO_METHOD (set by the launcher before sourcing), optional HPO_PROFILE
# (tiny|workshop; default by tier), HPO_JOB_NAME (laptop job name).

HPO_METHOD=${HPO_METHOD:?set HPO_METHOD before sourcing experiments/common.sh}

# ------------------------------------------------------------------ locate repo
if [ -z "${HPO_ROOT:-}" ]; then
  if [ -n "${SLURM_JOB_ID:-}" ]; then HPO_ROOT=${SLURM_SUBMIT_DIR:-$PWD}
  else HPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); fi
fi
if [ ! -f "$HPO_ROOT/experiments/common.sh" ]; then
  echo "ERROR: cannot find the workshop repository at '$HPO_ROOT'." >&2
  echo "       Submit from the repository root (cd hpo-workshop && sbatch experiments/$HPO_METHOD/run.slurm) or set HPO_ROOT." >&2
  exit 2
fi
export HPO_ROOT HPO_METHOD
cd "$HPO_ROOT"

# ------------------------------------------------------------------ tier + ids
if [ -n "${SLURM_JOB_ID:-}" ]; then
  HPO_TIER=${HPO_TIER:-cluster}
  HPO_JOB_ID=$SLURM_JOB_ID
  HPO_JOB_NAME=${SLURM_JOB_NAME:-hpo-$HPO_METHOD}
  HPO_NODES=${SLURM_JOB_NUM_NODES:-1}
  # SLURM_GPUS_ON_NODE is set for --gres=gpu:N / --gpus-per-node; CPUs from the allocation
  HPO_GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-0}
  HPO_CPUS_PER_NODE=${SLURM_CPUS_ON_NODE:-1}
  HPO_LOG=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *StdOut=//p')
  [ -n "$HPO_LOG" ] || HPO_LOG=$HPO_ROOT/logs/$HPO_METHOD/$HPO_JOB_NAME-$HPO_JOB_ID.out
else
  HPO_TIER=${HPO_TIER:-laptop}
  HPO_JOB_ID=${HPO_JOB_ID:-local-$(date +%Y%m%d-%H%M%S)-$$}
  HPO_JOB_NAME=${HPO_JOB_NAME:-hpo-$HPO_METHOD}
  HPO_NODES=1
  HPO_GPUS_PER_NODE=${HPO_GPUS_PER_NODE:-0}          # laptop tier trains on the CPU
  HPO_CPUS_PER_NODE=${HPO_CPUS_PER_NODE:-$(nproc)}
  HPO_LOG_ROOT=${HPO_LOG_ROOT:-$HPO_ROOT/logs}     # tests point this at a temporary directory
  mkdir -p "$HPO_LOG_ROOT/$HPO_METHOD"
  HPO_LOG=$HPO_LOG_ROOT/$HPO_METHOD/$HPO_JOB_NAME-$HPO_JOB_ID.out
  # Same log file layout as under sbatch: everything from here on goes to the log too.
  exec > >(tee -a "$HPO_LOG") 2>&1
fi
# `--profile X` and `--requeue` among the launcher's options (a sourced file sees the caller's "$@").
HPO_REQUEUE=${HPO_REQUEUE:-0}
_prev=""; for _a in "$@"; do
  [ "$_prev" = --profile ] && HPO_PROFILE=$_a
  [ "$_a" = --requeue ] && HPO_REQUEUE=1
  _prev=$_a
done
# A job that requeued itself (--requeue) restarts under the same id: it continues its own search.
if [ "$HPO_REQUEUE" = 1 ] && [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  export HPO_RESUME=$HPO_JOB_ID
fi
# Can the GPUs of this job compute? The practice cluster's (practice/local_slurm.sh) are emulated:
# scheduled like real ones, but no driver behind them. Decided once here; the launchers and
# drivers read HPO_CUDA (1/0) instead of probing again.
if command -v nvidia-smi >/dev/null 2>&1; then HPO_CUDA=1; else HPO_CUDA=0; fi
export HPO_CUDA
_profile_note=""
case ${HPO_PROFILE:-} in
  "") if [ "$HPO_TIER" = laptop ]; then HPO_PROFILE=tiny
      elif [ "$HPO_CUDA" = 1 ] || [ "$HPO_GPUS_PER_NODE" = 0 ]; then HPO_PROFILE=workshop
      else  # GPUs allocated but no driver: the practice cluster's emulated GPUs (practice/local_slurm.sh)
        HPO_PROFILE=tiny
        _profile_note="no nvidia-smi on this node (emulated GPUs?): tiny profile; set HPO_PROFILE=workshop to override"
      fi ;;
  tiny|workshop) ;;
  *) echo "ERROR: HPO_PROFILE must be tiny or workshop, not '$HPO_PROFILE'" >&2; exit 2 ;;
esac
HPO_GPUS=$((HPO_GPUS_PER_NODE * HPO_NODES))
HPO_CPUS=$((HPO_CPUS_PER_NODE * HPO_NODES))
# Per-job results on the shared filesystem under a fixed name, beside the log (resume finds them here).
HPO_JOB_DIR=${HPO_LOG%.out}
HPO_CSV=${HPO_LOG%.out}.csv
mkdir -p "$HPO_JOB_DIR"
export HPO_TIER HPO_JOB_ID HPO_JOB_NAME HPO_NODES HPO_GPUS_PER_NODE HPO_CPUS_PER_NODE HPO_GPUS HPO_CPUS \
       HPO_PROFILE HPO_LOG HPO_JOB_DIR HPO_CSV
# Leftover marker, unique per job (a job id can come back): every process this job starts inherits
# it — Ray head/workers of the srun steps and the `ray::` workers they fork, the driver, trials and
# their children, torchrun ranks, Ray Train workers — so whatever still runs after the job is found
# by its environment, not its command line (tests/leftovers.py scans /proc/*/environ for it).
export HPO_JOB_TAG=$HPO_JOB_ID-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')

# ------------------------------------------------------------------ site setup
# The one overridable place for `module load` / `conda activate`. Then the
# project's .venv if there is one and no other Python environment is active.
HPO_SITE_SETUP=${HPO_SITE_SETUP:-$HPO_ROOT/experiments/site.sh}
if [ -f "$HPO_SITE_SETUP" ]; then
  echo "[job] site setup: sourcing $HPO_SITE_SETUP"
  # shellcheck disable=SC1090
  source "$HPO_SITE_SETUP"
elif [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && [ -f "$HPO_ROOT/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  source "$HPO_ROOT/.venv/bin/activate"
fi
# The hpo package: installed into the venv by `make venv` (pip install -e .); fail early and clearly if not.
if [ -z "${APPTAINER_IMAGE:-}" ] && ! python -c 'import hpo' 2>/dev/null; then
  echo "ERROR: the hpo package is not importable by $(command -v python || echo python): run \`make venv\` in $HPO_ROOT" \
       "(or \`pip install -e .\` in your site environment, see experiments/site.example.sh)" >&2
  exit 2
fi
# DeepSpeed JIT-compiles its CPU/GPU kernels once; keep them with the project, not in ~.
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HPO_ROOT/.cache/torch_extensions}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

HPO_CHILD=""
hpo_run() {
  "$@" &
  HPO_CHILD=$!
  wait "$HPO_CHILD"
  local rc=$?
  HPO_CHILD=""
  return $rc
}
hpo_exec() { hpo_run "$HPO_ROOT/cluster/container_exec.sh" "$@"; }
# Forward a signal to the running command, give it HPO_TERM_WAIT_S (default 8, below SLURM's
# KillWait) to stop, then leave through the EXIT trap (cleanups, FINISH, parser).
hpo_stop_child() {
  local sig=$1 i
  [ -n "$HPO_CHILD" ] || return 0
  kill -"$sig" "$HPO_CHILD" 2>/dev/null
  for ((i = 0; i < ${HPO_TERM_WAIT_S:-8} * 10; i++)); do kill -0 "$HPO_CHILD" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$HPO_CHILD" 2>/dev/null
}

# ------------------------------------------------------------------ exit trap
HPO_EXIT_HOOKS=()
HPO_FINAL_HOOKS=()
hpo_on_exit() { HPO_EXIT_HOOKS+=("$*"); }
hpo_after_finish() { HPO_FINAL_HOOKS+=("$*"); }
HPO_T0=$(date +%s.%N)
hpo_finish() {
  local rc=$? i
  trap - EXIT TERM INT USR1
  for ((i = ${#HPO_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do eval "${HPO_EXIT_HOOKS[i]}" || true; done
  LC_ALL=C printf '===== JOB %s FINISH : %s (rc=%d, elapsed=%.1fs) =====\n' "$HPO_JOB_ID" "$(date '+%F %T %Z')" "$rc" \
    "$(awk -v a="$HPO_T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')"
  # laptop tier: give tee a moment to write FINISH to the log before the parser reads it
  [ "$HPO_TIER" = laptop ] && sleep 0.3
  for i in "${HPO_FINAL_HOOKS[@]}"; do eval "$i" || true; done
  exit "$rc"
}
# Walltime or preemption: every run.slurm asks SLURM for USR1 a few minutes before the end
# (#SBATCH --signal=B:USR1@300; by hand: scancel --batch --signal=USR1 <job id>). The search then
# stops cleanly — trials keep their last checkpoints, the CSV is written with `incomplete` rows,
# and the log's last lines print the command that resumes it. With --requeue the job requeues
# itself instead and, restarted under the same id, continues where it stopped.
hpo_on_usr1() {
  local i rc=0
  trap - USR1
  echo "[job] received USR1 (walltime or preemption warning): stopping the search cleanly"
  if [ -n "$HPO_CHILD" ]; then
    kill -USR1 "$HPO_CHILD" 2>/dev/null
    for ((i = 0; i < ${HPO_STOP_WAIT_S:-240} * 10; i++)); do kill -0 "$HPO_CHILD" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$HPO_CHILD" 2>/dev/null; then
      echo "[job] the search did not stop within ${HPO_STOP_WAIT_S:-240} s: killing it"
      kill -KILL "$HPO_CHILD" 2>/dev/null
    fi
    wait "$HPO_CHILD" 2>/dev/null; rc=$?
  fi
  if [ "$HPO_REQUEUE" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "[job] --requeue: requeueing job $SLURM_JOB_ID; it restarts under the same id and resumes its search"
    scontrol requeue "$SLURM_JOB_ID" || echo "[job] scontrol requeue failed: resume by hand (command above)"
  fi
  exit "$rc"
}
trap hpo_finish EXIT
trap hpo_on_usr1 USR1
trap 'echo "[job] received SIGTERM (scancel or walltime): stopping"; hpo_stop_child TERM; exit 143' TERM
trap 'echo "[job] interrupted"; hpo_stop_child INT; exit 130' INT

echo "===== JOB $HPO_JOB_ID START : $(date '+%F %T %Z') ====="
if [ "$HPO_TIER" = laptop ]; then
  echo "[job] LAPTOP TIER: no SLURM job here, running the same launcher locally on $(nproc) CPU cores"
  echo "[job]   profile=$HPO_PROFILE (tiny BLOOM + bundled SQuAD-format set, built offline on first use)"
fi
[ -n "$_profile_note" ] && echo "[job] $_profile_note"
echo "[job] method=$HPO_METHOD job_id=$HPO_JOB_ID job_name=$HPO_JOB_NAME tier=$HPO_TIER profile=$HPO_PROFILE nodes=$HPO_NODES gpus=$HPO_GPUS cpus=$HPO_CPUS host=$(hostname -s) log=$HPO_LOG"
