"""Every setting of a trial and of a search: its one name, its help text and its defaults.

Run:  nothing to run; `python scripts/train.py --help` prints the trial's options from here,
      and `python experiments/<method>/driver.py --help` the search's.

This file is the single source of truth for:
  * `TrialConfig` — the fields of one fine-tuning trial. Each field's name is also its
    command-line option (`learning_rate` -> `--learning-rate`), its key in the log lines,
    in metrics.json and its CSV column: one name from the command line to the CSV;
  * `PROFILES` — per profile (tiny = laptop tier, workshop = cluster tier):
      - `trial`:  the defaults of the TrialConfig fields that differ between the tiers,
      - `space`:  the search space of the Ray methods (learning-rate range, batch sizes,
                  weight decays),
      - `grid`:   the manual grid's values,
      - `trials`: how many trials each Ray method runs (PBT: the population size);
  * `SMOKE` — the tiny budget every driver's `--smoke` uses (the tests).
The drivers build their options from these (`add_trial_options`), the manual grid
turns a TrialConfig back into a command line (`TrialConfig.to_argv`), and the Ray
trials build their TrialConfig from the driver's options (`trial_config_from`).
Nothing runs at import time.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

# The three hyperparameters the workshop tunes, in the order tables show them.
HYPERPARAMETERS = ("learning_rate", "batch_size", "weight_decay")


@dataclass(frozen=True)
class SearchSpace:
    learning_rate: tuple[float, float]     # log-uniform range of the Ray methods
    batch_size: tuple[int, ...]            # choices, per device
    weight_decay: tuple[float, ...]        # choices (BayesOpt's GP: the range between min and max)


@dataclass(frozen=True)
class Profile:
    trial: dict                            # TrialConfig defaults of this tier
    space: SearchSpace                     # Ray methods: what they search
    grid: SearchSpace                      # manual grid: the values it tries (every combination)
    trials: dict                           # Ray methods: trials per search (PBT: population)


PROFILES = {
    # Laptop tier: tiny BLOOM + generated SQuAD-format set, both built offline on first use.
    # Measured on 2 CPU cores (~25 s a trial): lr 5e-3 -> EM ~16 / F1 ~37 after 4 epochs, 3e-3 -> EM ~7,
    # 1e-2 -> EM ~2, 1e-4 -> ~0: a clear interior optimum, so the search has something to find.
    # The tiny model learns at ~100x larger learning rates and batch sizes than BLOOM-560M.
    "tiny": Profile(
        trial=dict(model="tiny", dataset="tiny", train_samples=1600, eval_samples=100, epochs=4,
                   learning_rate=5e-3, batch_size=16, max_length=128, max_new_tokens=16),
        space=SearchSpace(learning_rate=(3e-4, 1e-2), batch_size=(8, 16), weight_decay=(0.0, 0.01)),
        grid=SearchSpace(learning_rate=(1e-4, 1e-3, 5e-3), batch_size=(8, 16), weight_decay=(0.0, 0.01)),
        trials={"asha": 8, "pbt": 4, "bayesopt": 8}),
    # Cluster tier: the workshop's real setting (1,000 train / 100 validation questions).
    # The search range brackets the manual grid (5e-6 .. 2e-4).
    "workshop": Profile(
        trial=dict(model="bigscience/bloom-560m", dataset="squad", train_samples=1000, eval_samples=100,
                   epochs=5, learning_rate=2e-4, batch_size=1, max_length=512, max_new_tokens=32),
        space=SearchSpace(learning_rate=(5e-6, 2e-4), batch_size=(1, 2), weight_decay=(0.0, 0.01)),
        grid=SearchSpace(learning_rate=(1e-5, 2e-4, 5e-6), batch_size=(1, 2), weight_decay=(0.0, 0.01)),
        trials={"asha": 12, "pbt": 8, "bayesopt": 12}),
}

# `--smoke` (every driver; the tests): a few short trials on a small sample of the profile's data.
SMOKE = dict(train_samples=160, eval_samples=16, epochs=2, trials=4)


class ConfigError(ValueError):
    """A bad option value; the message names the option."""


def _opt(default=None, help: str = "", cli: bool = True, **kw):
    """A TrialConfig field: its default and help text (shown by --help), and whether it is an option."""
    return field(default=default, metadata={"help": help, "cli": cli, **kw})


def option_name(name: str) -> str:
    """The command-line option of a field: learning_rate -> --learning-rate."""
    return "--" + name.replace("_", "-")


@dataclass
class TrialConfig:
    """One trial's settings. Fields left None are taken from the profile (PROFILES[profile].trial)."""
    profile: str = _opt("tiny", "tiny: tiny BLOOM + bundled data, CPU, offline; "
                                "workshop: bigscience/bloom-560m + SQuAD", choices=tuple(PROFILES))
    model: str | None = _opt(None, "hub id, local model directory (save_pretrained), or 'tiny'")
    dataset: str | None = _opt(None, "'squad', a SQuAD v1.1/v2 JSON file, a directory of them, "
                                     "a save_to_disk directory, or 'tiny'")
    train_samples: int | None = _opt(None, "seeded subset of the training questions")
    eval_samples: int | None = _opt(None, "seeded subset of the validation questions")
    epochs: float | None = _opt(None, "training epochs = evaluations (one per epoch)")
    learning_rate: float | None = _opt(None, "peak learning rate of AdamW")
    batch_size: int | None = _opt(None, "per device (GPU or CPU process)")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not on biases and LayerNorm weights)")
    seed: int = _opt(0, "seed of the training run: data order, dropout, any newly initialised weights")
    data_seed: int = _opt(0, "seed that picks the train/validation questions (and splits a single file): "
                             "keep it fixed so every trial of every method sees the same questions")
    max_length: int | None = _opt(None, "prompt + answer + EOS, in tokens (workshop: 512)")
    max_new_tokens: int | None = _opt(None, "generation budget for EM/F1, in tokens")
    eval_batch_size: int = _opt(8, "questions per forward pass when computing the eval loss (any value "
                                   "gives the same loss: it is the mean over all answer tokens)")
    deepspeed: str | None = _opt(None, "DeepSpeed JSON config, e.g. deepspeed_configs/zero2.json", metavar="CONFIG")
    precision: str = _opt("auto", "auto (bf16 / fp16 on V100 / fp32 on CPU) | bf16 | fp16 | fp32",
                          choices=("auto", "bf16", "fp16", "fp32"))
    attention: str = _opt("sdpa", "sdpa: BLOOM's attention through torch's fused scaled_dot_product_attention, "
                                  "its GeLU through torch's fused kernel, and the loss computed only at the "
                                  "answer tokens (fused with liger-kernel on CUDA), see hpo/bloom_attention.py; "
                                  "eager: transformers' own BLOOM code, unchanged. Other models keep their own "
                                  "attention",
                          choices=("sdpa", "eager"))
    grad_accum: int = _opt(1, "gradient accumulation steps")
    group_by_length: bool = _opt(True, "batch questions of similar length together (groups of up to 50 batches "
                                       "sorted by length, batches shuffled; the order follows --seed and the "
                                       "epoch): each batch is padded to its longest question, so mixed lengths "
                                       "waste compute on padding (bench/bench_padding.py); "
                                       "--no-group-by-length: plain random batches")
    lr_scheduler: str = _opt("linear", "linear | cosine | constant | constant_with_warmup",
                             choices=("linear", "cosine", "constant", "constant_with_warmup"))
    warmup_ratio: float = _opt(0.0, "share of the steps spent warming the learning rate up, in [0, 1)")
    keep_unanswerable: bool = _opt(False, "SQuAD v2: keep questions without an answer")
    num_threads: int | None = _opt(None, "torch CPU threads (Ray trials: the CPUs they hold)")
    output_dir: str = _opt("outputs/trial", "metrics.json (and --save-model weights) go here", run=True)
    trial_id: str = _opt("trial", "name of the trial in the log lines and the CSV", run=True)
    save_model: bool = _opt(False, "keep the final weights in OUTPUT_DIR/model", run=True)
    resume_from: str | None = _opt(None, "checkpoint directory (weights + trial_state.json) to continue from",
                                   run=True)
    checkpoint_dir: str | None = _opt(None, "after every evaluation keep the whole training state here (the "
                                            "latest only), so an interrupted run can continue (--resume-from)",
                                      run=True)
    extra: dict = field(default_factory=dict, metadata={"cli": False})   # into metrics.json (e.g. Tune ids)

    # ------------------------------------------------------------------------- defaults + checks
    def resolved(self) -> "TrialConfig":
        """A copy with the profile's defaults filled in and every value checked."""
        if self.profile not in PROFILES:
            raise ConfigError(f"--profile must be one of {', '.join(PROFILES)}, not '{self.profile}'")
        values = asdict(self)
        for k, v in PROFILES[self.profile].trial.items():
            if values.get(k) is None:
                values[k] = v
        cfg = TrialConfig(**values)
        cfg._check()
        return cfg

    def _check(self) -> None:
        def bad(name, msg):
            raise ConfigError(f"{option_name(name)}: {msg}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            bad("learning_rate", f"must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            bad("batch_size", f"must be a positive integer, got {self.batch_size}")
        if not self.epochs > 0:
            bad("epochs", f"must be > 0, got {self.epochs}")
        for name in ("train_samples", "eval_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                bad(name, f"must be >= 1, got {v}")
        if self.max_length < 16:
            bad("max_length", f"must be >= 16 tokens, got {self.max_length}")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                bad(f.name, f"must be one of {', '.join(choices)}, not '{getattr(self, f.name)}'")
        if self.eval_batch_size < 1:
            bad("eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        if self.grad_accum < 1:
            bad("grad_accum", f"must be >= 1, got {self.grad_accum}")
        if not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.deepspeed is not None:
            p = Path(self.deepspeed)
            if not p.is_file():
                bad("deepspeed", f"config file not found: {self.deepspeed}")
            try:
                json.loads(p.read_text())
            except json.JSONDecodeError as e:
                bad("deepspeed", f"{self.deepspeed} is not valid JSON: {e}")

    def value(self, name: str):
        """A field's value, or the profile's default where it is None (nothing checked)."""
        v = getattr(self, name)
        return PROFILES[self.profile].trial.get(name) if v is None and self.profile in PROFILES else v

    # ------------------------------------------------------------------------- command line
    def to_argv(self) -> list[str]:
        """This config as scripts/train.py options (what the manual grid passes to each run).
        Only values that differ from the field's default are written, so the log stays short."""
        argv = []
        for f in fields(self):
            if not f.metadata.get("cli", True):
                continue
            v = getattr(self, f.name)
            default = f.default if f.default is not MISSING else None
            if v == default or v is None:
                continue
            if isinstance(v, bool):        # --flag, or --no-flag for a flag that is on by default
                argv.append(option_name(f.name) if v else "--no-" + option_name(f.name)[2:])
            else:
                argv += [option_name(f.name), repr(v) if isinstance(v, float) else str(v)]
        return argv


def _arg_type(f):
    return {"int | None": int, "float | None": float, "int": int, "float": float}.get(str(f.type), str)


def add_trial_options(ap: argparse.ArgumentParser, *, exclude=(), run_fields: bool = True,
                      defaults_from_config: bool = True, title: str | None = None):
    """Add one option per TrialConfig field (help text and default from the field) to `ap`.

    exclude: fields a caller sets itself (a search over learning_rate, ...).
    run_fields=False leaves out the per-run fields (output dir, trial id, resume) that a
    driver sets for each of its trials. With defaults_from_config=False every default is
    None, so the caller can tell "not given" from "given" (and layer its own defaults).
    """
    group = ap.add_argument_group(title) if title else ap
    for f in fields(TrialConfig):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in exclude or (meta.get("run") and not run_fields):
            continue
        default = f.default if defaults_from_config else None
        if f.name in PROFILES["tiny"].trial:           # the default depends on the tier
            shown = ", ".join(f"{p}: {PROFILES[p].trial[f.name]}" for p in PROFILES)
        else:
            shown = f"default: {f.default}"
        kw = {"dest": f.name, "help": f"{meta['help']} [{shown}]"}
        if f.type == "bool" and f.default is True:   # on by default: --flag / --no-flag
            kw.update(action=argparse.BooleanOptionalAction, default=default)
        elif f.type == "bool":
            kw.update(action="store_true", default=bool(default))
        else:
            kw.update(type=_arg_type(f), default=default)
            if meta.get("choices"):
                kw["choices"] = list(meta["choices"])
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
        group.add_argument(option_name(f.name), **kw)
    return group


PATH_FIELDS = ("model", "dataset", "deepspeed", "output_dir", "resume_from", "checkpoint_dir")


def absolute_paths(namespace) -> None:
    """Make the path-valued options absolute (in place): Ray trials and Ray Train workers run in
    their own working directories, where a relative path would point somewhere else."""
    from hpo.data import looks_like_path
    for name in PATH_FIELDS:
        v = getattr(namespace, name, None)
        if isinstance(v, str) and v not in ("tiny", "none") and (looks_like_path(v) or Path(v).exists()):
            setattr(namespace, name, str(Path(v).expanduser().resolve()))


def trial_config_from(namespace, **overrides) -> TrialConfig:
    """A TrialConfig from parsed options (any attribute named like a field), then the overrides.
    Options left None keep the field's default (the profile fills the rest in `resolved`)."""
    values = {}
    for f in fields(TrialConfig):
        v = getattr(namespace, f.name, None)
        if v is not None:
            values[f.name] = v
    values.update(overrides)
    return TrialConfig(**values)


def trial_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    """scripts/train.py's command line: every TrialConfig field."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune a causal LM on SQuAD as generative QA (one HPO trial). "
                    "Options left out come from --profile.")
    add_trial_options(ap)
    return ap
