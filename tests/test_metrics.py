"""EM/F1 on hand-computed cases, and left-padded generation (hpo.metrics)."""
import pytest

from hpo.metrics import clean_answer, generate_answers, squad_scores


@pytest.mark.parametrize("pred, refs, em, f1", [
    ("Tarmon", ["Tarmon"], 100, 100),
    ("the Tarmon", ["Tarmon"], 100, 100),             # articles are dropped
    ("tarmon.", ["Tarmon"], 100, 100),                # case and punctuation
    ("An  owl!", ["the owl"], 100, 100),              # articles, whitespace, punctuation
    ("red fox", ["red", "the red fox"], 100, 100),    # max over references
    ("blue sky", ["blue"], 0, 100 * 2 * (1 / 2 * 1) / (1 / 2 + 1)),   # P=1/2, R=1 -> F1=2/3
    ("red and gold", ["gold and red"], 0, 100),       # F1 is bag-of-tokens
    ("green", ["blue", "red"], 0, 0),
    # edge cases (SQuAD v1.1 F1 = 2PR/(P+R) over the bag of normalised tokens)
    ("", ["Tarmon"], 0, 0),                           # empty prediction: nothing right
    ("Tarmon", [""], 0, 0),                           # empty reference (a kept unanswerable question)
    ("", [""], 100, 100),                             # ... answered with the empty answer: right
    ("the", ["Tarmon"], 0, 0),                        # normalises to empty
    ("red red red", ["red"], 0, 100 * 2 * (1 / 3 * 1) / (1 / 3 + 1)),       # repeats count: P=1/3, R=1 -> 50
    ("red", ["red red"], 0, 100 * 2 * (1 * 1 / 2) / (1 + 1 / 2)),           # P=1, R=1/2 -> 66.7
    ("red red blue", ["red blue blue"], 0, 100 * 2 / 3),                    # overlap min(2,1)+min(1,2)=2: P=R=2/3
    ("the big red dog", ["a red fox"], 0, 100 * 2 * (1 / 3 * 1 / 2) / (1 / 3 + 1 / 2)),  # P=1/3, R=1/2 -> 40
    ("big red dog", ["red fox", "big red cat"], 0, 100 * 2 / 3),            # max over refs: P=R=2/3 beats 0.4
])
def test_em_f1_hand_computed(pred, refs, em, f1):
    s = squad_scores([pred], [refs])
    assert s["exact_match"] == pytest.approx(em)
    assert s["f1"] == pytest.approx(f1, abs=1e-3)


def test_scores_average_over_questions():
    s = squad_scores(["a cat", "dog", "x"], [["cat"], ["the dog"], ["y"]])
    assert s["exact_match"] == pytest.approx(200 / 3, abs=1e-3)


def test_clean_answer_stops_at_newline():
    assert clean_answer(" Tarmon\nQuestion: more") == "Tarmon"


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory, tiny_data, tiny_tokenizer):
    """The tiny model after three epochs at lr 5e-3, and validation prompts of different lengths. Its
    greedy answers depend on the question; the untrained model answers '::::::' to every prompt,
    so with it any padding gives the same text and a padding test cannot fail."""
    from transformers import AutoModelForCausalLM
    from hpo.data import encode_split, load_squad
    from hpo.trial import TrialConfig, run_trial
    out = tmp_path_factory.mktemp("trained")
    run_trial(TrialConfig(profile="tiny", train_samples=400, eval_samples=8, epochs=3, learning_rate=5e-3,
                          batch_size=16, num_threads=2, output_dir=str(out), save_model=True))
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    prompts = encode_split(tiny_tokenizer, load_squad(tiny_data, 10, 24, data_seed=0).validation, 128).prompts
    by_len = {}
    for p in prompts:                    # one prompt per length, the 8 most different ones
        by_len.setdefault(len(p), p)
    lengths = sorted(by_len)
    pick = [by_len[lengths[round(i * (len(lengths) - 1) / 7)]] for i in range(8)]
    assert len({len(p) for p in pick}) >= 4, lengths
    return model, pick


def _right_padded_answers(model, tok, prompts, max_new_tokens):
    """The bug, on purpose: generate_answers with RIGHT padding (the continuation of a shorter
    prompt then starts after pad tokens)."""
    import torch
    from hpo.metrics import clean_answer
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=pad, eos_token_id=tok.eos_token_id)
    return [clean_answer(tok.decode(row, skip_special_tokens=True)) for row in out[:, width:]]


def test_generation_is_left_padded(trained_tiny, tiny_tokenizer):
    """Batched answers equal one-at-a-time answers (non-empty, question-dependent): only true with
    left padding. Control: right padding changes the answers of the shorter prompts."""
    model, prompts = trained_tiny
    tok = tiny_tokenizer
    single = [generate_answers(model, tok, [p], batch_size=1, max_new_tokens=8)[0] for p in prompts]
    assert all(single), f"empty answers: the model learned nothing, nothing is tested: {single}"
    assert len(set(single)) >= 2, f"the same answer to every question: {single}"
    batched = generate_answers(model, tok, prompts, batch_size=len(prompts), max_new_tokens=8)
    assert batched == single
    right = _right_padded_answers(model, tok, prompts, max_new_tokens=8)
    width = max(len(p) for p in prompts)
    assert [r for r, p, s in zip(right, prompts, single) if len(p) == width] == \
        [s for p, s in zip(prompts, single) if len(p) == width]          # no padding, no difference
    changed = [(s, r) for r, p, s in zip(right, prompts, single) if len(p) < width and r != s]
    assert changed, f"right padding gave the same answers, so this test could not fail: {single}"
