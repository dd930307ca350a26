"""One fine-tuning trial: a causal LM on SQuAD as generative QA, with the HF Trainer (+ DeepSpeed).

Run:  python scripts/train.py --profile tiny --lr 2e-3            # the CLI around `run_trial`
      torchrun --standalone --nproc_per_node=2 scripts/train.py --profile workshop \
               --deepspeed deepspeed_configs/zero2.json
      from hpo.trial import TrialConfig, run_trial                # in-process (Ray Tune trials)
      run_trial(TrialConfig(profile="tiny", learning_rate=2e-3), report=my_hook)

Every method of the workshop runs this, so it is written once and tested:
  * data, prompt and labels: hpo.data (labels only on answer + EOS);
  * after each evaluation (every epoch): eval_loss from the Trainer, then EM/F1 from
    greedy generation with left padding (hpo.metrics), one `[eval]` line in the log
    (rank 0), and `report(metrics, save)` — the hook Ray Tune trials use; `save(dir)`
    writes a checkpoint (weights + trial_state.json) that `resume_from=` loads;
  * precision: bf16 where the GPU supports it, fp16 on V100-class GPUs, fp32 on CPU;
  * DeepSpeed: the config's "auto" values are filled by the Trainer from these
    arguments, and the optimizer is HF's AdamW built from them (see
    deepspeed_configs/README.md), so --lr/--weight-decay are what the optimizer uses —
    its param groups are printed at the start of training and kept in metrics.json;
  * output: <output_dir>/metrics.json and a `[result]` line with the same JSON (rank 0 only).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from hpo import logfmt
from hpo.config import ConfigError, TrialConfig, trial_config_from, trial_parser
from hpo.data import DataError, looks_like_path

ReportFn = Callable[[dict, Callable[[str], None]], None]


# ----------------------------------------------------------------------------- helpers
def resolve_model_and_data(cfg: TrialConfig) -> tuple[str, str]:
    from hpo import tiny
    model = str(tiny.ensure_tiny_model()) if cfg.model == "tiny" else cfg.model
    dataset = str(tiny.ensure_tiny_data()) if cfg.dataset == "tiny" else cfg.dataset
    return model, dataset


def load_model_and_tokenizer(model_id: str, weights_from: str | None = None):
    """Tokenizer from model_id; weights from weights_from (a checkpoint) or model_id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if looks_like_path(model_id) and not Path(model_id).expanduser().is_dir():
        raise DataError(f"model directory not found: {model_id}\n  give a directory written by "
                        "save_pretrained (config.json + weights + tokenizer files) or a hub id such as "
                        "bigscience/bloom-560m")
    if Path(model_id).expanduser().is_dir() and not (Path(model_id).expanduser() / "config.json").exists():
        raise DataError(f"{model_id}: not a model directory (no config.json); expected what "
                        "save_pretrained writes")
    try:
        tok = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(weights_from or model_id)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise DataError(
            f"could not load model '{model_id}'{' (HF_HUB_OFFLINE=1: cache only)' if offline else ''}: "
            f"{str(e).splitlines()[0][:300]}\n  looked in the HF cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}){'' if offline else ' and on the hub'}.\n"
            "  fix: pre-download on a login node with internet "
            "(`huggingface-cli download bigscience/bloom-560m`, same HF_HOME) or pass --model DIR") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token          # BLOOM has <pad>; other models may not
    if tok.eos_token_id is None:
        raise DataError(f"{model_id}: tokenizer has no EOS token; answers must end with one")
    return model, tok


