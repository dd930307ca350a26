"""One fine-tuning trial: a causal LM on SQuAD as generative QA, with the HF Trainer (+ DeepSpeed).

Run:  python scripts/train.py --profile tiny --learning-rate 2e-3          # the CLI around `run_trial`
      torchrun --standalone --nproc_per_node=2 scripts/train.py --profile workshop \
               --deepspeed deepspeed_configs/zero2.json
      from hpo.trial import TrialConfig, run_trial                         # in-process (Ray Tune trials)
      run_trial(TrialConfig(profile="tiny", learning_rate=2e-3), report=my_hook)

Every method of the workshop runs this, so it is written once and tested:
  * data, prompt and labels: hpo.data (labels only on answer + EOS); the questions are picked
    by --data-seed, never by the training --seed, and fingerprinted (data_fingerprint);
  * after each evaluation (every epoch): eval_loss = the mean over every answer token of the
    eval set (the same whatever the batch size or number of devices), then EM/F1 from greedy
    generation with left padding (hpo.metrics), one `[eval]` line in the log (rank 0), and
    `report(metrics, save)` — the hook Ray Tune trials use; `save(dir)` writes a checkpoint of
    the whole training state that `resume_from=` continues exactly;
  * weights: float32 master weights whatever dtype the checkpoint is stored in; precision:
    bf16 autocast on GPUs that compute it natively (compute capability >= 8), fp16 with loss
    scaling on V100-class GPUs, fp32 on CPU (or DeepSpeed's own mixed precision);
  * DeepSpeed: the config's "auto" values are filled by the Trainer from these
    arguments, and the optimizer is HF's AdamW built from them (see
    deepspeed_configs/README.md), so --learning-rate/--weight-decay are what the optimizer uses —
    its param groups are printed at the start of training and kept in metrics.json;
  * time: setup_s (process start, data, model load), train_s (optimizer steps only), eval_s,
    checkpoint_s (save + report); tokens_per_s is over train_s;
  * output: <output_dir>/metrics.json and a `[result]` line with the same JSON (rank 0 only).
"""
from __future__ import annotations

import json
import os
import shutil
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


def load_model_and_tokenizer(model_id: str, weights_from: str | None = None, attention: str | None = None):
    """Tokenizer from model_id; weights from weights_from (a checkpoint) or model_id.

    attention (--attention): "sdpa" gives a BLOOM model torch's fused attention
    (hpo/bloom_attention.py) and the loss over the answer tokens only, fused on CUDA where
    liger-kernel is installed (hpo/loss.py); "eager" leaves transformers' BLOOM code as it is;
    None (the default of this function) too. Models other than BLOOM keep their own.

    The weights are loaded in float32 whatever dtype the checkpoint is stored in: the hub's
    bigscience/bloom-560m is stored in fp16, and transformers 5 would otherwise keep that dtype
    (dtype="auto"), so the optimizer would update 16-bit "master" weights (small updates round
    away, fp16 overflows to NaN). Mixed precision comes only from autocast or DeepSpeed."""
    import torch
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
        model = AutoModelForCausalLM.from_pretrained(weights_from or model_id, dtype=torch.float32)
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
    if attention is not None:
        from hpo import loss
        from hpo.bloom_attention import set_attention
        in_use = set_attention(model, attention)
        loss_mode = loss.set_answer_loss(model, "off" if attention == "eager" else "auto")
        _log(f"attention: {in_use}; loss: {loss.describe(loss_mode)}", int(os.environ.get("RANK", "0")) == 0)
    return model, tok


def stored_dtype(model_dir: str) -> str | None:
    """The dtype a local checkpoint's config says its weights are stored in (None: not said / hub id)."""
    cfg = Path(model_dir).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    conf = json.loads(cfg.read_text())
    return conf.get("dtype") or conf.get("torch_dtype")


