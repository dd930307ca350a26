"""SQuAD as generative QA: loading, the prompt, and the labels.

Run:  python -m hpo.data --dataset squad --model bigscience/bloom-560m   # prints one encoded example

Loading (`load_squad`): `--dataset` may be
  * a hub id (`squad`, `rajpurkar/squad`, `squad_v2`) — `datasets.load_dataset`,
    which honours HF_HUB_OFFLINE=1 and the HF cache (HF_HOME / HF_DATASETS_CACHE);
  * a SQuAD-format JSON file (v1.1 or v2: {"data": [{"paragraphs": [{"context", "qas"}]}]})
    — its questions are split, seeded, into train and validation;
  * a directory holding SQuAD JSON files `train.json` + `validation.json` (or `dev.json`,
    or the official `train-v1.1.json` + `dev-v1.1.json`), e.g. the tiny set;
  * a directory written by `DatasetDict.save_to_disk` (with train and validation splits).
SQuAD v2 unanswerable questions are skipped (and counted) unless keep_unanswerable.

Encoding (`encode_example`), the part most often got wrong in QA fine-tuning code:
    input  = prompt + " " + answer + EOS          prompt = "Question: <q> Context: <c> Answer:"
    labels = -100 on every prompt token and on padding; the answer tokens and EOS keep their ids
so the loss is the model's loss on the answer alone, given the question and context.
If the example is longer than max_length, only the *context* is cut — to a window
that still contains the answer span — never the question, the answer or EOS. An example
whose question + answer cannot fit at all is dropped, and the caller logs how many.

Batching (`PadCollator`, `LengthGroupedSampler`): each training batch is padded to its longest
example. SQuAD contexts vary a lot in length, so random batches spend many positions on padding;
`--group-by-length` (on by default) batches questions of similar length together, in an order fixed
by the training seed and the epoch. `python bench/bench_padding.py` measures the share of real tokens
both ways.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

IGNORE_INDEX = -100          # torch.nn.CrossEntropyLoss skips these positions
MIN_CONTEXT_TOKENS = 8       # below this the "context" is useless: drop the example instead


class DataError(RuntimeError):
    """A dataset or model that cannot be found or read; the message says how to fix it."""


def prompt_parts(question: str) -> tuple[str, str]:
    """The text before and after the context. Prompt = before + context + after."""
    return f"Question: {question.strip()} Context: ", " Answer:"


def answer_text(answer: str) -> str:
    """One space after "Answer:", as in the prompt template; an unanswerable question (SQuAD v2,
    kept with --keep-unanswerable) has the empty answer: the model must stop at once (EOS)."""
    return " " + answer.strip() if answer.strip() else ""


# --------------------------------------------------------------------------- loading
def _flatten_squad_json(doc: dict, source: str) -> list[dict]:
    """SQuAD JSON (v1.1 or v2) -> flat rows {id, title, context, question, answers{text, answer_start}}."""
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{source}: not a SQuAD-format file: expected a JSON object with a 'data' list "
                        "of articles ({'title', 'paragraphs': [{'context', 'qas': [...]}]})")
    rows = []
    try:
        for a_i, art in enumerate(doc["data"]):
            for p_i, para in enumerate(art["paragraphs"]):
                context = para["context"]
                for qa in para["qas"]:
                    answers = qa.get("answers") or []
                    rows.append({
                        "id": str(qa["id"]), "title": art.get("title", ""), "context": context,
                        "question": qa["question"],
                        "answers": {"text": [a["text"] for a in answers],
                                    "answer_start": [int(a.get("answer_start", -1)) for a in answers]},
                        "is_impossible": bool(qa.get("is_impossible", False)) or not answers,
                    })
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{source}: malformed SQuAD JSON in article {a_i}, paragraph {p_i}: "
                        f"missing or bad field {e!s}") from e
    if not rows:
        raise DataError(f"{source}: SQuAD file holds no questions")
    return rows


def _read_squad_file(path: Path) -> list[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                        "expected a SQuAD v1.1/v2 file") from e
    return _flatten_squad_json(doc, str(path))


def looks_like_path(name: str) -> bool:
    """"squad" and "bigscience/bloom-560m" are hub ids; "./x", "/x", "~/x", "a/b/c", "x.json" are paths."""
    return name.startswith((".", "/", "~")) or name.endswith(".json") or name.count("/") > 1


_TRAIN_NAMES = ("train.json", "train-v1.1.json", "train-v2.0.json")
_VALID_NAMES = ("validation.json", "dev.json", "dev-v1.1.json", "dev-v2.0.json")


def _rows_from_hf(ds) -> list[dict]:
    out = []
    for r in ds:
        ans = r["answers"]
        out.append({"id": str(r["id"]), "title": r.get("title", ""), "context": r["context"],
                    "question": r["question"],
                    "answers": {"text": list(ans["text"]), "answer_start": list(ans["answer_start"])},
                    "is_impossible": len(ans["text"]) == 0})
    return out


def split_by_article(rows: list[dict], data_seed: int, eval_count: int) -> tuple[list[dict], list[dict]]:
    """One SQuAD file -> (train, validation) with whole *articles* held out for validation, so no
    context is seen in training and then scored: seeded article order, validation articles taken
    until they hold >= eval_count questions (at most half of all questions)."""
    articles: dict[str, list[dict]] = {}
    for r in rows:                      # title = article; files without titles: one article per context
        articles.setdefault(r["title"] or r["context"], []).append(r)
    names = sorted(articles)
    random.Random(data_seed).shuffle(names)
    want = min(max(eval_count, 1), len(rows) // 2)
    val_names = []
    for name in names[:-1]:             # at least one article stays for training
        if sum(len(articles[n]) for n in val_names) >= want:
            break
        val_names.append(name)
    held = set(val_names)
    val = [r for n in val_names for r in articles[n]]
    train = [r for n in names if n not in held for r in articles[n]]
    return train, val


def _load_raw(dataset: str, data_seed: int, eval_count: int) -> tuple[list[dict], list[dict], str]:
    """(train rows, validation rows, description of the source)."""
    path = Path(dataset).expanduser()
    if path.is_file():
        train, val = split_by_article(_read_squad_file(path), data_seed, eval_count)
        if not train or not val:
            raise DataError(f"{path}: one article only; a single file needs several articles to split "
                            "into train and validation (or pass a directory with train.json + validation.json)")
        return train, val, f"{path} (one file, split by article {len(train)}/{len(val)})"
    if path.is_dir():
        if (path / "dataset_dict.json").exists():
            from datasets import load_from_disk
            dd = load_from_disk(str(path))
            val_name = next((s for s in ("validation", "dev", "test") if s in dd), None)
            if "train" not in dd or val_name is None:
                raise DataError(f"{path}: saved DatasetDict needs 'train' and 'validation' splits, has {list(dd)}")
            return _rows_from_hf(dd["train"]), _rows_from_hf(dd[val_name]), f"{path} (save_to_disk)"
        tr = next((path / n for n in _TRAIN_NAMES if (path / n).exists()), None)
        va = next((path / n for n in _VALID_NAMES if (path / n).exists()), None)
        if tr is None or va is None:
            raise DataError(f"{path}: directory has neither a save_to_disk DatasetDict (dataset_dict.json) "
                            f"nor SQuAD JSON files ({'/'.join(_TRAIN_NAMES)} and {'/'.join(_VALID_NAMES)})")
        return _read_squad_file(tr), _read_squad_file(va), str(path)
    if looks_like_path(dataset):
        raise DataError(f"dataset path not found: {dataset}\n  give a SQuAD JSON file, a directory with "
                        "train.json + validation.json, a save_to_disk directory, or a hub id such as 'squad'")
    # A hub id.
    try:
        from datasets import load_dataset
        dd = load_dataset(dataset)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "could not get it"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        raise DataError(
            f"could not load dataset '{dataset}' from the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE=1: cache only)' if offline else ''}: {type(e).__name__}: {str(e)[:300]}\n"
            f"  looked in the HF cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and "
            f"{'not ' if offline else ''}on the hub.\n"
            "  fix: on a machine with internet run `python -c \"import datasets; datasets.load_dataset('squad')\"` "
            "with the same HF_HOME, or download train-v1.1.json/dev-v1.1.json and pass --dataset DIR") from e
    val_name = "validation" if "validation" in dd else next(iter(s for s in dd if s != "train"), None)
    if "train" not in dd or val_name is None:
        raise DataError(f"hub dataset '{dataset}' has splits {list(dd)}; need train and validation")
    return _rows_from_hf(dd["train"]), _rows_from_hf(dd[val_name]), f"hub:{dataset}"


@dataclass
class SquadSplits:
    train: list[dict]
    validation: list[dict]
    source: str
    skipped_unanswerable: dict = field(default_factory=dict)   # split -> count

    @property
    def fingerprint(self) -> str:
        """A short hash of the train and validation question ids (in order): two runs with the same
        fingerprint trained and were scored on the same questions."""
        text = "\n".join(r["id"] for r in self.train) + "\n|\n" + "\n".join(r["id"] for r in self.validation)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_squad(dataset: str, train_samples: int | None, eval_samples: int | None, data_seed: int,
               keep_unanswerable: bool = False) -> SquadSplits:
    """Seeded subsets of train and validation (None = all), unanswerable questions skipped.

    data_seed (TrialConfig.data_seed) picks the subsets and, for a single file, the split. It is
    NOT the training seed: every trial of every method, whatever its --seed, sees the same questions."""
    train, val, source = _load_raw(dataset, data_seed, eval_samples or 100)
    skipped = {}
    out = {}
    for name, rows in (("train", train), ("validation", val)):
        if not keep_unanswerable:
            kept = [r for r in rows if not r["is_impossible"]]
            skipped[name] = len(rows) - len(kept)
            rows = kept
        n = train_samples if name == "train" else eval_samples
        if n is not None and n < len(rows):
            # Seeded, so every trial of a search sees the same examples.
            rows = random.Random(data_seed).sample(rows, n)
        out[name] = rows
    if not out["train"] or not out["validation"]:
        raise DataError(f"{source}: no answerable questions left in train or validation")
    return SquadSplits(out["train"], out["validation"], source, skipped)


# --------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int             # input_ids[:prompt_len] is the prompt (what generation gets)
    context_truncated: bool


def _context_window(tokenizer, context: str, answer_start: int, answer: str, budget: int):
    """Context token ids cut to `budget` tokens, keeping the answer span inside the window."""
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) <= budget:
        return ids, False
    if answer_start < 0:                                   # unknown position: keep the beginning
        return ids[:budget], True
    answer_end = answer_start + len(answer)
    first = next((i for i, (s, e) in enumerate(offsets) if e > answer_start), 0)
    last = next((i for i, (s, e) in enumerate(offsets) if e >= answer_end), len(ids) - 1)
    if last - first + 1 > budget:                          # the answer alone is longer than the window
        return None, True
    # Centre the window on the answer, then clamp it so the answer stays inside
    # (start <= first, start + budget > last) and the window inside the context.
    start = (first + last) // 2 - budget // 2
    start = min(max(start, last - budget + 1), first)
    start = min(max(start, 0), len(ids) - budget)
    return ids[start:start + budget], True


def encode_example(tokenizer, question: str, context: str, answer: str, answer_start: int,
                   max_length: int) -> Encoded | None:
    """Prompt + answer + EOS with prompt-masked labels, or None if the answer cannot fit."""
    before, after = prompt_parts(question)
    ids_before = tokenizer(before, add_special_tokens=False)["input_ids"]
    ids_after = tokenizer(after, add_special_tokens=False)["input_ids"]
    ids_answer = tokenizer(answer_text(answer), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    budget = max_length - len(ids_before) - len(ids_after) - len(ids_answer)
    if budget < MIN_CONTEXT_TOKENS:
        return None
    ids_context, truncated = _context_window(tokenizer, context, answer_start, answer, budget)
    if ids_context is None:
        return None
    prompt = ids_before + ids_context + ids_after
    return Encoded(input_ids=prompt + ids_answer,
                   labels=[IGNORE_INDEX] * len(prompt) + ids_answer,
                   prompt_len=len(prompt), context_truncated=truncated)


@dataclass
class EncodedSplit:
    features: list[dict]        # input_ids, attention_mask, labels (unpadded)
    prompts: list[list[int]]    # prompt ids, for generation
    references: list[list[str]] # all reference answers, for EM/F1
    ids: list[str]
    dropped: int                # answer could not fit in max_length
    truncated: int              # context was cut (answer kept)
    tokens: int                 # non-padding tokens, for tokens/s


def encode_split(tokenizer, rows: list[dict], max_length: int) -> EncodedSplit:
    out = EncodedSplit([], [], [], [], 0, 0, 0)
    for r in rows:
        # Train on the first reference answer; score against all of them. An unanswerable
        # question (kept with --keep-unanswerable) has none: its target is the empty answer.
        texts, starts = r["answers"]["text"], r["answers"]["answer_start"]
        enc = encode_example(tokenizer, r["question"], r["context"], texts[0] if texts else "",
                             starts[0] if starts else -1, max_length)
        if enc is None:
            out.dropped += 1
            continue
        out.truncated += enc.context_truncated
        out.features.append({"input_ids": enc.input_ids, "attention_mask": [1] * len(enc.input_ids),
                             "labels": enc.labels})
        out.prompts.append(enc.input_ids[:enc.prompt_len])
        out.references.append(list(texts) or [""])
        out.ids.append(r["id"])
        out.tokens += len(enc.input_ids)
    return out


class PadCollator:
    """Dynamic right padding for training/eval loss: pad ids with pad_token_id, labels with -100.

    It also counts what it built: `real_tokens` (the examples' own tokens) and `slots` (batch size
    x padded width, summed over every batch), so real_tokens / slots is the share of the computed
    positions that were real tokens, not padding (`real_token_share`). The trial gives the Trainer
    its own collator, so the count is over the training batches alone (in this process: the
    dataloader runs in the main process, dataloader_num_workers=0)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id
        self.real_tokens = 0
        self.slots = 0

    @property
    def real_token_share(self) -> float | None:
        """Real tokens / padded positions over every batch so far (None before the first batch)."""
        return self.real_tokens / self.slots if self.slots else None

    def __call__(self, batch: list[dict]) -> dict:
        import torch
        width = max(len(b["input_ids"]) for b in batch)
        self.real_tokens += sum(len(b["input_ids"]) for b in batch)
        self.slots += width * len(batch)
        def pad(key, value):
            return torch.tensor([b[key] + [value] * (width - len(b[key])) for b in batch], dtype=torch.long)
        return {"input_ids": pad("input_ids", self.pad_token_id), "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", IGNORE_INDEX)}


