"""Padding in the training batches: the share of real tokens, random batches vs --group-by-length.

Run:  python bench/bench_padding.py                     # workshop profile on the committed SQuAD v2 sample
      python bench/bench_padding.py --dataset /path/to/squad-v2-dev-sample.json   # a bigger sample
      python bench/bench_padding.py --profile tiny      # the laptop tier's generated set
      python bench/bench_padding.py --tokenizer bigscience/bloom-560m   # BLOOM's own tokenizer (hub or cache)
      python bench/bench_padding.py --out /tmp/padding.json --batch-sizes 2,8

Every training batch is padded to its longest question (hpo.data.PadCollator), and the model computes
every position, padding included. This script encodes the profile's training questions exactly as a
trial does (hpo.data: same prompt, max_length and truncation) and, for each batch size, computes the
share of real tokens among the positions of an epoch's batches:
  * random:  a seeded random order (what the Trainer does with --no-group-by-length);
  * grouped: the order of hpo.data.LengthGroupedSampler (--group-by-length, the default);
each averaged over --epochs epochs (the order changes every epoch). 1 / share is the compute spent
per real token, so grouped/random is the most the training steps can speed up (attention and padding
positions cost less than that in practice). Nothing is trained: it takes seconds.

The tokenizer is the tier's: the tiny profile's is the tiny BPE; the workshop profile's is
bigscience/bloom-560m's, which the project does not ship (configs/bloom-560m/ holds its config, no
tokenizer.json) — offline the default is the tokenizer of the workshop tier's rehearsal
(hpo.tiny.ensure_rehearsal_model: the tiny BPE), which splits English into ~3x more tokens than
BLOOM's, so more questions reach max_length than with the real one. The table says which one ran.
Writes bench/results/padding.json (never replacing a file with more entries: see bench/_results.py).
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "squad" / "squad-v2-sample.json"


def load_tokenizer(name: str):
    """(tokenizer, description). 'tiny': the tiny BPE, which the workshop tier's offline rehearsal uses too."""
    from transformers import AutoTokenizer
    if name == "tiny":
        from hpo.tiny import ensure_tiny_model
        return (AutoTokenizer.from_pretrained(str(ensure_tiny_model())),
                "tiny BPE (512 tokens; hpo.tiny — also the workshop rehearsal's; NOT BLOOM-560M's)")
    from hpo.data import DataError
    try:
        return AutoTokenizer.from_pretrained(name), name
    except (OSError, ValueError) as e:
        raise DataError(f"--tokenizer {name}: cannot load it ({str(e).splitlines()[0][:200]}); offline, use "
                        "--tokenizer tiny or a local directory with tokenizer.json") from e


def random_order(n: int, seed: int, epoch: int) -> list[int]:
    """A seeded random order of n examples (the plain random sampler's role)."""
    order = list(range(n))
    random.Random(f"random/{seed}/{epoch}").shuffle(order)
    return order