def choose_precision(requested: str) -> str:
    import torch
    if requested != "auto":
        if requested in ("bf16", "fp16") and not torch.cuda.is_available():
            raise ConfigError(f"--precision {requested} needs a CUDA GPU; this run is on the CPU (use fp32 or auto)")
        return requested
    if not torch.cuda.is_available():
        return "fp32"
    # bf16 only where the GPU computes it natively (compute capability >= 8: A100, H100, ...).
    # torch.cuda.is_bf16_supported() is True on a V100 (7.0) too, through slow emulation:
    # there fp16 with loss scaling is the right choice.
    major, _ = torch.cuda.get_device_capability()
    return "bf16" if major >= 8 else "fp16"


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
    """A cheap number that changes with any weight: lets tests prove *whose* weights a trial loaded.

    Under DeepSpeed ZeRO-3 each rank holds only a shard of every parameter (the local tensor is
    empty): the parameters are gathered first. That is collective — every rank must call this."""
    import torch
    params = list(model.parameters())
    with torch.no_grad():
        if any(hasattr(p, "ds_tensor") for p in params):
            import deepspeed
            with deepspeed.zero.GatheredParameters(params):
                return round(float(sum(p.detach().float().abs().sum() for p in params)), 4)
        return round(float(sum(p.detach().float().abs().sum() for p in params)), 4)


def answer_token_loss(model, features: list[dict], collate, batch_size: int) -> tuple[float, int]:
    """(sum of the cross-entropy over every answer token, number of answer tokens) of `features`.

    The eval loss is their ratio: the mean over all answer tokens of the eval set. The Trainer's
    own eval loss averages per-batch means instead, so it would move with the eval batch size
    (and the tuned batch size, and the number of GPUs) — not a fair objective for a search."""
    import torch
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(features), batch_size):
                batch = {k: v.to(device) for k, v in collate(features[i:i + batch_size]).items()}
                n = int((batch["labels"][:, 1:] != -100).sum())    # the model predicts token t+1 from t
                loss = model(**batch).loss                         # mean over this batch's answer tokens
                total += float(loss) * n
                count += n
    finally:
        model.train(was_training)
    return total, count


