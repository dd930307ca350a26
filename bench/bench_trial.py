"""Throughput of the trial: seconds/step, tokens/s, MFU and peak memory — eager vs sdpa attention,
transformers' loss vs the fused loss.

Run:  python bench/bench_trial.py                    # GPU: BLOOM-560M at batch 1/4/8/16 x 512 tokens
                                                     # CPU: small sizes (tiny model + 2-layer BLOOM-560M)
      python bench/bench_trial.py --gpu-only --batch-sizes 8 --variants eager,sdpa+fused
      python bench/bench_trial.py --no-tiny-trial --models tiny      # CPU: training steps of the tiny model only
Writes every figure to bench/results/bench_trial_<hardware>_<date-time>.json (or --json PATH; an
existing file is never replaced).

Three measurements:
1. the tiny trial as the laptop tier runs it (hpo.trial.run_trial, tiny profile), once per
   --attention value: its own tokens/s (training time without the evaluations) and s/step;
2. training steps of a model built from a config with random weights (no download) at a fixed
   sequence length, for each VARIANT = attention[+loss]:
       eager        transformers' BLOOM code as it is (today's path)
       sdpa         hpo/bloom_attention.py (SDPA attention + fused GeLU), transformers' loss
       sdpa+fused   + the fused linear cross-entropy of liger-kernel (hpo/loss.py; CUDA + liger only)
       sdpa+plain   + the loss in chunks of positions, recomputed in the backward pass (any device)
   Models: "bloom560m" = configs/bloom-560m (24 layers on a GPU, --layers to change; 2 by default on a
   CPU), "tiny" = the laptop tier's tiny BLOOM (hpo.tiny). On a GPU: bf16 autocast (fp16 on V100-class
   GPUs), fused AdamW; on a CPU: fp32. Every position is labelled (the MFU formula counts the LM head
   at every position), so the fused loss's saving here is its memory and traffic, not skipped work;
   a real trial labels only the answer tokens, where the loss of hpo/loss.py does even less.
       MFU = tokens/s x (6N + 12 L h T) / peak FLOP/s
   (N parameters, L layers, h hidden size, T sequence length; the 12LhT term is attention).
   Peak dense bf16 FLOP/s by GPU name (H100/H200 SXM 989e12, A100 312e12, V100 fp16 125e12),
   or --peak-tflops. Peak memory: torch's max allocated on the GPU (none on a CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10": 125.0}
VARIANTS = {"eager": ("eager", "off"), "sdpa": ("sdpa", "off"), "sdpa+fused": ("sdpa", "fused"),
            "sdpa+plain": ("sdpa", "plain"), "eager+fused": ("eager", "fused")}
MODELS = ("bloom560m", "tiny")


def hardware() -> tuple[str, str]:
    """(description, file-name slug) of what this runs on: the GPU's name, or the CPU's and its cores."""
    import torch
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return name, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads", f"cpu{os.cpu_count()}"


def bench_tiny_trial(epochs: float, threads: int | None, attention: str) -> dict:
    from hpo.trial import TrialConfig, run_trial
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rec = run_trial(TrialConfig(profile="tiny", epochs=epochs, output_dir=d, trial_id="bench",
                                    num_threads=threads, attention=attention))
        wall = time.perf_counter() - t0
    steps = rec["history"][-1]["step"]
    return {"what": "tiny trial (hpo.trial, tiny profile)", "attention": attention, "device": rec["device"],
            "steps": steps, "batch_size": rec["batch_size"], "s_per_step": rec["train_runtime_s"] / steps,
            "tokens_per_s": rec["tokens_per_s"], "trial_wall_s": wall, "eval_loss": rec["eval_loss"],
            "exact_match": rec["exact_match"]}


def flops_per_token(n_params: int, layers: int, hidden: int, seq: int) -> float:
    return 6 * n_params + 12 * layers * hidden * seq


def model_config(name: str, layers: int | None):
    from transformers import BloomConfig
    if name == "tiny":
        from hpo.tiny import ensure_tiny_model
        conf = BloomConfig.from_pretrained(ensure_tiny_model())
    else:
        conf = BloomConfig.from_pretrained(ROOT / "configs" / "bloom-560m")
    if layers:
        conf.n_layer = layers
    return conf


def bench_steps(model_name: str, conf, batch_sizes: list[int], seq: int, steps: int, variants: list[str],
                peak_tflops: float | None, device_name: str) -> list[dict]:
    """Training steps (forward, backward, AdamW) of each variant at each batch size, on one set of weights."""
    import torch
    from transformers import BloomForCausalLM
    from hpo.bloom_attention import set_attention
    from hpo.loss import set_answer_loss
    from hpo.trial import choose_precision
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    precision = choose_precision("auto")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    torch.manual_seed(0)
    model = BloomForCausalLM(conf).to(device)
    model.train()
    n = sum(p.numel() for p in model.parameters())
    peak = peak_tflops or (next((v for k, v in PEAK_TFLOPS.items() if k in device_name), None) if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=cuda)
    fpt = flops_per_token(n, conf.n_layer, conf.hidden_size, seq)
    out = []
    def one_step(variant: str, x, mask) -> tuple[float, float, float]:
        """(wall s, CPU s of this process, loss) of one training step of `variant`."""
        attention, loss_mode = VARIANTS[variant]
        set_attention(model, attention)
        set_answer_loss(model, loss_mode)
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = model(input_ids=x, attention_mask=mask, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, float(loss.detach())

    for bs in batch_sizes:
        x = torch.randint(0, conf.vocab_size, (bs, seq), device=device)
        mask = torch.ones_like(x)                          # the trial always passes a mask
        times = {v: [] for v in variants}
        peak_mem = {v: 0.0 for v in variants}
        failed = {}
        # 2 warm-up steps each, then the variants take turns step by step: a machine shared with
        # other jobs slows every variant alike, and the median step ignores the worst interruptions.
        for r in range(steps + 2):
            for variant in variants:
                if variant in failed:
                    continue
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                try:
                    wall, cpu, last = one_step(variant, x, mask)
                except torch.cuda.OutOfMemoryError:
                    opt.zero_grad(set_to_none=True)
                    failed[variant] = "out of memory"
                    continue
                if r >= 2:
                    times[variant].append((wall, cpu, last))
                if cuda:
                    peak_mem[variant] = max(peak_mem[variant], torch.cuda.max_memory_allocated() / 2**30)
        for variant in variants:
            attention, loss_mode = VARIANTS[variant]
            row = {"model": model_name, "variant": variant, "attention": attention, "loss": loss_mode,
                   "device": device_name, "precision": precision, "params": n, "layers": conf.n_layer,
                   "seq_len": seq, "batch_size": bs}
            if variant in failed:
                out.append({**row, "error": failed[variant]})
                print(f"{model_name} {variant:11s} batch {bs:2d} x {seq}: {failed[variant]}", flush=True)
                continue
            walls = sorted(t[0] for t in times[variant])
            dt = walls[len(walls) // 2]                    # median step
            tps = bs * seq / dt
            out.append({**row, "steps": len(walls), "s_per_step": dt, "s_per_step_min": walls[0],
                        "cpu_s_per_step": sorted(t[1] for t in times[variant])[len(walls) // 2],
                        "tokens_per_s": tps, "gflop_per_token": fpt / 1e9,
                        "mfu": (tps * fpt / (peak * 1e12)) if peak else None, "peak_tflops": peak,
                        "max_memory_gib": peak_mem[variant] if cuda else None,
                        "last_loss": times[variant][-1][2]})
            text = (f"{model_name} {variant:11s} batch {bs:2d} x {seq}: {dt * 1000:8.1f} ms/step (median of "
                    f"{len(walls)}, min {walls[0] * 1000:.1f}), {tps:9,.0f} tokens/s")
            if peak:
                text += f", MFU {100 * out[-1]['mfu']:.1f} %"
            if cuda:
                text += f", peak mem {peak_mem[variant]:.1f} GiB"
            else:
                text += f", CPU time {out[-1]['cpu_s_per_step'] * 1000:.0f} ms/step"
            print(text, flush=True)
    set_answer_loss(model, "off")
    return out


def speedups(rows: list[dict]) -> list[str]:
    """One line per (model, batch size): each variant's tokens/s relative to eager."""
    lines = []
    keys = sorted({(r["model"], r["batch_size"]) for r in rows if "tokens_per_s" in r}, key=str)
    for model, bs in keys:
        group = {r["variant"]: r["tokens_per_s"] for r in rows
                 if r["model"] == model and r["batch_size"] == bs and "tokens_per_s" in r}
        if "eager" in group:
            lines.append(f"{model} batch {bs}: " + ", ".join(
                f"{v} x{t / group['eager']:.2f}" for v, t in group.items() if v != "eager"))
    return lines


