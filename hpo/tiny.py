"""The laptop tier's model and data: a tiny BLOOM and a SQuAD-format set, built offline.

Run:  python -m hpo.tiny [--cache DIR]     # builds (or reuses) both and prints their paths

Nothing here touches the network. The data set is generated deterministically
(same bytes on every machine): short articles about invented countries, four
facts each, one question per fact, every answer a span of its context. The
validation questions carry several reference answers ("Tarmon" and "the city of
Tarmon"), as real SQuAD dev questions do, so EM/F1 take the max over references.
Validation countries never occur in training: the model has to find and copy a
span, not memorise facts — which is what makes the learning rate matter.

The model is a randomly initialised `BloomForCausalLM` (hidden 128, 2 layers,
~0.46 M parameters) with a byte-level BPE tokenizer trained on the generated
text with `tokenizers`, saved as an ordinary model directory
(`config.json`, `model.safetensors`, `tokenizer.json`), so the trial loads it
exactly like `bigscience/bloom-560m`: `AutoModelForCausalLM.from_pretrained(dir)`.

Both are built on first use into the cache (default `<repo>/.cache/tiny`, or
$HPO_CACHE/tiny) and reused; a build goes to a temporary directory first and is
renamed into place, so concurrent trials never see half-written files.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

# Bump when the generator or the model recipe changes: old caches are then ignored.
TINY_VERSION = "v1"
N_TRAIN_ARTICLES = 400      # x4 facts = 1600 training questions
N_VALID_ARTICLES = 50       # x4 facts = 200 validation questions
VOCAB_SIZE = 512

_SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sel", "du", "pa", "rin", "zo", "bel",
              "mar", "ni", "quo", "sa", "te", "vi", "gor", "lan", "pe", "shi", "ul", "fra"]
_LANGUAGES = ["Kesh", "Tolvan", "Mirish", "Ombri", "Veltic", "Saran", "Dulish", "Parnese",
              "Zorvic", "Belan", "Quoran", "Tessic"]
_COLOURS = ["red", "blue", "green", "gold", "white", "black", "orange", "purple", "silver", "grey"]
_ANIMALS = ["fox", "owl", "bear", "heron", "lynx", "otter", "falcon", "wolf", "stag", "tortoise",
            "eagle", "hare"]
_ADJ = ["red", "grey", "spotted", "golden", "snowy", "swift", "great", "little"]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    base = cache or os.environ.get("HPO_CACHE") or repo_root() / ".cache"
    return Path(base) / "tiny"


def _name(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(n)).capitalize()


def _article(rng: random.Random, country: str, idx: int, split: str) -> dict:
    """One article: four fact sentences in shuffled order, one question per fact."""
    capital = _name(rng, 2)
    language = rng.choice(_LANGUAGES)
    c1, c2 = rng.sample(_COLOURS, 2)
    flag = f"{c1} and {c2}"
    animal = f"{rng.choice(_ADJ)} {rng.choice(_ANIMALS)}"
    # (sentence, question, [reference answers]); the first reference is the training target.
    facts = [
        (f"The capital of {country} is the city of {capital}.",
         f"What is the capital of {country}?", [capital, f"the city of {capital}"]),
        (f"People in {country} speak the {language} language.",
         f"What language do people in {country} speak?", [language, f"the {language} language"]),
        (f"The flag of {country} is {flag}.",
         f"What colours are on the flag of {country}?", [flag]),
        (f"The national animal of {country} is the {animal}.",
         f"What is the national animal of {country}?", [animal, f"the {animal}"]),
    ]
    rng.shuffle(facts)
    intro = f"{country} is a small country."
    context = " ".join([intro] + [f[0] for f in facts])
    qas = []
    for k, (_, question, refs) in enumerate(facts):
        answers = []
        for text in dict.fromkeys(refs if split == "validation" else refs[:1]):  # dedupe, keep order
            start = context.find(text)
            assert start >= 0, (text, context)
            answers.append({"text": text, "answer_start": start})
        qas.append({"id": f"tiny-{split}-{idx:04d}-{k}", "question": question, "answers": answers})
    return {"title": country, "paragraphs": [{"context": context, "qas": qas}]}


def generate_squad(n_articles: int, split: str, seed: int, taken: set[str]) -> dict:
    """A SQuAD v1.1 JSON document; country names are unique across splits via `taken`."""
    rng = random.Random(f"{seed}-{split}")
    data = []
    while len(data) < n_articles:
        country = _name(rng, rng.choice([2, 3]))
        if country in taken:
            continue
        taken.add(country)
        data.append(_article(rng, country, len(data), split))
    return {"version": f"tiny-{TINY_VERSION}", "data": data}


def _atomic_build(target: Path, build) -> Path:
    """Run build(tmpdir) and rename the result to target; the first finisher wins."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)     # mkdtemp makes it 0700; others on a shared FS read it too
        try:
            os.rename(tmp, target)
        except OSError:          # another process renamed its build first: keep theirs
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_tiny_data(cache: str | os.PathLike | None = None) -> Path:
    """Directory with train.json and validation.json (SQuAD v1.1 format)."""
    def build(tmp: Path):
        taken: set[str] = set()
        for split, n in (("train", N_TRAIN_ARTICLES), ("validation", N_VALID_ARTICLES)):
            doc = generate_squad(n, split, seed=1234, taken=taken)
            (tmp / f"{split}.json").write_text(json.dumps(doc, indent=1))
    return _atomic_build(cache_dir(cache) / f"squad-{TINY_VERSION}", build)


