#!/usr/bin/env bash
# bench/gpu_check.sh [OUT_DIR] — the GPU checks in one short script (a lent GPU machine, a cluster node):
#   1. the BLOOM-560M throughput/MFU benchmark (bench/bench_trial.py --gpu-only)
#   2. the tiny trial on the GPU through scripts/train.py (auto precision -> bf16/fp16, left-padded generation)
#   3. every test marked `gpu` (SDPA + fused GeLU in bf16 against eager, liger-kernel's fused loss when
#      installed, the trial on the GPU)
#   4. if deepspeed is installed: the tiny trial under torchrun with ZeRO-2 and ZeRO-3 on one GPU
#      (bf16 from "auto", left-padded generation with synced_gpus under ZeRO-3, save_model gathering)
#   5. trials per GPU-hour with 1, 2 and 4 trials sharing the GPU (bench/bench_fractional.py; offline:
#      BLOOM-560M's architecture with random weights, the bundled questions)
# Needs torch with CUDA, transformers, accelerate, tokenizers, torchmetrics, safetensors, pytest
# (pip install -e .[gpu] adds liger-kernel). Each figure lands in OUT_DIR as JSON, with the GPU named.
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
$PY -m pytest -q -rs -m gpu tests/test_trial.py tests/test_attention.py tests/test_loss.py -p no:cacheprovider || rc=1
if $PY -c "import deepspeed" 2>/dev/null; then
  for z in zero2 zero3; do
    echo "== 4. DeepSpeed $z on one GPU"
    torchrun=$(command -v torchrun || echo "$PY -m torch.distributed.run")
    $torchrun --standalone --nproc_per_node=1 scripts/train.py --profile tiny --epochs 2 \
      --deepspeed "deepspeed_configs/$z.json" --save-model --output-dir "/tmp/gpu-$z" --trial-id "gpu-$z" 2>&1 \
      | grep -E "^\[(trial|eval)\]|Error|error" | cut -c1-300 || rc=1
    [ -f "/tmp/gpu-$z/metrics.json" ] && [ -f "/tmp/gpu-$z/model/config.json" ] \
      && cp "/tmp/gpu-$z/metrics.json" "$out/deepspeed_${z}_metrics.json" || { echo "$z: no metrics/model"; rc=1; }
  done
else
  echo "== 4. skipped: deepspeed not installed"
fi
echo "== 5. several trials per GPU"
$PY bench/bench_fractional.py --model rehearsal --dataset tiny --trials-per-gpu "${BENCH_TRIALS_PER_GPU:-1,2,4}" \
  --timeout 600 --out "$out/fractional.json" || rc=1
exit $rc
