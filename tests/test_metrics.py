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


def test_generation_is_left_padded(tiny_model, tiny_tokenizer):
    """Batched answers equal one-at-a-time answers: only true with left padding."""
    from transformers import AutoModelForCausalLM
    import torch
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = tiny_tokenizer
    prompts = [tok(t).input_ids for t in ("Question: Who? Context: A long context here, really long. Answer:",
                                          "Question: What? Context: Short. Answer:")]
    assert len(prompts[0]) != len(prompts[1])
    batched = generate_answers(model, tok, prompts, batch_size=2, max_new_tokens=6)
    single = [generate_answers(model, tok, [p], batch_size=1, max_new_tokens=6)[0] for p in prompts]
    assert batched == single