def ensure_tiny_model(cache: str | os.PathLike | None = None) -> Path:
    """A tiny BLOOM model directory, loadable with from_pretrained; built on first use."""
    data_dir = ensure_tiny_data(cache)

    def build(tmp: Path):
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import BloomConfig, BloomForCausalLM, PreTrainedTokenizerFast

        corpus = []
        for split in ("train", "validation"):
            for art in json.loads((data_dir / f"{split}.json").read_text())["data"]:
                for p in art["paragraphs"]:
                    corpus.append(p["context"])
                    corpus += [f"Question: {qa['question']} Context: Answer:" for qa in p["qas"]]
        # Byte-level BPE, like BLOOM's own tokenizer: every string is encodable.
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        # Same special-token ids as bigscience/bloom-560m (unk 0, bos 1, eos 2, pad 3).
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                         eos_token="</s>", pad_token="<pad>")
        torch.manual_seed(0)
        model = BloomForCausalLM(BloomConfig(
            vocab_size=len(hf_tok), hidden_size=128, n_layer=2, n_head=4,
            bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
            pad_token_id=hf_tok.pad_token_id))
        model.save_pretrained(tmp)
        hf_tok.save_pretrained(tmp)
    return _atomic_build(cache_dir(cache) / f"bloom-tiny-{TINY_VERSION}", build)


def ensure_rehearsal_model(cache: str | os.PathLike | None = None, n_layer: int | None = None) -> Path:
    """The cluster tier, rehearsed offline: bigscience/bloom-560m's real architecture
    (configs/bloom-560m/config.json: 250,880-token vocabulary, hidden 1024, 24 layers, or
    n_layer of them) with random weights, STORED IN FP16 like the hub checkpoint, and the tiny
    tokenizer (BLOOM's special-token ids; every id fits the real vocabulary). It loads and trains
    through exactly the code path of `--profile workshop` — the precision traps included."""
    tiny = ensure_tiny_model(cache)
    name = f"bloom-560m-rehearsal-{TINY_VERSION}" + (f"-{n_layer}l" if n_layer else "")

    def build(tmp: Path):
        import torch
        from transformers import AutoTokenizer, BloomConfig, BloomForCausalLM
        conf = json.loads((repo_root() / "configs" / "bloom-560m" / "config.json").read_text())
        if n_layer:
            conf["n_layer"] = n_layer
        torch.manual_seed(0)
        model = BloomForCausalLM(BloomConfig(**conf))
        model.to(torch.float16).save_pretrained(tmp)         # the hub's dtype: fp16 on disk
        AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp)
    return _atomic_build(cache_dir(cache) / name, build)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", help="cache root (default: $HPO_CACHE or <repo>/.cache)")
    args = ap.parse_args(argv)
    print("data: ", ensure_tiny_data(args.cache))
    print("model:", ensure_tiny_model(args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
