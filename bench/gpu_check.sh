#!/usr/bin/env bash
# bench/gpu_check.sh [OUT_DIR] — the GPU checks in one short script (a lent GPU machine, a cluster node):
#   1. the BLOOM-560M throughput/MFU benchmark (bench/bench_trial.py --gpu-only)
#   2. the tiny trial on the GPU through scripts/train.py (auto precision -> bf16/fp16, left-padded generation)
#   3. the tests marked `gpu`
# Needs torch with CUDA, transformers, accelerate, tokenizers, torchmetrics, safetensors, pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu-check}}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
rc=0
echo "== 1. BLOOM-560M throughput"
$PY bench/bench_trial.py --gpu-only --batch-sizes "${BENCH_BATCH_SIZES:-1,4,8,16}" --seq-len 512 --steps 10 \
  --json "$out/bench_bloom560m.json" || rc=1
echo "== 2. tiny trial on the GPU"
$PY scripts/train.py --profile tiny --epochs 3 --output-dir /tmp/gpu-tiny --trial-id gpu-tiny 2>&1 \
  | grep -E "^\[(trial|eval|result)\]" | cut -c1-400 || rc=1
[ -f /tmp/gpu-tiny/metrics.json ] && cp /tmp/gpu-tiny/metrics.json "$out/tiny_gpu_metrics.json" || rc=1
echo "== 3. tests marked gpu"
$PY -m pytest -q -m gpu tests/test_trial.py -p no:cacheprovider || rc=1
exit $rc