def measure(lengths: list[int], batch_size: int, seed: int, epochs: int) -> dict:
    """Real-token share of an epoch's batches, random vs grouped, averaged over `epochs` epochs."""
    from hpo.data import LengthGroupedSampler, real_token_share
    sampler = LengthGroupedSampler(lengths, batch_size, seed)
    rand = [real_token_share(lengths, random_order(len(lengths), seed, e), batch_size) for e in range(epochs)]
    grouped = [real_token_share(lengths, sampler.order(e), batch_size) for e in range(epochs)]
    real = sum(lengths)
    r, g = statistics.mean(rand), statistics.mean(grouped)
    return {"batch_size": batch_size, "random_real_token_share": r, "grouped_real_token_share": g,
            "random_padding_per_epoch": round(real / r - real), "grouped_padding_per_epoch": round(real / g - real),
            "padding_cut": 1 - (1 / g - 1) / (1 / r - 1) if r < 1 else 0.0,
            "max_step_speedup": g / r}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="workshop", choices=("workshop", "tiny"),
                    help="whose max_length / train_samples / data seed [default: workshop]")
    ap.add_argument("--dataset", help=f"[default: workshop: {FIXTURE.relative_to(ROOT)} (real SQuAD v2, "
                                      "committed); tiny: the generated set]")
    ap.add_argument("--tokenizer", help="'tiny', a hub id or a local model directory [default: the tier's "
                                        "tokenizer that runs offline: tiny]")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16", help="per-device batch sizes [default: 1,2,4,8,16]")
    ap.add_argument("--max-length", type=int, help="[default: the profile's]")
    ap.add_argument("--train-samples", type=int, help="[default: the profile's]")
    ap.add_argument("--seed", type=int, default=0, help="training seed: the batch order [default: 0]")
    ap.add_argument("--epochs", type=int, default=3, help="epochs to average over [default: 3]")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "padding.json"))
    a = ap.parse_args(argv)
    try:
        sizes = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batch-sizes: '{a.batch_sizes}' is not a comma list of integers")
    if not sizes or min(sizes) < 1:
        ap.error(f"--batch-sizes: need integers >= 1, got '{a.batch_sizes}'")
    if a.epochs < 1:
        ap.error(f"--epochs must be >= 1, got {a.epochs}")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save
    from hpo.config import PROFILES, TrialConfig
    from hpo.data import DataError, encode_split, load_squad
    from hpo.trial import resolve_model_and_data

    prof = PROFILES[a.profile].trial
    max_length = a.max_length or prof["max_length"]
    n_train = a.train_samples or prof["train_samples"]
    dataset = a.dataset or (str(FIXTURE) if a.profile == "workshop" else "tiny")
    if dataset == "tiny":
        _, dataset = resolve_model_and_data(TrialConfig(profile="tiny", model="tiny", dataset="tiny"))
    try:
        tok, tok_name = load_tokenizer(a.tokenizer or "tiny")
        splits = load_squad(dataset, n_train, prof["eval_samples"], TrialConfig().data_seed)
    except DataError as e:
        print(f"bench_padding.py: error: {e}", file=sys.stderr)
        return 2
    enc = encode_split(tok, splits.train, max_length)
    lengths = [len(f["input_ids"]) for f in enc.features]
    if len(lengths) < 2:
        print(f"bench_padding.py: error: {len(lengths)} training question(s) fit in {max_length} tokens; "
              "need at least 2", file=sys.stderr)
        return 2
    at_max = sum(n >= max_length for n in lengths)
    words = [len(f"{r['question']} {r['context']}".split()) for r in splits.train]
    print(f"profile {a.profile}: {len(lengths)} training questions of {splits.source}; tokenizer {tok_name}; "
          f"max_length {max_length}")
    print(f"lengths: mean {statistics.mean(lengths):.0f}, median {statistics.median(lengths):.0f}, "
          f"min {min(lengths)}, max {max(lengths)} tokens; {100 * at_max / len(lengths):.0f} % at max_length "
          f"(context cut); {sum(lengths) / sum(words):.2f} tokens per word of question + context")
    entries = [measure(lengths, b, a.seed, a.epochs) for b in sizes]
    print(f"\nreal-token share of the training batches (mean of {a.epochs} epochs, seed {a.seed}):\n")
    print("| batch size | random | grouped (--group-by-length) | padding per epoch: random → grouped "
          "| padding cut | compute per real token |")
    print("|--:|--:|--:|--:|--:|--:|")
    for e in entries:
        print(f"| {e['batch_size']} | {100 * e['random_real_token_share']:.1f} % | "
              f"{100 * e['grouped_real_token_share']:.1f} % | {e['random_padding_per_epoch']:,} → "
              f"{e['grouped_padding_per_epoch']:,} tokens | {100 * e['padding_cut']:.0f} % | "
              f"÷ {e['max_step_speedup']:.2f} |")
    doc = {"what": "share of real tokens among the positions of the training batches, random order vs "
                   "hpo.data.LengthGroupedSampler (bench/bench_padding.py)",
           "profile": a.profile, "dataset": splits.source, "tokenizer": tok_name, "max_length": max_length,
           "train_examples": len(lengths), "mean_length": statistics.mean(lengths), "max_length_share":
           at_max / len(lengths), "seed": a.seed, "epochs_averaged": a.epochs, "entries": entries}
    written, rc = save(a.out, doc)
    print(f"\nwrote {written}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
