#!/usr/bin/env python
"""One HPO trial: fine-tune a causal LM on SQuAD as generative QA and score it.

Run (laptop tier, CPU, offline; builds the tiny model and data on first use):
    python scripts/train.py --profile tiny --learning-rate 2e-3 --output-dir outputs/demo
Run (cluster tier, one node, DeepSpeed ZeRO-2 over the job's GPUs):
    torchrun --standalone --nproc_per_node=2 scripts/train.py --profile workshop \
        --learning-rate 2e-4 --batch-size 1 --deepspeed deepspeed_configs/zero2.json --output-dir outputs/run1
`python scripts/train.py --help` lists every option; options left out come from --profile.
Writes OUTPUT_DIR/metrics.json and prints one `[eval]` line per evaluation and a
final `[result]` line (rank 0 only). Exit code 2 on a bad option, model or dataset.
The code lives in hpo/trial.py, which Ray Tune trials call in-process.
"""
import sys

try:
    from hpo.trial import main
except ImportError as e:
    sys.exit(f"train.py: error: the hpo package is not importable ({e}): run `make venv` "
             "(or `pip install -e .`) in the repository root")

if __name__ == "__main__":
    sys.exit(main())