def main(argv=None) -> int:
    import torch
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description="Trial throughput: s/step, tokens/s, MFU; eager vs sdpa, fused loss")
    ap.add_argument("--tiny-epochs", type=float, default=2, help="epochs of the tiny trial [2]")
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--models", default="bloom560m" if cuda else "tiny,bloom560m",
                    help=f"models of the training-step benchmark, from {', '.join(MODELS)} "
                         "[GPU: bloom560m; CPU: tiny,bloom560m]")
    ap.add_argument("--layers", type=int, help="BLOOM-560M layers [GPU: all 24; CPU: 2]")
    ap.add_argument("--batch-sizes", help="per-device batch sizes [GPU: 1,4,8,16; CPU: 1,4 (tiny: 16)]")
    ap.add_argument("--seq-len", type=int, help="tokens per sequence [GPU: 512; CPU: 128]")
    ap.add_argument("--steps", type=int, help="timed steps after 2 warm-up steps [GPU: 10; CPU: 3]")
    ap.add_argument("--variants", help="attention[+loss], from " + ", ".join(VARIANTS) +
                                       " [GPU: eager,sdpa,sdpa+fused (+fused with liger-kernel); CPU: eager,sdpa]")
    ap.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU (default: by name)")
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU benchmark (no tiny trial); needs CUDA")
    ap.add_argument("--no-tiny-trial", action="store_true", help="skip the tiny trial")
    ap.add_argument("--json", help="write the figures here (default: bench/results/bench_trial_<hardware>_<time>.json)")
    a = ap.parse_args(argv)
    from hpo.loss import liger_fused_ce
    try:
        sizes = [int(b) for b in a.batch_sizes.split(",") if b] if a.batch_sizes else None
    except ValueError:
        ap.error(f"--batch-sizes: '{a.batch_sizes}' is not a comma list of integers")
    if sizes is not None and (not sizes or min(sizes) < 1):
        ap.error(f"--batch-sizes: give positive integers, not '{a.batch_sizes}'")
    models = [m for m in a.models.split(",") if m]
    if any(m not in MODELS for m in models):
        ap.error(f"--models: choose from {', '.join(MODELS)}, not '{a.models}'")
    default_variants = ["eager", "sdpa"] + (["sdpa+fused"] if cuda and liger_fused_ce() else [])
    variants = a.variants.split(",") if a.variants else default_variants
    if any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}, not '{a.variants}'")
    if any(VARIANTS[v][1] == "fused" for v in variants) and not (cuda and liger_fused_ce()):
        ap.error("--variants: the fused loss needs a CUDA GPU and liger-kernel (pip install -e .[gpu])")
    for name in ("seq_len", "steps", "layers"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: must be >= 1")
    if a.gpu_only and not cuda:
        print("bench_trial.py: --gpu-only but no CUDA GPU here", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    device_name, slug = hardware()
    out_path = Path(a.json) if a.json else \
        ROOT / "bench" / "results" / f"bench_trial_{slug}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    if out_path.exists():                                  # never replace a result file
        print(f"bench_trial.py: {out_path} exists; give another --json path", file=sys.stderr)
        return 2
    import transformers
    figures = {"hardware": device_name, "torch": torch.__version__, "transformers": transformers.__version__,
               "liger_kernel": _version("liger-kernel"), "command": ["bench/bench_trial.py", *(argv or sys.argv[1:])],
               "tiny_trial": [], "steps": []}
    print(f"hardware: {device_name}", flush=True)
    if not (a.gpu_only or a.no_tiny_trial):
        for attention in ("eager", "sdpa"):
            t = bench_tiny_trial(a.tiny_epochs, a.threads, attention)
            figures["tiny_trial"].append(t)
            print(f"tiny trial, attention {attention}: {t['s_per_step'] * 1000:.1f} ms/step (batch {t['batch_size']}), "
                  f"{t['tokens_per_s']:,.0f} tokens/s, trial wall {t['trial_wall_s']:.1f} s, "
                  f"eval_loss {t['eval_loss']:.3f}, EM {t['exact_match']:.0f}", flush=True)
    for model_name in models:
        tiny = model_name == "tiny"
        conf = model_config(model_name, None if tiny else (a.layers or (None if cuda else 2)))
        rows = bench_steps(model_name, conf, sizes or ([16] if tiny else [1, 4, 8, 16] if cuda else [1, 4]),
                           a.seq_len or (512 if cuda else 128), a.steps or (10 if cuda else 3), variants,
                           a.peak_tflops, device_name)
        figures["steps"] += rows
    for line in speedups(figures["steps"]):
        print("speed-up vs eager:", line)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {out_path}")
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
