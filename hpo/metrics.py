"""Exact match and F1 for generative QA: greedy generation + SQuAD v1.1 scoring.

Run:  python -m hpo.metrics "the blue" "Blue" "red"     # EM/F1 of one prediction vs references

Scoring is torchmetrics' SQuAD metric (the official v1.1 normalisation: lower case,
no punctuation, no articles a/an/the, collapsed whitespace; max over all reference
answers; 0-100). It runs offline — `evaluate.load("squad")` needs the hub.

Generation pads on the LEFT: a decoder-only model continues the last position of
each row, so right padding would make it continue after pad tokens (a common bug in decoder-only QA code).
"""
from __future__ import annotations


def squad_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in 0-100, each the mean over questions of the max over references."""
    from torchmetrics.functional.text import squad
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    preds = [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)]
    target = [{"answers": {"text": list(r), "answer_start": [0] * len(r)}, "id": str(i)}
              for i, r in enumerate(references)]
    out = squad(preds, target)
    return {"exact_match": float(out["exact_match"]), "f1": float(out["f1"])}


def clean_answer(text: str) -> str:
    """The generated continuation up to the first newline (the model may ramble on)."""
    return text.split("\n", 1)[0].strip()


def generate_answers(model, tokenizer, prompts: list[list[int]], batch_size: int = 16,
                     max_new_tokens: int = 32, synced_gpus: bool = False) -> list[str]:
    """Greedy answers for prompt token ids, batched with left padding."""
    import torch
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=1, pad_token_id=pad,
                                     eos_token_id=tokenizer.eos_token_id, synced_gpus=synced_gpus)
            for row in out[:, width:]:
                answers.append(clean_answer(tokenizer.decode(row, skip_special_tokens=True)))
    finally:
        model.train(was_training)
    return answers


def main(argv=None) -> int:
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m hpo.metrics PREDICTION REFERENCE [REFERENCE ...]", file=sys.stderr)
        return 2
    print(squad_scores([args[0]], [args[1:]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
