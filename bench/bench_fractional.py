"""Several trials on one GPU: trials per GPU-hour with 1, 2 or 4 trials sharing one GPU.

Run:  python bench/bench_fractional.py --dry-run              # print what it would run (any machine)
      python bench/bench_fractional.py                        # on a CUDA GPU: the workshop profile
      python bench/bench_fractional.py --model rehearsal --dataset DIR_OR_JSON
                              # offline: BLOOM-560M's architecture with random weights and the tiny tokenizer
                              # (hpo.tiny.ensure_rehearsal_model; ~3x more tokens per question than BLOOM's
                              # own tokenizer, so its times are an upper bound)
      python bench/bench_fractional.py --trials-per-gpu 1,2,4,8 --batch-size 2 --dataset DIR_OR_JSON

`--gpus-per-trial 0.5` (or 0.25) makes Ray start 2 (or 4) trials on each GPU: separate processes that
see the same device and share its memory and compute, with nothing dividing either. Whether that pays
depends on how busy one trial keeps the GPU: BLOOM-560M at batch 1-2 uses a few % of an H100's compute
(bench/bench_trial.py: MFU 2.7 % at batch 1), so several trials may run almost as fast side by side.

For k in --trials-per-gpu this starts k copies of scripts/train.py (the trial every method runs) at
once on one GPU (CUDA_VISIBLE_DEVICES, as Ray does; started directly, so Ray's start-up is not in the
figures), each with its own --seed, and waits for all of them. It reports, per k:
  * each trial's peak memory (peak_memory_gib: torch.cuda.max_memory_allocated) and their sum, against
    the GPU's memory — a k whose trials crash (out of memory) is reported as not fitting;
  * measured trials per GPU-hour = k x 3600 / (wall time until the last of the k finished);
  * the same for a whole workshop trial (the profile's questions and epochs), extrapolated from each
    trial's own times: setup + train_s x (workshop examples x epochs) / (measured examples x epochs)
    + eval_s x (workshop evaluations x questions) / (measured evaluations x questions). With --full the
    trials are workshop trials and nothing is extrapolated.
Writes bench/results/fractional_<gpu>.json (never replacing a file with more entries). Without a CUDA
GPU it says so, prints the commands it would run and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "workshop"
SHORT = dict(train_samples=200, eval_samples=20, epochs=1)      # the measured trial unless --full


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials-per-gpu", default="1,2,4", help="comma list: trials sharing the GPU [default: 1,2,4]")
    ap.add_argument("--model", help="hub id, local model directory, or 'rehearsal' (BLOOM-560M's architecture "
                                    "with random weights, built offline) [default: the workshop profile's]")
    ap.add_argument("--dataset", help="[default: the workshop profile's]")
    ap.add_argument("--batch-size", type=int, help="per trial [default: the workshop profile's]")
    ap.add_argument("--train-samples", type=int, help=f"[default: {SHORT['train_samples']}; --full: the profile's]")
    ap.add_argument("--eval-samples", type=int, help=f"[default: {SHORT['eval_samples']}; --full: the profile's]")
    ap.add_argument("--epochs", type=int, help=f"[default: {SHORT['epochs']}; --full: the profile's]")
    ap.add_argument("--full", action="store_true", help="run whole workshop trials (nothing extrapolated)")
    ap.add_argument("--gpu", type=int, default=0, help="which GPU of this machine [default: 0]")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for each k [default: 3600]")
    ap.add_argument("--work-dir", help="the trials' output directories [default: a temporary directory]")
    ap.add_argument("--out", help="[default: bench/results/fractional_<gpu>.json]")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = ap.parse_args(argv)
    try:
        a.ks = [int(k) for k in a.trials_per_gpu.split(",") if k.strip()]
    except ValueError:
        ap.error(f"--trials-per-gpu: '{a.trials_per_gpu}' is not a comma list of integers")
    if not a.ks or min(a.ks) < 1 or len(set(a.ks)) != len(a.ks):
        ap.error(f"--trials-per-gpu: need distinct integers >= 1, got '{a.trials_per_gpu}'")
    for name in ("batch_size", "train_samples", "eval_samples", "epochs"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.timeout <= 0:
        ap.error(f"--timeout must be > 0, got {a.timeout}")
    from hpo.config import PROFILES
    prof = PROFILES[PROFILE].trial
    a.ks.sort()
    a.full_trial = {k: prof[k] for k in ("train_samples", "eval_samples", "epochs")}
    for k, short in SHORT.items():
        if getattr(a, k) is None:
            setattr(a, k, prof[k] if a.full else short)
    a.batch_size = a.batch_size or prof["batch_size"]
    a.model = a.model or prof["model"]
    a.dataset = a.dataset or prof["dataset"]
    return a


def trial_command(a, k: int, i: int, out_dir: Path, model: str, cpus: int) -> list[str]:
    """Trial i of k sharing the GPU: scripts/train.py at the workshop profile, its own seed and output."""
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--profile", PROFILE, "--model", model,
            "--dataset", a.dataset, "--train-samples", str(a.train_samples), "--eval-samples", str(a.eval_samples),
            "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--seed", str(i),
            "--num-threads", str(max(1, cpus // k)), "--trial-id", f"k{k}-t{i}", "--output-dir", str(out_dir)]


def scale_factors(full: dict, train_examples: int, eval_examples: int, epochs: float) -> dict:
    """How much longer a workshop trial's (`full`: train_samples, eval_samples, epochs) training and
    evaluation are than those of a trial that trained train_examples x epochs and evaluated
    eval_examples once per epoch. The measured trial's own counts are used: a small data file may
    hold fewer questions than asked for."""
    return {"train": full["train_samples"] * full["epochs"] / (train_examples * epochs),
            "eval": full["eval_samples"] * full["epochs"] / (eval_examples * epochs)}


def workshop_trial_s(trial: dict, full: dict) -> float:
    """A measured trial's wall time with its training and evaluation stretched to a workshop trial's
    (its setup and start-up unchanged): the extrapolation this script reports."""
    scale = scale_factors(full, trial["train_examples"], trial["eval_examples"], trial["epochs"])
    rest = trial["wall_s"] - trial["train_s"] - trial["eval_s"]
    return rest + trial["train_s"] * scale["train"] + trial["eval_s"] * scale["eval"]


def summarize(k: int, trials: list[dict], full: dict, device_gib: float | None) -> dict:
    """One entry of the results: k trials that shared the GPU (each {wall_s, train_s, eval_s,
    train_examples, eval_examples, epochs, peak_memory_gib, tokens_per_s} or {error}); `full`: the
    workshop trial to extrapolate to."""
    entry = {"trials_per_gpu": k, "trials": trials}
    failed = [t for t in trials if t.get("error")]
    if failed:
        entry.update(ok=False, error=f"{len(failed)} of {k} trial(s) failed: {failed[0]['error']}")
        return entry
    wall = max(t["wall_s"] for t in trials)
    longest = max(workshop_trial_s(t, full) for t in trials)
    peaks = [t["peak_memory_gib"] for t in trials]
    entry.update(ok=True, wall_s=wall, trials_per_gpu_hour=k * 3600 / wall,
                 workshop_trial_s=longest, workshop_trials_per_gpu_hour=k * 3600 / longest,
                 peak_memory_gib=max(peaks), sum_peak_memory_gib=sum(peaks),
                 memory_share=sum(peaks) / device_gib if device_gib else None,
                 tokens_per_s_total=sum(t["tokens_per_s"] for t in trials))
    return entry


def gpu_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA A100-SXM4-80GB' -> 'a100_sxm4_80gb' (the result file's name)."""
    name = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def run_k(a, k: int, work: Path, model: str, cpus: int) -> list[dict]:
    """Start k trials at once on the GPU, wait for all; each trial's figures (or its error)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(a.gpu), TOKENIZERS_PARALLELISM="false")
    procs = []
    for i in range(k):
        out = work / f"k{k}" / f"t{i}"
        out.mkdir(parents=True, exist_ok=True)
        log = open(out / "train.log", "w")
        procs.append((out, log, time.time(), subprocess.Popen(trial_command(a, k, i, out, model, cpus),
                                                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
    trials, deadline = [], time.time() + a.timeout
    for out, log, t0, p in procs:
        try:
            rc = p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            rc = f"timed out after {a.timeout:g} s"
        wall = time.time() - t0
        log.close()
        metrics = out / "metrics.json"
        if rc != 0 or not metrics.is_file():
            tail = (out / "train.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            trials.append({"error": f"rc={rc}: {tail[0][:300]}", "log": str(out / "train.log")})
            continue
        m = json.loads(metrics.read_text())
        trials.append({"wall_s": wall, "train_s": m["train_s"], "eval_s": m["eval_s"], "setup_s": m["setup_s"],
                       "train_examples": m["train_examples"], "eval_examples": m["eval_examples"],
                       "epochs": m["epochs"],
                       "peak_memory_gib": m["peak_memory_gib"], "tokens_per_s": m["tokens_per_s"],
                       "eval_loss": m["eval_loss"], "precision": m["precision"]})
    return trials


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    has_gpu = torch.cuda.is_available() and a.gpu < torch.cuda.device_count()
    model = a.model
    if not has_gpu or a.dry_run:
        if model == "rehearsal":
            model = "<rehearsal model: hpo.tiny.ensure_rehearsal_model() builds it>"
        why = ("--dry-run" if a.dry_run and has_gpu else
               f"no CUDA GPU {a.gpu} here: this benchmark measures trials sharing one GPU and needs one")
        print(f"bench_fractional.py: {why}. It would run, for each k, k trials at once with "
              f"CUDA_VISIBLE_DEVICES={a.gpu}:")
        for k in a.ks:
            print(f"  k={k}:")
            for i in range(k):
                print("    " + shlex.join(trial_command(a, k, i, Path(f"<work>/k{k}/t{i}"), model, cpus)))
        s = scale_factors(a.full_trial, a.train_samples, a.eval_samples, a.epochs)
        print(f"and extrapolate to a workshop trial ({a.full_trial['train_samples']} questions x "
              f"{a.full_trial['epochs']} epochs: training x {s['train']:g}, evaluation x {s['eval']:g})"
              if not a.full else "(whole workshop trials: nothing extrapolated)")
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save
    if model == "rehearsal":
        from hpo.tiny import ensure_rehearsal_model
        model = str(ensure_rehearsal_model())
    props = torch.cuda.get_device_properties(a.gpu)
    device_gib = props.total_memory / 2**30
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"fractional_{gpu_slug(props.name)}.json"
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="bench_fractional."))
    print(f"{props.name} ({device_gib:.0f} GiB): {a.ks} trials per GPU, model {a.model}, batch {a.batch_size}, "
          f"{a.train_samples} questions x {a.epochs} epoch(s) each; outputs in {work}", flush=True)
    entries = []
    for k in a.ks:
        if entries and not entries[-1]["ok"]:
            entries.append({"trials_per_gpu": k, "ok": False, "error": "not run: fewer trials per GPU failed"})
            continue
        entry = summarize(k, run_k(a, k, work, model, cpus), a.full_trial, device_gib)
        entries.append(entry)
        if entry["ok"]:
            print(f"k={k}: {entry['trials_per_gpu_hour']:.1f} measured trials/GPU-h (wall {entry['wall_s']:.0f} s); "
                  f"{entry['workshop_trials_per_gpu_hour']:.2f} workshop trials/GPU-h; peak memory "
                  f"{entry['peak_memory_gib']:.1f} GiB per trial, {entry['sum_peak_memory_gib']:.1f} of "
                  f"{device_gib:.0f} GiB together", flush=True)
        else:
            print(f"k={k}: FAILED — {entry['error']}", flush=True)
    base = entries[0] if entries[0]["ok"] and entries[0]["trials_per_gpu"] == 1 else None
    print("\n| trials per GPU | workshop trials / GPU-h | vs 1 per GPU | peak memory per trial | all trials |")
    print("|--:|--:|--:|--:|--:|")
    for e in entries:
        if not e["ok"]:
            print(f"| {e['trials_per_gpu']} | failed | | | {e['error'][:80]} |")
            continue
        gain = f"x {e['workshop_trials_per_gpu_hour'] / base['workshop_trials_per_gpu_hour']:.2f}" if base else "-"
        print(f"| {e['trials_per_gpu']} | {e['workshop_trials_per_gpu_hour']:.2f} | {gain} | "
              f"{e['peak_memory_gib']:.1f} GiB | {e['sum_peak_memory_gib']:.1f} of {device_gib:.0f} GiB |")
    doc = {"what": "trials per GPU-hour with k trials sharing one GPU (bench/bench_fractional.py)",
           "gpu": props.name, "gpu_memory_gib": device_gib, "profile": PROFILE, "model": a.model,
           "dataset": a.dataset, "batch_size": a.batch_size,
           "measured_trial": {"train_samples": a.train_samples, "eval_samples": a.eval_samples, "epochs": a.epochs},
           "workshop_trial": a.full_trial, "extrapolated": not a.full, "entries": entries}
    written, rc = save(out, doc)
    print(f"\nwrote {written}")
    return rc or (0 if all(e["ok"] for e in entries[:1]) else 1)


if __name__ == "__main__":
    sys.exit(main())