def _process_start_time() -> float:
    """When this process started (Linux /proc), so setup time includes Python's imports."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def _log(msg: str, main: bool = True) -> None:
    if main:
        print(f"[trial] {msg}", flush=True)


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def peak_memory() -> dict:
    """This process's peak memory so far, in GiB (2**30 bytes), and what was measured:
    on a CUDA GPU torch.cuda.max_memory_allocated (the tensors; PyTorch's allocator reserves a bit more,
    `reserved_gib`, and the CUDA context adds ~0.5 GiB), with the GPU's total memory (`device_gib`);
    on the CPU the process's peak resident memory (ru_maxrss: over the process's whole life).
    With 2 or 4 trials on one GPU (--gpus-per-trial 0.5 / 0.25) nothing divides the memory between
    them: each trial's peak must fit beside the others'."""
    import torch
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return {"gib": torch.cuda.max_memory_allocated() / 2**30, "what": "torch.cuda.max_memory_allocated",
                "reserved_gib": torch.cuda.max_memory_reserved() / 2**30, "device_gib": props.total_memory / 2**30,
                "device_name": props.name}
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KiB on Linux, bytes on macOS
    return {"gib": rss / (2**30 if sys.platform == "darwin" else 2**20), "what": "peak RSS of the process",
            "reserved_gib": None, "device_gib": None, "device_name": None}


def describe_peak_memory(mem: dict) -> str:
    """The line printed at the end of a trial: how much it needed, and how many such trials one GPU holds."""
    text = f"peak memory {mem['gib']:.2f} GiB ({mem['what']})"
    if mem.get("device_gib"):
        per_trial = (mem["reserved_gib"] or mem["gib"]) + 0.5      # + the CUDA context of each process
        fit = int(mem["device_gib"] // per_trial)
        text += (f"; {mem['reserved_gib']:.2f} GiB reserved by PyTorch, of {mem['device_gib']:.1f} GiB on "
                 f"{mem['device_name']}: by memory about {fit} such trial(s) fit on one GPU "
                 f"(--gpus-per-trial 0.5 needs 2, 0.25 needs 4; they also share its compute: "
                 f"bench/bench_fractional.py measures trials per GPU-hour)")
    return text


TIMES = ("setup_s", "train_s", "eval_s", "checkpoint_s")


# ----------------------------------------------------------------------------- the trial
def run_trial(cfg: TrialConfig, report: ReportFn | None = None, started_at: float | None = None) -> dict:
    """Train and evaluate once; returns the metrics.json record (on every rank).

    started_at: when the trial began (time.time()), for setup_s; default: now.
    Checkpoints (written by `save(dir)` in the report hook) hold the whole training state —
    weights, optimizer moments, LR schedule position, RNG, Trainer state — so a trial resumed
    from one (resume_from=dir) continues exactly where it stopped (a paused PBT member), or
    continues another trial's training with its own learning rate and weight decay (a PBT exploit).
    """
    t_start = started_at if started_at is not None else time.time()
    cfg = cfg.resolved()
    import torch
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hpo.data import LengthGroupedSampler, PadCollator, encode_split, load_squad
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
    state = {"epochs_done": 0.0, "global_step": 0, **{k: 0.0 for k in TIMES}}
    if cfg.resume_from:
        state_file = Path(cfg.resume_from) / "trial_state.json"
        if not state_file.is_file():
            raise DataError(f"resume_from={cfg.resume_from}: no trial_state.json (not a trial checkpoint)")
        state.update(json.loads(state_file.read_text()))
        if not (Path(cfg.resume_from) / "trainer_state.json").is_file():
            raise DataError(f"resume_from={cfg.resume_from}: no trainer_state.json (a weights-only checkpoint "
                            "of an older version; it cannot continue the optimizer and schedule)")
        _log(f"resuming from {cfg.resume_from}: {state['epochs_done']:g} epochs done, step "
             f"{state['global_step']} (training state of trial {state.get('trial_id', '?')})", main)
    if cfg.epochs - state["epochs_done"] <= 0:
        raise ConfigError(f"--epochs {cfg.epochs:g}: the checkpoint already trained {state['epochs_done']:g} epochs")
    model, tok = load_model_and_tokenizer(model_id, weights_from=cfg.resume_from, attention=cfg.attention)
    weights_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    splits = load_squad(dataset, cfg.train_samples, cfg.eval_samples, cfg.data_seed, cfg.keep_unanswerable)
    train = encode_split(tok, splits.train, cfg.max_length)
    val = encode_split(tok, splits.validation, cfg.max_length)
    _log(f"data {splits.source} (data_seed {cfg.data_seed}, fingerprint {splits.fingerprint}): "
         f"train {len(train.features)} examples, eval {len(val.features)}; "
         f"dropped (answer cannot fit in {cfg.max_length} tokens): train {train.dropped}, eval {val.dropped}; "
         f"context truncated (answer kept): train {train.truncated}, eval {val.truncated}; "
         f"skipped unanswerable (SQuAD v2): train {splits.skipped_unanswerable.get('train', 0)}, "
         f"eval {splits.skipped_unanswerable.get('validation', 0)}", main)
    if not train.features or not val.features:
        raise DataError(f"no examples fit in --max-length {cfg.max_length}; raise it")

    precision = choose_precision(cfg.precision)
    hparams = {"learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size, "weight_decay": cfg.weight_decay}
    n_dev = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = cfg.batch_size * n_dev * cfg.grad_accum
    if cfg.resume_from and state.get("global_batch_size") not in (None, global_batch):
        # The checkpoint counts optimizer steps: with another global batch its step count means
        # another number of epochs, and the schedule would be wrong.
        raise ConfigError(f"resume_from={cfg.resume_from}: trained with global batch {state['global_batch_size']}, "
                          f"this run has {global_batch} (batch_size {cfg.batch_size} x {n_dev} device(s) x "
                          f"grad_accum {cfg.grad_accum}); resume with the same")

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()   # peak_memory_gib: this trial's peak (weights stay counted)
    args = TrainingArguments(
        output_dir=str(out_dir / "hf"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,       # the whole run: a resumed trial continues the same schedule
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,     # transformers 5: a float in [0, 1) is a ratio of the steps
        eval_strategy="epoch",            # one evaluation (and one Tune report) per epoch
        save_strategy="no",               # checkpoints are taken by the report hook when asked
        logging_strategy="epoch",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,               # the training order follows --seed; the questions do not
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
    # Where this trial's time goes; a resumed trial keeps counting from its checkpoint.
    times = {k: float(state[k]) for k in TIMES}
    clock = {"train_begin": None, "eval_s": 0.0, "checkpoint_s": 0.0, "saving_s": 0.0}
    loaded_fingerprint = weights_fingerprint(model)
    collate = PadCollator(tok.pad_token_id)
    # the training batches get their own collator: it counts their padding (real_token_share)
    train_collate = PadCollator(tok.pad_token_id)

    class SetHyperparameters(TrainerCallback):
        """At the start of training (after a checkpoint's optimizer and schedule were loaded): the
        optimizer gets THIS trial's learning rate and weight decay — a PBT exploit continues the
        donor's training state with its own, perturbed values. Then print what the optimizer holds."""
        def on_train_begin(self, args, state_, control, optimizer=None, lr_scheduler=None, **kw):
            opt = getattr(optimizer, "optimizer", optimizer)      # DeepSpeed wraps the torch optimizer
            groups = getattr(opt, "param_groups", None) or getattr(optimizer, "param_groups", [])
            if cfg.resume_from:
                decay = set(trainer.get_decay_parameter_names(trainer.model))
                decay_ids = {id(p) for n, p in trainer.model.named_parameters() if n in decay}
                sched = getattr(lr_scheduler, "lr_lambdas", None) and lr_scheduler
                for i, g in enumerate(groups):
                    # The Trainer builds [decayed, not decayed] groups; DeepSpeed keeps the order but
                    # holds flat copies of the parameters, so fall back on the order there.
                    is_decay = any(id(p) in decay_ids for p in g["params"]) or \
                        (i == 0 and len(groups) == 2 and not any(id(p) in decay_ids for p in groups[1]["params"])
                         and not any(id(p) in decay_ids for p in g["params"]) and bool(cfg.deepspeed))
                    if is_decay:
                        g["weight_decay"] = cfg.weight_decay
                    g["initial_lr"] = cfg.learning_rate
                    if sched is not None:        # LambdaLR: lr = base lr x schedule(step)
                        sched.base_lrs[i] = cfg.learning_rate
                        g["lr"] = cfg.learning_rate * sched.lr_lambdas[i](sched.last_epoch)
                    else:
                        g["lr"] = cfg.learning_rate
            clock["train_begin"] = time.perf_counter()
            times["setup_s"] += time.time() - t_start
            for g in groups:
                optimizer_groups.append({"lr": float(g["lr"]), "weight_decay": float(g["weight_decay"]),
                                         "tensors": len(g["params"])})
            _log(f"optimizer {type(opt).__name__}: " + "; ".join(
                f"group {i}: lr={g['lr']:.6g} weight_decay={g['weight_decay']:g} tensors={g['tensors']}"
                for i, g in enumerate(optimizer_groups)), main)

    def train_seconds() -> float:
        """Optimizer steps only: the time since training began minus evaluations and checkpoints."""
        if clock["train_begin"] is None:
            return 0.0
        return time.perf_counter() - clock["train_begin"] - clock["eval_s"] - clock["checkpoint_s"]

    def timing() -> dict:
        return {"setup_s": round(times["setup_s"], 3), "train_s": round(times["train_s"] + train_seconds(), 3),
                "eval_s": round(times["eval_s"] + clock["eval_s"], 3),
                "checkpoint_s": round(times["checkpoint_s"] + clock["checkpoint_s"], 3)}

    def save_checkpoint(directory: str) -> None:
        """The whole training state: weights, optimizer + LR schedule, RNG, Trainer state, and
        trial_state.json. Collective under DeepSpeed, so every rank must call it."""
        t0 = time.perf_counter()
        trainer.save_model(directory)
        trainer._save_optimizer_and_scheduler(directory)      # DeepSpeed: its own checkpoint format
        trainer._save_scaler(directory)
        trainer._save_rng_state(directory)
        fingerprint = weights_fingerprint(trainer.model)       # collective under ZeRO-3
        clock["saving_s"] = time.perf_counter() - t0            # counted now: a paused trial never returns
        clock["checkpoint_s"] += clock["saving_s"]
        if trainer.is_world_process_zero():
            trainer.state.save_to_json(str(Path(directory) / "trainer_state.json"))
            _atomic_write_json(Path(directory) / "trial_state.json", {
                "epochs_done": history[-1]["epoch"] if history else state["epochs_done"],
                "global_step": trainer.state.global_step, "global_batch_size": global_batch,
                "trial_id": cfg.trial_id, "hparams": hparams,
                "eval_loss": history[-1]["eval_loss"] if history else None,
                "weights_fingerprint": fingerprint, **timing()})

    class QATrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            """--group-by-length: batches of similar length (hpo.data.LengthGroupedSampler). Its order
            depends only on --seed and the epoch, so a resumed trial continues it exactly."""
            if not cfg.group_by_length:
                return super()._get_train_sampler(train_dataset)
            data = train_dataset if train_dataset is not None else self.train_dataset
            return LengthGroupedSampler([len(f["input_ids"]) for f in data], cfg.batch_size, cfg.seed)

        def evaluate(self, *a, **kw):
            t0 = time.perf_counter()
            loss_sum, n_tokens = answer_token_loss(self.model, val.features, collate, cfg.eval_batch_size)
            preds = generate_answers(self.model, tok, val.prompts, batch_size=32,
                                     max_new_tokens=cfg.max_new_tokens, synced_gpus=is_zero3)
            scores = squad_scores(preds, val.references)
            clock["eval_s"] += time.perf_counter() - t0
            epoch = float(self.state.epoch or 0.0)
            trained_epochs = epoch - state["epochs_done"]
            rec = {"epoch": round(epoch, 4), "step": self.state.global_step,
                   "eval_loss": loss_sum / max(n_tokens, 1), "eval_tokens": n_tokens, **scores,
                   # throughput of this process: training tokens / time in optimizer steps
                   "tokens_per_s": round(train.tokens * trained_epochs / max(train_seconds(), 1e-9), 1),
                   **timing(), "peak_memory_gib": round(peak_memory()["gib"], 3),
                   "real_token_share": train_collate.real_token_share and round(train_collate.real_token_share, 4)}
            if cfg.resume_from:      # whose weights this trial started from (PBT lineage check)
                rec["loaded_weights_fingerprint"] = loaded_fingerprint
            history.append(rec)
            metrics = {"eval_loss": rec["eval_loss"], "eval_exact_match": scores["exact_match"],
                       "eval_f1": scores["f1"], "epoch": epoch}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            if self.is_world_process_zero():
                print(logfmt.eval_line(cfg.trial_id, epoch, rec["step"], rec, hparams), flush=True)
                if len(history) == 1:
                    _log("sample answers: " + " | ".join(
                        f"{p!r} (ref {r[0]!r})" for p, r in zip(preds[:3], val.references[:3])))
            if report is not None:
                payload = {**rec, **hparams, "trial_id": cfg.trial_id, "global_batch_size": global_batch,
                           "epochs_planned": cfg.epochs, "data_fingerprint": splits.fingerprint}

                def save(directory: str) -> None:
                    save_checkpoint(directory)
                    payload["checkpoint_s"] = timing()["checkpoint_s"]   # the caller reports it after saving
                t1 = time.perf_counter()
                clock["saving_s"] = 0.0
                report(payload, save)
                # the rest of the report (Tune copying the checkpoint to its storage)
                clock["checkpoint_s"] += time.perf_counter() - t1 - clock["saving_s"]
            return metrics

    trainer = QATrainer(model=model, args=args, train_dataset=train.features, eval_dataset=val.features,
                        data_collator=train_collate, callbacks=[SetHyperparameters()])
    device, _ = device_description()
    stored = stored_dtype(model_id)
    _log(f"{cfg.trial_id}: model={model_id} learning_rate={cfg.learning_rate:g} "
         f"batch_size={cfg.batch_size}x{n_dev} (global {global_batch}) weight_decay={cfg.weight_decay:g} "
         f"epochs={cfg.epochs:g} seed={cfg.seed} weights_dtype={weights_dtype}"
         f"{f' (stored as {stored})' if stored else ''} precision={precision} "
         f"device={device}x{n_dev} deepspeed={cfg.deepspeed or 'off'}", main)
    trainer.train(resume_from_checkpoint=cfg.resume_from)
    trained_epochs = (history[-1]["epoch"] if history else cfg.epochs) - state["epochs_done"]
    t = timing()
    mem = peak_memory()
    last = history[-1] if history else {}
    record = {
        "trial_id": cfg.trial_id, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
        "weight_decay": cfg.weight_decay, "seed": cfg.seed, "data_seed": cfg.data_seed, "attention": cfg.attention,
        "epochs": last.get("epoch", cfg.epochs), "epochs_planned": cfg.epochs,
        "eval_loss": last.get("eval_loss"), "exact_match": last.get("exact_match"), "f1": last.get("f1"),
        "eval_tokens": last.get("eval_tokens"),
        # train_runtime_s: this process's optimizer-step time (the Trainer's runtime minus evaluations)
        "train_runtime_s": round(t["train_s"] - times["train_s"], 3), "eval_runtime_s": round(clock["eval_s"], 3),
        "tokens_per_s": round(train.tokens * trained_epochs / max(t["train_s"] - times["train_s"], 1e-9), 1),
        **t, "global_batch_size": global_batch, "data_fingerprint": splits.fingerprint,
        "device": device, "num_devices": n_dev, "precision": precision, "weights_dtype": weights_dtype,
        "stored_dtype": stored, "deepspeed": cfg.deepspeed, "model": model_id, "dataset": splits.source,
        "train_examples": len(train.features), "eval_examples": len(val.features),
        "dropped_too_long": {"train": train.dropped, "eval": val.dropped},
        "skipped_unanswerable": splits.skipped_unanswerable,
        "optimizer_param_groups": optimizer_groups, "history": history,
        "resumed_from": cfg.resume_from, "resumed_from_trial": state.get("trial_id"),
        "loaded_weights_fingerprint": loaded_fingerprint,
        "checkpoint_weights_fingerprint": state.get("weights_fingerprint"),
        # memory: this process's peak (a resumed trial: since it resumed); padding: the share of real
        # tokens among the positions of this process's training batches (--group-by-length raises it)
        "peak_memory_gib": round(mem["gib"], 3), "peak_memory_what": mem["what"],
        "device_memory_gib": mem["device_gib"] and round(mem["device_gib"], 2),
        "group_by_length": cfg.group_by_length,
        "real_token_share": train_collate.real_token_share and round(train_collate.real_token_share, 4),
        **cfg.extra,
    }
    if cfg.save_model:
        trainer.save_model(str(out_dir / "model"))
        if main:
            tok.save_pretrained(str(out_dir / "model"))
    if main:
        _atomic_write_json(out_dir / "metrics.json", record)
        _log(f"{cfg.trial_id}: {describe_peak_memory(mem)}")
        if train_collate.real_token_share is not None:
            _log(f"{cfg.trial_id}: {100 * train_collate.real_token_share:.1f} % of the training batches' positions "
                 f"were real tokens, the rest padding (group_by_length={cfg.group_by_length})")
        print(logfmt.result_line(record), flush=True)
    return record


# ----------------------------------------------------------------------------- CLI
def keep_latest_checkpoint(directory: str) -> ReportFn:
    """A report hook for a run outside Ray (the manual grid): after every evaluation the whole
    training state goes to `directory`, replacing the previous one only once it is complete."""
    d = Path(directory)
    tmp, old = d.with_name(d.name + ".tmp"), d.with_name(d.name + ".old")

    def report(metrics: dict, save) -> None:
        main = int(os.environ.get("RANK", "0")) == 0
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        save(str(tmp))                                   # every rank: collective under DeepSpeed
        if main:
            if d.exists():
                d.rename(old)
            tmp.rename(d)
            shutil.rmtree(old, ignore_errors=True)
    return report


def main(argv=None) -> int:
    args = trial_parser().parse_args(argv)
    cfg = trial_config_from(args)
    try:
        run_trial(cfg, keep_latest_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir else None,
                  started_at=_process_start_time())
    except (ConfigError, DataError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 0
