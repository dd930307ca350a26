#!/usr/bin/env bash
# bench/bench_boot.sh [K] — how long does a 2-node Ray cluster take to boot and to stop inside a SLURM job?
#
#   sudo practice/local_slurm.sh up          # or run on a real cluster's login node
#   bench/bench_boot.sh 5                   # K sequential jobs (default 5)
#   BENCH_SBATCH_ARGS="-p gpu --gres=gpu:4" bench/bench_boot.sh 3   # real cluster: your partition/GPUs
#
# Each job sources experiments/common.sh + cluster/ray_cluster.sh, calls
# ray_cluster_up, connects a driver (hpo.cluster.connect_ray) and exits, so the Ray
# teardown runs at once. Per job it prints, from the job log:
#   boot      job start (common.sh) -> every node and GPU joined     (goal <= 8 s)
#   up        time spent inside ray_cluster_up
#   connect   the driver's ray.init(address=...)
#   teardown  scancel --signal=TERM of the Ray steps -> all gone      (goal <= 5 s)
#   wall      sbatch -> job gone from squeue
# and the medians. Job logs (and each job's HPO_JOB_DIR beside them) go to a temp dir, removed at the end.
# Boot time is CPU-bound where the "nodes" share a few cores (practice/local_slurm.sh):
# the load average is printed so that noisy numbers can be recognised.
set -euo pipefail
K=${1:-5}
[[ $K =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [K]   (K = number of jobs, a positive whole number; got '$K')" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for b in sbatch squeue scontrol; do
  command -v "$b" >/dev/null || { echo "$0: '$b' not found: run on a SLURM login node or start practice/local_slurm.sh up" >&2; exit 1; }
done
timeout 5 scontrol ping >/dev/null 2>&1 || { echo "$0: no SLURM controller answers (scontrol ping): start it with sudo practice/local_slurm.sh up" >&2; exit 1; }
# the jobs need the project's python (ray) on PATH; sbatch passes this environment on
if [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then export PATH=$ROOT/.venv/bin:$PATH; fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-boot.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# shellcheck disable=SC2206
EXTRA=(${BENCH_SBATCH_ARGS:---gres=gpu:2})

cat > "$TMP/job.sbatch" <<'EOF'
#!/bin/bash
#SBATCH --job-name=hpo-bench-boot
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=00:05:00
set -euo pipefail
HPO_METHOD=bench
source "$SLURM_SUBMIT_DIR/experiments/common.sh"
source "$HPO_ROOT/cluster/ray_cluster.sh"
ray_cluster_up
hpo_exec python -c 'from hpo.cluster import connect_ray; connect_ray()'
EOF

echo "# $K sequential 2-node jobs; $(uptime | sed 's/.*load/load/')"
printf '%-8s %8s %8s %8s %9s %8s\n' job boot_s up_s conn_s teardown wall_s
: > "$TMP/rows"
for _ in $(seq 1 "$K"); do
  t0=$(date +%s.%N)
  jid=$(cd "$ROOT" && sbatch --parsable --output="$TMP/%j.out" "${EXTRA[@]}" "$TMP/job.sbatch")
  jid=${jid%%;*}
  for _ in $(seq 1 720); do [ -z "$(squeue -h -j "$jid" 2>/dev/null)" ] && break; sleep 0.25; done  # <= 3 min
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  out=$TMP/$jid.out
  state=$(scontrol show job "$jid" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' || true)
  if [ "$state" != JobState=COMPLETED ]; then
    echo "job $jid did not complete ($state); its log:" >&2; cat "$out" >&2; exit 1
  fi
  boot=$(sed -n 's/.*\[ray\] cluster up:.* boot \([0-9.]*\) s after job start (ray_cluster_up \([0-9.]*\) s).*/\1 \2/p' "$out")
  conn=$(sed -n 's/.*\[ray\] connected to .*(ray.init \([0-9.]*\)s.*/\1/p' "$out")
  down=$(sed -n 's/.*\[ray\] teardown: .* stopped in \([0-9.]*\) s.*/\1/p' "$out")
  read -r b u <<< "$boot"
  printf '%-8s %8s %8s %8s %9s %8s\n' "$jid" "$b" "$u" "$conn" "$down" "$wall" | tee -a "$TMP/rows"
done
median() { sort -n | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-8s %8s %8s %8s %9s %8s\n' median \
  "$(awk '{print $2}' "$TMP/rows" | median)" "$(awk '{print $3}' "$TMP/rows" | median)" \
  "$(awk '{print $4}' "$TMP/rows" | median)" "$(awk '{print $5}' "$TMP/rows" | median)" \
  "$(awk '{print $6}' "$TMP/rows" | median)"
echo "# goals: boot <= 8 s, teardown <= 5 s; $(uptime | sed 's/.*load/load/')"
