"""The prompt, the labels and the loaders (hpo.data, hpo.tiny)."""
import json

import pytest

from hpo import tiny
from hpo.data import IGNORE_INDEX, DataError, encode_example, encode_split, load_squad


def labelled(enc):
    return [t for t in enc.labels if t != IGNORE_INDEX]


def test_labels_are_answer_plus_eos_only(tiny_tokenizer):
    tok = tiny_tokenizer
    q, c, a = "What is the capital of Ralo?", "Ralo is a small country. The capital of Ralo is Tarmon.", "Tarmon"
    enc = encode_example(tok, q, c, a, c.index(a), max_length=128)
    assert len(enc.input_ids) == len(enc.labels)
    # the labelled tokens decode to exactly " answer" + EOS, and they sit at the end
    assert tok.decode(labelled(enc)) == " Tarmon" + tok.eos_token
    assert enc.labels[:enc.prompt_len] == [IGNORE_INDEX] * enc.prompt_len
    assert enc.labels[enc.prompt_len:] == enc.input_ids[enc.prompt_len:]
    assert enc.input_ids[-1] == tok.eos_token_id
    # the prompt is the template, nothing of the answer leaks into it
    assert tok.decode(enc.input_ids[:enc.prompt_len]) == f"Question: {q} Context: {c} Answer:"


def test_truncation_cuts_context_never_answer(tiny_tokenizer):
    tok = tiny_tokenizer
    filler = " ".join(f"Sentence number {i} says nothing." for i in range(60))
    c = filler + " The capital of Ralo is the city of Tarmon. " + filler
    q, a = "What is the capital of Ralo?", "the city of Tarmon"
    full = encode_example(tok, q, c, a, c.index(a), max_length=10_000)
    enc = encode_example(tok, q, c, a, c.index(a), max_length=96)
    assert not full.context_truncated and enc.context_truncated
    assert len(enc.input_ids) <= 96
    assert tok.decode(labelled(enc)) == " the city of Tarmon" + tok.eos_token
    prompt = tok.decode(enc.input_ids[:enc.prompt_len])
    assert prompt.startswith(f"Question: {q} Context: ") and prompt.endswith(" Answer:")
    assert "Tarmon" in prompt                                   # the window kept the answer span


def test_example_whose_answer_cannot_fit_is_dropped_and_counted(tiny_tokenizer):
    rows = [{"question": "Q?", "context": "The answer is " + "x " * 200, "answers":
             {"text": ["x " * 150], "answer_start": [14]}, "id": "long"},
            {"question": "Q?", "context": "It is blue.", "answers": {"text": ["blue"], "answer_start": [6]},
             "id": "ok"}]
    split = encode_split(tiny_tokenizer, rows, max_length=64)
    assert split.dropped == 1 and split.ids == ["ok"]
    assert split.references == [["blue"]]


def _squad_doc(qas_per_para):
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "Ralo speaks Kesh. Its flag is red.", "qas": qas_per_para}]}]}


def test_squad_v2_unanswerable_are_skipped_and_counted(tmp_path):
    qas = [{"id": f"a{i}", "question": "Which language?", "answers": [{"text": "Kesh", "answer_start": 12}],
            "is_impossible": False} for i in range(6)]
    qas += [{"id": f"u{i}", "question": "Which river?", "answers": [], "is_impossible": True} for i in range(4)]
    d = tmp_path / "squad2"
    d.mkdir()
    for name in ("train.json", "dev.json"):
        (d / name).write_text(json.dumps(_squad_doc(qas)))
    splits = load_squad(str(d), None, None, data_seed=0)
    assert splits.skipped_unanswerable == {"train": 4, "validation": 4}
    assert all(r["id"].startswith("a") for r in splits.train)
    kept = load_squad(str(d), None, None, data_seed=0, keep_unanswerable=True)
    assert len(kept.train) == 10


def test_single_json_file_is_split_and_subsets_are_seeded(tiny_data):
    f = f"{tiny_data}/train.json"
    a = load_squad(f, 50, 20, data_seed=1)
    b = load_squad(f, 50, 20, data_seed=1)
    c = load_squad(f, 50, 20, data_seed=2)
    assert [r["id"] for r in a.train] == [r["id"] for r in b.train]
    assert [r["id"] for r in a.train] != [r["id"] for r in c.train]
    assert len(a.train) == 50 and len(a.validation) == 20
    assert not {r["id"] for r in a.train} & {r["id"] for r in a.validation}


def test_save_to_disk_directory(tmp_path, tiny_data):
    from datasets import Dataset, DatasetDict
    sp = load_squad(tiny_data, 30, 10, data_seed=0)
    cols = lambda rows: {k: [r[k] for r in rows] for k in ("id", "title", "context", "question", "answers")}
    DatasetDict(train=Dataset.from_dict(cols(sp.train)), validation=Dataset.from_dict(cols(sp.validation))) \
        .save_to_disk(str(tmp_path / "dd"))
    again = load_squad(str(tmp_path / "dd"), None, None, data_seed=0)
    assert [r["id"] for r in again.train] == [r["id"] for r in sp.train]
    assert again.validation[0]["answers"] == sp.validation[0]["answers"]


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"version": "1.1"}), "not a SQuAD-format file"),
    (json.dumps({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}), "malformed SQuAD JSON"),
])
def test_malformed_squad_json_is_a_clear_error(tmp_path, content, needle):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(DataError, match=needle):
        load_squad(str(f), None, None, data_seed=0)