def choose_precision(requested: str) -> str:
    import torch
    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ConfigError(f"--precision {requested} needs a CUDA GPU; this run is on the CPU (use fp32 or auto)")
        return requested
    if not torch.cuda.is_available():
        return "fp32"
    # V100 (compute capability 7.x) has no bf16: use fp16 with loss scaling there.
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_single_process_env() -> None:
    """DeepSpeed needs RANK/WORLD_SIZE; without torchrun (plain python, a Ray trial) we are rank 0 of 1."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))


def device_description() -> tuple[str, int]:
    import torch
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}", world
    return "cpu", world


def weights_fingerprint(model) -> float:
    """A cheap number that changes with any weight: lets tests prove *whose* weights a trial loaded."""
    import torch
    with torch.no_grad():
        return round(float(sum(p.detach().float().abs().sum() for p in model.parameters())), 4)


def _log(msg: str, main: bool = True) -> None:
    if main:
        print(f"[trial] {msg}", flush=True)


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the trial
def run_trial(cfg: TrialConfig, report: ReportFn | None = None) -> dict:
    """Train and evaluate once; returns the metrics.json record (on every rank)."""
    cfg = cfg.resolved()
    import torch
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hpo.data import PadCollator, encode_split, load_squad
    from hpo.metrics import generate_answers, squad_scores

    transformers.logging.set_verbosity_warning()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deepspeed:
        ensure_single_process_env()
    rank = int(os.environ.get("RANK", "0"))
    main = rank == 0
    transformers.set_seed(cfg.seed)
    out_dir = Path(cfg.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    # -- model, data -----------------------------------------------------------------------------
    model_id, dataset = resolve_model_and_data(cfg)
    state = {"epochs_done": 0.0, "global_step": 0}
    if cfg.resume_from:
        state_file = Path(cfg.resume_from) / "trial_state.json"
        if not state_file.is_file():
            raise DataError(f"resume_from={cfg.resume_from}: no trial_state.json (not a trial checkpoint)")
        state = json.loads(state_file.read_text())
        _log(f"resuming from {cfg.resume_from}: {state['epochs_done']:g} epochs done "
             f"(weights of trial {state.get('trial_id', '?')})", main)
    model, tok = load_model_and_tokenizer(model_id, weights_from=cfg.resume_from)
    splits = load_squad(dataset, cfg.train_samples, cfg.eval_samples, cfg.seed, cfg.keep_unanswerable)
    train = encode_split(tok, splits.train, cfg.max_length)
    val = encode_split(tok, splits.validation, cfg.max_length)
    _log(f"data {splits.source}: train {len(train.features)} examples, eval {len(val.features)}; "
         f"dropped (answer cannot fit in {cfg.max_length} tokens): train {train.dropped}, eval {val.dropped}; "
         f"context truncated (answer kept): train {train.truncated}, eval {val.truncated}; "
         f"skipped unanswerable (SQuAD v2): train {splits.skipped_unanswerable.get('train', 0)}, "
         f"eval {splits.skipped_unanswerable.get('validation', 0)}", main)
    if not train.features or not val.features:
        raise DataError(f"no examples fit in --max-length {cfg.max_length}; raise it")

    precision = choose_precision(cfg.precision)
    remaining = cfg.epochs - state["epochs_done"]
    if remaining <= 0:
        raise ConfigError(f"--epochs {cfg.epochs:g}: the checkpoint already trained {state['epochs_done']:g} epochs")
    hparams = {"learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size, "weight_decay": cfg.weight_decay}

    args = TrainingArguments(
        output_dir=str(out_dir / "hf"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 8),
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        num_train_epochs=remaining,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,     # transformers 5: a float in [0, 1) is a ratio of the steps
        eval_strategy="epoch",            # one evaluation (and one Tune report) per epoch
        save_strategy="no",               # checkpoints are taken by the report hook when asked
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        deepspeed=cfg.deepspeed,
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    is_zero3 = bool(cfg.deepspeed) and json.loads(Path(cfg.deepspeed).read_text()) \
        .get("zero_optimization", {}).get("stage") == 3
    history: list[dict] = []
    optimizer_groups: list[dict] = []
    timing = {"eval_s": 0.0, "train_start": None}
    loaded_fingerprint = weights_fingerprint(model)

    class LogOptimizer(TrainerCallback):
        """Print what the optimizer really holds (lr and weight decay per parameter group)."""
        def on_train_begin(self, args, state_, control, optimizer=None, **kw):
            opt = getattr(optimizer, "optimizer", optimizer)      # DeepSpeed wraps the torch optimizer
            groups = getattr(opt, "param_groups", None) or getattr(optimizer, "param_groups", [])
            timing["train_start"] = time.perf_counter()
            for g in groups:
                optimizer_groups.append({"lr": float(g["lr"]), "weight_decay": float(g["weight_decay"]),
                                         "tensors": len(g["params"])})
            _log(f"optimizer {type(opt).__name__}: " + "; ".join(
                f"group {i}: lr={g['lr']:.6g} weight_decay={g['weight_decay']:g} tensors={g['tensors']}"
                for i, g in enumerate(optimizer_groups)), main)

    def save_checkpoint(directory: str) -> None:
        """Weights + trial_state.json; collective under ZeRO-3, so every rank must call it."""
        trainer.save_model(directory)
        if trainer.is_world_process_zero():
            _atomic_write_json(Path(directory) / "trial_state.json", {
                "epochs_done": history[-1]["epoch"] if history else state["epochs_done"],
                "global_step": state["global_step"] + trainer.state.global_step,
                "trial_id": cfg.trial_id, "hparams": hparams,
                "eval_loss": history[-1]["eval_loss"] if history else None,
                "weights_fingerprint": weights_fingerprint(trainer.model)})

    class QATrainer(Trainer):
        def evaluate(self, *a, **kw):
            t0 = time.perf_counter()
            metrics = super().evaluate(*a, **kw)                   # eval_loss over answer tokens
            preds = generate_answers(self.model, tok, val.prompts, batch_size=32,
                                     max_new_tokens=cfg.max_new_tokens, synced_gpus=is_zero3)
            scores = squad_scores(preds, val.references)
            timing["eval_s"] += time.perf_counter() - t0
            epoch = state["epochs_done"] + (self.state.epoch or 0.0)
            trained_s = time.perf_counter() - (timing["train_start"] or t0) - timing["eval_s"]
            rec = {"epoch": round(epoch, 4), "step": state["global_step"] + self.state.global_step,
                   "eval_loss": float(metrics["eval_loss"]), **scores,
                   # running throughput: training tokens so far / training time so far (evals excluded)
                   "tokens_per_s": round(train.tokens * (self.state.epoch or 0.0) / max(trained_s, 1e-9), 1)}
            if cfg.resume_from:      # whose weights this trial started from (PBT lineage check)
                rec["loaded_weights_fingerprint"] = loaded_fingerprint
            history.append(rec)
            metrics.update(eval_exact_match=scores["exact_match"], eval_f1=scores["f1"])
            if self.is_world_process_zero():
                print(logfmt.eval_line(cfg.trial_id, epoch, rec["step"], rec, hparams), flush=True)
                if len(history) == 1:
                    _log("sample answers: " + " | ".join(
                        f"{p!r} (ref {r[0]!r})" for p, r in zip(preds[:3], val.references[:3])))
            if report is not None:
                report({**rec, **hparams, "trial_id": cfg.trial_id}, save_checkpoint)
            return metrics

    trainer = QATrainer(model=model, args=args, train_dataset=train.features, eval_dataset=val.features,
                        data_collator=PadCollator(tok.pad_token_id), callbacks=[LogOptimizer()])
    device, n_dev = device_description()
    _log(f"{cfg.trial_id}: model={model_id} learning_rate={cfg.learning_rate:g} "
         f"batch_size={cfg.batch_size}x{n_dev} weight_decay={cfg.weight_decay:g} epochs={remaining:g} seed={cfg.seed} precision={precision} "
         f"device={device}x{n_dev} deepspeed={cfg.deepspeed or 'off'}", main)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    train_runtime = float(out.metrics.get("train_runtime", wall))
    # tokens/s over pure training time (the loop minus the evaluations), all devices together.
    tokens_per_s = train.tokens * remaining / max(train_runtime - timing["eval_s"], 1e-9)
    last = history[-1] if history else {}
    record = {
        "trial_id": cfg.trial_id, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
        "weight_decay": cfg.weight_decay, "seed": cfg.seed, "epochs": last.get("epoch", cfg.epochs),
        "eval_loss": last.get("eval_loss"), "exact_match": last.get("exact_match"), "f1": last.get("f1"),
        "train_runtime_s": round(train_runtime, 3), "eval_runtime_s": round(timing["eval_s"], 3),
        "tokens_per_s": round(tokens_per_s, 1), "device": device, "num_devices": n_dev,
        "precision": precision, "deepspeed": cfg.deepspeed, "model": model_id, "dataset": splits.source,
        "train_examples": len(train.features), "eval_examples": len(val.features),
        "dropped_too_long": {"train": train.dropped, "eval": val.dropped},
        "skipped_unanswerable": splits.skipped_unanswerable,
        "optimizer_param_groups": optimizer_groups, "history": history,
        "resumed_from": cfg.resume_from, "resumed_from_trial": state.get("trial_id"),
        "loaded_weights_fingerprint": loaded_fingerprint,
        "checkpoint_weights_fingerprint": state.get("weights_fingerprint"), **cfg.extra,
    }
    if cfg.save_model:
        trainer.save_model(str(out_dir / "model"))
        if main:
            tok.save_pretrained(str(out_dir / "model"))
    if main:
        _atomic_write_json(out_dir / "metrics.json", record)
        print(logfmt.result_line(record), flush=True)
    return record


# ----------------------------------------------------------------------------- CLI
def file_reporter(report_dir: str) -> ReportFn:
    """A report hook for a trial in a child process: checkpoint + one JSON line per evaluation."""
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)

    def report(metrics: dict, save) -> None:
        ck = d / f"ckpt-{metrics['step']}"
        save(str(ck))                                    # collective under ZeRO-3: every rank calls it
        if int(os.environ.get("RANK", "0")) == 0:
            with open(d / "reports.jsonl", "a") as f:   # the line appears only after the checkpoint is whole
                f.write(json.dumps({**metrics, "checkpoint": str(ck)}) + "\n")
    return report


def main(argv=None) -> int:
    args = trial_parser().parse_args(argv)
    cfg = trial_config_from(args)
    try:
        run_trial(cfg, file_reporter(args.report_dir) if args.report_dir else None)
    except (ConfigError, DataError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 0
