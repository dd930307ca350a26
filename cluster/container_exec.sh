#!/usr/bin/env bash
# container_exec.sh CMD [ARGS...] — run CMD on the host, or inside `apptainer exec`
# when APPTAINER_IMAGE is set. Every step of every launcher goes through here
# (the batch step's driver, each `srun` Ray node, each torchrun of the grid), so
# "in a container or not" is decided in exactly one place.
#
#   APPTAINER_IMAGE=/path/img.sif sbatch experiments/asha/run.slurm
#
# Environment:
#   APPTAINER_IMAGE   image (.sif or sandbox dir); unset or empty = host environment
#   APPTAINER_BIN     the runtime (default: apptainer; `singularity` also works)
#   APPTAINER_BINDS   extra comma-separated binds, e.g. /scratch,/datasets:/data
#   APPTAINER_NV      --nv passes the host's NVIDIA driver in (default on; set 0 on CPU nodes)
set -euo pipefail
[ $# -gt 0 ] || { echo "container_exec.sh: no command given" >&2; exit 2; }
if [ -z "${APPTAINER_IMAGE:-}" ]; then
  exec "$@"
fi
bin=${APPTAINER_BIN:-apptainer}
command -v "$bin" >/dev/null 2>&1 || {
  echo "container_exec.sh: APPTAINER_IMAGE=$APPTAINER_IMAGE is set but '$bin' is not on PATH (module load apptainer?)" >&2; exit 2; }
case $APPTAINER_IMAGE in
  docker://*|oras://*|library://*) ;;                 # remote images are pulled by apptainer itself
  *) [ -e "$APPTAINER_IMAGE" ] || { echo "container_exec.sh: image not found: $APPTAINER_IMAGE" >&2; exit 2; } ;;
esac
root=${HPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# Bind what a trial reads and writes: the project (code, logs, results), the HF
# cache (models/datasets), the kernel cache, and the per-job Ray temp dirs.
binds=("$root")
for d in "${HF_HOME:-}" "${TORCH_EXTENSIONS_DIR:-}" "${HPO_RAY_TMP_ROOT:-/tmp}"; do
  [ -n "$d" ] && [ -d "$d" ] && binds+=("$d")
done
IFS=, read -r -a extra <<< "${APPTAINER_BINDS:-}"
binds+=("${extra[@]}")
bind_arg=$(IFS=,; echo "${binds[*]}")
nv=(); [ "${APPTAINER_NV:-1}" = 1 ] && nv=(--nv)
# The image holds the Python packages (requirements.txt) but not this project: on the host it is
# installed into the venv (`pip install -e .`); in the container the bound checkout goes on
# PYTHONPATH, which is the container's equivalent of that install.
exec "$bin" exec "${nv[@]}" --bind "$bind_arg" --env "PYTHONPATH=$root" --pwd "$PWD" "$APPTAINER_IMAGE" "$@"
