"""Throughput of the trial: seconds/step, tokens/s and (on a GPU) MFU.

Run:  python bench/bench_trial.py                    # CPU: the tiny trial; GPU: + BLOOM-560M
      python bench/bench_trial.py --gpu-only --batch-sizes 1,4,8 --seq-len 512
      python bench/bench_trial.py --json out.json     # the figures, machine-readable

Two measurements:
1. the tiny trial as the laptop tier runs it (hpo.trial.run_trial, tiny profile): its own
   tokens/s (training time without the evaluations) and seconds per optimizer step;
2. where a CUDA GPU is present: BLOOM-560M built from its real config (configs/bloom-560m,
   shipped with the project) with random weights — no download — trained in bf16 autocast
   with fused AdamW at fixed sequence length: seconds/step, tokens/s and
       MFU = tokens/s x (6N + 12 L h T) / peak FLOP/s
   (N parameters, L layers, h hidden size, T sequence length; the 12LhT term is attention).
   Peak dense bf16 FLOP/s by GPU name (H100/H200 SXM 989e12, A100 312e12, V100 fp16 125e12),
   or --peak-tflops.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "V100": 125.0, "L40S": 362.0, "A10": 125.0}


def bench_tiny(epochs: float, threads: int | None) -> dict:
    from hpo.trial import TrialConfig, run_trial
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rec = run_trial(TrialConfig(profile="tiny", epochs=epochs, output_dir=d, trial_id="bench",
                                    num_threads=threads))
        wall = time.perf_counter() - t0
    steps = rec["history"][-1]["step"]
    train_s = rec["train_runtime_s"] - rec["eval_runtime_s"]
    return {"what": "tiny trial (hpo.trial, tiny profile)", "device": rec["device"], "steps": steps,
            "batch_size": rec["batch_size"], "s_per_step": train_s / steps, "tokens_per_s": rec["tokens_per_s"],
            "trial_wall_s": wall, "eval_loss": rec["eval_loss"], "exact_match": rec["exact_match"]}


def flops_per_token(n_params: int, layers: int, hidden: int, seq: int) -> float:
    return 6 * n_params + 12 * layers * hidden * seq


def bench_bloom560m(batch_sizes: list[int], seq: int, steps: int, peak_tflops: float | None) -> list[dict]:
    import torch
    from transformers import BloomConfig, BloomForCausalLM
    cfg = BloomConfig.from_pretrained(ROOT / "configs" / "bloom-560m")
    torch.manual_seed(0)
    model = BloomForCausalLM(cfg).cuda()
    model.train()
    n = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=True)
    fpt = flops_per_token(n, cfg.n_layer, cfg.hidden_size, seq)
    out = []
    for bs in batch_sizes:
        x = torch.randint(0, cfg.vocab_size, (bs, seq), device="cuda")
        try:
            for i in range(steps + 3):                  # 3 warm-up steps
                if i == 3:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=x, labels=x).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
        except torch.cuda.OutOfMemoryError:
            out.append({"batch_size": bs, "error": "out of memory"})
            torch.cuda.empty_cache()
            continue
        dt = (time.perf_counter() - t0) / steps
        tps = bs * seq / dt
        out.append({"what": "BLOOM-560M (real config, random weights), bf16 autocast, fused AdamW",
                    "device": name, "params": n, "seq_len": seq, "batch_size": bs, "s_per_step": dt,
                    "tokens_per_s": tps, "gflop_per_token": fpt / 1e9,
                    "mfu": (tps * fpt / (peak * 1e12)) if peak else None, "peak_tflops": peak,
                    "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30})
        torch.cuda.reset_peak_memory_stats()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Trial throughput: s/step, tokens/s, MFU")
    ap.add_argument("--tiny-epochs", type=float, default=2)
    ap.add_argument("--threads", type=int, help="CPU threads for the tiny trial (default: torch's)")
    ap.add_argument("--batch-sizes", default="1,2,4,8", help="BLOOM-560M per-GPU batch sizes")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU (default: by name)")
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    try:
        sizes = [int(b) for b in a.batch_sizes.split(",") if b]
    except ValueError:
        ap.error(f"--batch-sizes: '{a.batch_sizes}' is not a comma list of integers")
    import torch
    figures = {}
    if not a.gpu_only:
        t = bench_tiny(a.tiny_epochs, a.threads)
        figures["tiny"] = t
        print(f"tiny trial on {t['device']}: {t['s_per_step'] * 1000:.1f} ms/step (batch {t['batch_size']}), "
              f"{t['tokens_per_s']:,.0f} tokens/s, trial wall {t['trial_wall_s']:.1f} s, "
              f"eval_loss {t['eval_loss']:.3f}, EM {t['exact_match']:.0f}", flush=True)
    if torch.cuda.is_available():
        rows = bench_bloom560m(sizes, a.seq_len, a.steps, a.peak_tflops)
        figures["bloom560m"] = rows
        for r in rows:
            if "error" in r:
                print(f"BLOOM-560M batch {r['batch_size']}: {r['error']}")
                continue
            mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a (unknown peak: --peak-tflops)"
            print(f"BLOOM-560M on {r['device']}, batch {r['batch_size']} x {r['seq_len']}: "
                  f"{r['s_per_step'] * 1000:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, MFU {mfu}, "
                  f"peak mem {r['max_memory_gib']:.1f} GiB", flush=True)
    elif a.gpu_only:
        print("bench_trial.py: --gpu-only but no CUDA GPU here", file=sys.stderr)
        return 2
    else:
        print("no CUDA GPU: BLOOM-560M / MFU part skipped")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
