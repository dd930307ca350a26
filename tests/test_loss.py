"""The answer-token loss (hpo/loss.py) is transformers' causal-LM loss, computed without full logits.

Run: .venv/bin/python -m pytest -q tests/test_loss.py          (CPU, seconds; GPU tests skip without CUDA/liger)
"""
import json

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from hpo.bloom_attention import set_attention
from hpo.loss import (AnswerLossBloomForCausalLM, causal_lm_loss, liger_fused_ce, set_answer_loss)

VOCAB, HIDDEN = 3000, 64


def random_case(seed=0, batch=3, length=20, answer=5):
    """Hidden states, an LM head and labels -100 except on each row's last `answer` tokens."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, HIDDEN, generator=g, requires_grad=True)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=g) * 0.3)
    labels = torch.randint(0, VOCAB, (batch, length), generator=g)
    labels[:, : length - answer] = -100
    labels[1, -2:] = -100                       # a shorter (right-padded) row
    return hidden, head, labels


def loss_and_grads(fn, hidden, head):
    hidden.grad, head.weight.grad = None, None
    loss = fn()
    loss.backward()
    return loss.detach(), hidden.grad.clone(), head.weight.grad.clone()


@pytest.mark.parametrize("num_items", [None, 37])
@pytest.mark.parametrize("chunk_rows", [1024, 4])
def test_plain_loss_equals_transformers_loss(num_items, chunk_rows):
    hidden, head, labels = random_case()
    n = None if num_items is None else torch.tensor(num_items)
    ref = loss_and_grads(lambda: ForCausalLMLoss(head(hidden), labels, VOCAB, num_items_in_batch=n), hidden, head)
    ours = loss_and_grads(lambda: causal_lm_loss(hidden, head, labels, num_items_in_batch=n, mode="plain",
                                                 chunk_rows=chunk_rows), hidden, head)
    assert abs(ref[0] - ours[0]) <= 1e-5 * abs(ref[0])
    for r, o in zip(ref[1:], ours[1:]):
        assert (r - o).abs().max() <= 1e-5 * r.abs().max()


def test_chunks_recompute_their_logits_instead_of_keeping_them():
    """With chunks, the LM head only ever sees chunk_rows positions, and runs twice per chunk (forward +
    recomputation in the backward pass): the logits of the whole batch never exist at once."""
    hidden, head, labels = random_case(length=30, answer=12)
    seen = []
    head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    loss = causal_lm_loss(hidden, head, labels, mode="plain", chunk_rows=8)
    n_forward = len(seen)
    loss.backward()
    labelled = int((labels[:, 1:] != -100).sum())
    assert max(seen) <= 8 and sum(seen[:n_forward]) == labelled      # only the labelled positions
    assert len(seen) == 2 * n_forward == 2 * -(-labelled // 8)


def test_no_labelled_token_gives_what_transformers_gives():
    hidden, head, labels = random_case()
    labels[:] = -100
    assert torch.isnan(causal_lm_loss(hidden, head, labels, mode="plain"))          # 0/0, as transformers
    assert torch.isnan(ForCausalLMLoss(head(hidden), labels, VOCAB))
    assert causal_lm_loss(hidden, head, labels, num_items_in_batch=torch.tensor(4), mode="plain") == 0


# ----------------------------------------------------------------------------- on the model
@pytest.fixture()
def tiny_batch(tiny_model, tiny_tokenizer, tiny_data):
    from transformers import AutoModelForCausalLM
    from hpo.data import PadCollator, encode_split, load_squad
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    feats = encode_split(tiny_tokenizer, load_squad(tiny_data, 8, 4, 0).train, 128).features
    collate = PadCollator(tiny_tokenizer.pad_token_id)
    return model, feats, collate


def test_model_loss_and_every_gradient_equal_transformers(tiny_batch):
    """What the Trainer calls: model(**batch, num_items_in_batch=...). Tied embedding/LM head included."""
    model, feats, collate = tiny_batch
    batch = collate(feats[:6])
    n_items = (batch["labels"][:, 1:] != -100).sum()
    results = {}
    for mode in ("off", "plain"):
        assert set_answer_loss(model, mode) == mode
        for n in (None, n_items + 5):               # + 5: as if other batches were accumulated
            model.zero_grad(set_to_none=True)
            out = model(**batch, num_items_in_batch=n)
            out.loss.backward()
            assert (out.logits is None) == (mode == "plain")
            results[mode, n is None] = (out.loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()})
    for per_batch in (True, False):
        (ref_loss, ref), (loss, grads) = results["off", per_batch], results["plain", per_batch]
        assert abs(ref_loss - loss) <= 1e-6 * abs(ref_loss)
        for k, g in ref.items():
            assert (g - grads[k]).abs().max() <= 1e-5 * g.abs().max(), k
    assert results["off", True][0] != results["off", False][0]     # the divisor really differs


def test_eval_loss_of_the_trial_is_unchanged(tiny_batch):
    from hpo.trial import answer_token_loss
    model, feats, collate = tiny_batch
    set_attention(model, "eager")
    set_answer_loss(model, "off")
    ref_sum, ref_n = answer_token_loss(model, feats, collate, 3)
    set_attention(model, "sdpa")
    set_answer_loss(model, "auto")
    loss_sum, n = answer_token_loss(model, feats, collate, 3)
    assert n == ref_n > 0 and abs(loss_sum - ref_sum) <= 1e-5 * ref_sum


def test_without_labels_the_model_returns_its_logits(tiny_batch):
    model, feats, collate = tiny_batch
    batch = collate(feats[:2])
    set_answer_loss(model, "off")
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        set_answer_loss(model, "auto")
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(ref, out)


def test_a_saved_model_is_a_plain_bloom_checkpoint(tiny_batch, tmp_path):
    from transformers import AutoModelForCausalLM, BloomForCausalLM
    model, _, _ = tiny_batch
    set_answer_loss(model, "auto")
    assert isinstance(model, AnswerLossBloomForCausalLM)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BloomForCausalLM"]
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(back) is BloomForCausalLM
    assert torch.equal(back.lm_head.weight, model.lm_head.weight)


def test_other_models_and_bad_modes():
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    assert set_answer_loss(gpt2, "auto") == "model default" and type(gpt2) is GPT2LMHeadModel
    assert set_attention(gpt2, "sdpa") == "model default"
    with pytest.raises(ValueError, match="auto, fused, plain, off"):
        set_answer_loss(gpt2, "fast")


@pytest.mark.skipif(liger_fused_ce() is not None, reason="liger-kernel is installed")
def test_fused_mode_without_liger_says_how_to_install():
    hidden, head, labels = random_case()
    with pytest.raises(RuntimeError, match=r"pip install -e \.\[gpu\]"):
        causal_lm_loss(hidden, head, labels, mode="fused")


# ----------------------------------------------------------------------------- GPU + liger-kernel
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or liger_fused_ce() is None,
                    reason="needs a CUDA GPU and liger-kernel (pip install -e .[gpu])")
@pytest.mark.parametrize("autocast", [False, True])
def test_fused_loss_equals_plain_loss_on_gpu(autocast):
    """BLOOM-560M's LM head size (250,880 x 1024), 4 x 512 positions, a third of them labelled."""
    g = torch.Generator(device="cuda").manual_seed(0)
    vocab, hid = 250880, 1024
    head = torch.nn.Linear(hid, vocab, bias=False).cuda()
    with torch.no_grad():
        head.weight.normal_(0, 0.02, generator=g)
    hidden = torch.randn(4, 512, hid, device="cuda", generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (4, 512), device="cuda", generator=g)
    labels[:, :340] = -100
    n = (labels[:, 1:] != -100).sum() + 3
    out, peak = {}, {}
    for mode in ("plain", "fused"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            fn = (lambda: causal_lm_loss(hidden, head, labels, num_items_in_batch=n, mode=mode))
            out[mode] = loss_and_grads(fn, hidden, head)
        peak[mode] = torch.cuda.max_memory_allocated() - base
    tol = 2e-2 if autocast else 1e-4
    (ref, ref_gh, ref_gw), (loss, gh, gw) = out["plain"], out["fused"]
    assert abs(ref - loss) <= tol * abs(ref)
    assert (ref_gh - gh).abs().max() <= tol * ref_gh.abs().max()
    assert (ref_gw - gw).abs().max() <= tol * ref_gw.abs().max()
    assert peak["fused"] < peak["plain"], peak


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or liger_fused_ce() is None,
                    reason="needs a CUDA GPU and liger-kernel (pip install -e .[gpu])")
def test_trial_model_on_gpu_takes_the_fused_path(tiny_batch, monkeypatch):
    import hpo.loss
    model, feats, collate = tiny_batch
    model.cuda()
    set_answer_loss(model, "auto")
    calls = []
    real = hpo.loss.fused_ce_sum
    monkeypatch.setattr(hpo.loss, "fused_ce_sum", lambda *a: calls.append(1) or real(*a))
    batch = {k: v.cuda() for k, v in collate(feats[:4]).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss
    set_answer_loss(model, "off")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(**batch).loss
    assert calls and abs(loss.item() - ref.item()) <= 2e-2 * ref.item()