def test_missing_dataset_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset path not found"):
        load_squad(str(tmp_path / "nope"), None, None, data_seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a save_to_disk"):
        load_squad(str(tmp_path / "empty"), None, None, data_seed=0)


def test_tiny_set_is_deterministic_spans_with_several_references(tmp_path):
    a = tiny.generate_squad(20, "validation", seed=1234, taken=set())
    b = tiny.generate_squad(20, "validation", seed=1234, taken=set())
    assert a == b
    multi = 0
    for art in a["data"]:
        for p in art["paragraphs"]:
            for qa in p["qas"]:
                for ans in qa["answers"]:
                    assert p["context"][ans["answer_start"]:].startswith(ans["text"])
                multi += len(qa["answers"]) > 1
    assert multi >= 20          # half the validation questions have two references


def test_tiny_train_and_validation_countries_are_disjoint(tiny_data):
    titles = lambda s: {a["title"] for a in json.loads(open(f"{tiny_data}/{s}.json").read())["data"]}
    assert not titles("train") & titles("validation")


def test_single_file_is_split_by_article_no_shared_context(tiny_data):
    sp = load_squad(f"{tiny_data}/train.json", None, 40, data_seed=0)
    assert len(sp.validation) >= 40
    titles_train, titles_val = {r["title"] for r in sp.train}, {r["title"] for r in sp.validation}
    contexts_train, contexts_val = {r["context"] for r in sp.train}, {r["context"] for r in sp.validation}
    assert titles_val and not titles_train & titles_val          # whole articles held out
    assert not contexts_train & contexts_val                     # no context trained on and then scored


def test_data_fingerprint_follows_the_data_seed_only(tiny_data):
    a = load_squad(tiny_data, 50, 20, data_seed=0)
    b = load_squad(tiny_data, 50, 20, data_seed=0)
    c = load_squad(tiny_data, 50, 20, data_seed=1)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 12
    assert a.fingerprint != c.fingerprint
    # the fingerprint is of the questions used: one question fewer changes it
    assert load_squad(tiny_data, 49, 20, data_seed=0).fingerprint != a.fingerprint


def test_kept_unanswerable_questions_train_on_the_empty_answer(tmp_path, tiny_tokenizer):
    qas = [{"id": "a0", "question": "Which language?", "answers": [{"text": "Kesh", "answer_start": 12}]},
           {"id": "u0", "question": "Which river?", "answers": [], "is_impossible": True}]
    d = tmp_path / "squad2"
    d.mkdir()
    for name in ("train.json", "dev.json"):
        (d / name).write_text(json.dumps(_squad_doc(qas)))
    kept = load_squad(str(d), None, None, data_seed=0, keep_unanswerable=True)
    enc = encode_split(tiny_tokenizer, kept.validation, 64)          # used to raise IndexError
    by_id = dict(zip(enc.ids, zip(enc.features, enc.references)))
    feat, refs = by_id["u0"]
    assert refs == [""]
    assert [t for t in feat["labels"] if t != IGNORE_INDEX] == [tiny_tokenizer.eos_token_id]
    feat, refs = by_id["a0"]
    assert refs == ["Kesh"] and len([t for t in feat["labels"] if t != IGNORE_INDEX]) >= 2


def test_pad_collator_pads_right_with_pad_id_mask_0_and_labels_minus_100(tiny_tokenizer, tiny_model):
    """Training/eval batches: each row is the example, then padding: pad id, attention 0, label -100,
    so padding adds nothing to the loss -- a batch gives the loss (sum and token count) of its examples."""
    import torch
    from transformers import AutoModelForCausalLM
    from hpo.data import PadCollator
    from hpo.trial import answer_token_loss
    tok = tiny_tokenizer
    long_c, long_a = "Ralo is a small country. Its capital is the city of Tarmon, by the sea.", "the city of Tarmon"
    rows = [{"question": "What is the capital of Ralo?", "context": long_c, "id": "long",
             "answers": {"text": [long_a], "answer_start": [long_c.index(long_a)]}},
            {"question": "Flag?", "context": "It is blue.", "answers": {"text": ["blue"], "answer_start": [6]},
             "id": "short"}]
    feats = encode_split(tok, rows, max_length=128).features
    lens = [len(f["input_ids"]) for f in feats]
    assert lens[0] > lens[1] and tok.pad_token_id != IGNORE_INDEX
    batch = PadCollator(tok.pad_token_id)(feats)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype == torch.long and tuple(t.shape) == (2, max(lens)) for t in batch.values())
    for i, (f, n) in enumerate(zip(feats, lens)):
        pad = max(lens) - n
        assert batch["input_ids"][i].tolist() == f["input_ids"] + [tok.pad_token_id] * pad
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * pad
        assert batch["labels"][i].tolist() == f["labels"] + [IGNORE_INDEX] * pad
    # the loss: every answer token (and EOS) of both examples counted once, padding never
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    (s1, n1), (s2, n2) = (answer_token_loss(model, feats, PadCollator(tok.pad_token_id), bs) for bs in (1, 2))
    assert n1 == n2 == sum(sum(t != IGNORE_INDEX for t in f["labels"]) for f in feats)
    assert s2 == pytest.approx(s1, rel=1e-5)
