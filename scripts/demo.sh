#!/usr/bin/env bash
# scripts/demo.sh — the laptop tier end to end (what `make demo` runs): the four methods on the
# tiny BLOOM and the bundled SQuAD-format set, on this machine's CPUs, then the best of each.
#   bash scripts/demo.sh            # ~8 min on 2 cores; each method is its own "job" and log
#   METHODS="asha pbt" bash scripts/demo.sh
#   HPO_LOG_ROOT=/tmp/x HPO_DEMO_ID=my-id bash scripts/demo.sh   # elsewhere, under a chosen id (make reference)
set -uo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || { [ -f .venv/bin/activate ] && source .venv/bin/activate; }
id=${HPO_DEMO_ID:-local-demo-$(date +%Y%m%d-%H%M%S)}
logs=${HPO_LOG_ROOT:-logs}
csvs=()
for m in ${METHODS:-manual asha pbt bayesopt}; do
  echo "=================== demo: $m (log: $logs/$m/hpo-$m-$id.out) ==================="
  HPO_JOB_ID=$id bash "experiments/$m/run.slurm" || echo "[demo] $m failed (exit $?): see $logs/$m/hpo-$m-$id.out"
  [ -f "$logs/$m/hpo-$m-$id.csv" ] && csvs+=("$logs/$m/hpo-$m-$id.csv")
done
[ ${#csvs[@]} -gt 0 ] || { echo "[demo] no method produced a CSV" >&2; exit 1; }
echo "=================== demo: best of each method ==================="
python scripts/compare.py "${csvs[@]}" --out-dir "$logs/compare/$id"