# --------------------------------------------------------------------------- batches of similar length
def real_token_share(lengths: list[int], order: list[int], batch_size: int) -> float:
    """The share of real tokens among the positions a model computes when the examples are taken
    in `order`, `batch_size` at a time, each batch padded to its longest example (what PadCollator
    does): sum of lengths / sum over batches of (batch size x longest length). 1.0 = no padding."""
    if not order:
        raise ValueError("real_token_share: no examples")
    real = slots = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i:i + batch_size]]
        real += sum(batch)
        slots += max(batch) * len(batch)
    return real / slots


def megabatch_batches(n_examples: int, batch_size: int) -> int:
    """How many batches one group ("megabatch") of LengthGroupedSampler holds: 50, or fewer so a
    small training set still has >= 4 groups (the Trainer's own rule), but at least 2 — a group of
    one batch would group nothing."""
    return max(2, min(50, n_examples // (4 * batch_size)))


class LengthGroupedSampler:
    """Training order with less padding: batches of examples of similar length (--group-by-length).

    Each batch is padded to its longest example, so a batch that mixes a 150-token question with a
    500-token one spends most of the short one's positions on padding. Per epoch:
      1. shuffle every example (seeded by the training seed and the epoch);
      2. the last len % batch_size of them form the epoch's final, smaller batch (kept last, so every
         batch the DataLoader cuts, batch_size examples at a time, is one of the batches built here);
      3. cut the rest into groups of `megabatch_batches` batches, sort each group by length and cut
         it into batches: examples of similar length share a batch, but which examples meet still
         changes from epoch to epoch;
      4. shuffle the batches (so the steps do not run long-to-short inside each group), then move the
         longest one to the front: if a batch does not fit in memory, the first step says so, not
         one an hour into the run.
    Every example is seen exactly once per epoch. The order depends only on (seed, epoch) — not on
    any random state — so the same seed gives the same order, every rank of a data-parallel run
    agrees on it, and a trial resumed from a checkpoint at an epoch boundary continues with exactly
    the order the uninterrupted run would have used (the Trainer calls set_epoch before each epoch).

    batch_size is the per-device batch (what one forward pass pads together); with several devices
    the Trainer hands consecutive batches to different devices.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.seed = list(lengths), int(batch_size), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        """The indices of epoch `epoch`, in training order."""
        n, b = len(self.lengths), self.batch_size
        # A string seed is hashed the same way on every machine and Python run (not PYTHONHASHSEED).
        rng = random.Random(f"group-by-length/{self.seed}/{epoch}")
        idx = list(range(n))
        rng.shuffle(idx)
        body, tail = idx[:n - n % b], idx[n - n % b:]
        group = megabatch_batches(n, b) * b
        batches = []
        for start in range(0, len(body), group):
            # longest first; a tie keeps the shuffled order (sorted is stable)
            chunk = sorted(body[start:start + group], key=lambda i: -self.lengths[i])
            batches += [chunk[k:k + b] for k in range(0, len(chunk), b)]
        rng.shuffle(batches)
        if batches:
            longest = max(range(len(batches)), key=lambda k: max(self.lengths[i] for i in batches[k]))
            batches.insert(0, batches.pop(longest))
        return [i for batch in batches for i in batch] + tail

    def __iter__(self):
        order = self.order(self.epoch)
        yield from order
        # Like accelerate's seedable sampler: a second pass without set_epoch gets the next epoch's order.
        self.epoch += 1


def main(argv=None) -> int:
    import argparse
    from transformers import AutoTokenizer
    ap = argparse.ArgumentParser(description="Show how one SQuAD example is encoded")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--max-length", type=int, default=512)
    a = ap.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(a.model)
    splits = load_squad(a.dataset, 5, 5, data_seed=0)
    enc = encode_split(tok, splits.train[:1], a.max_length)
    f = enc.features[0]
    print("text  :", tok.decode(f["input_ids"]))
    print("target:", tok.decode([t for t in f["labels"] if t != IGNORE_INDEX]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
