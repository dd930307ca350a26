"""`--attention sdpa` (hpo/bloom_attention.py) computes what transformers' eager BLOOM attention
and GeLU do.

Run: .venv/bin/python -m pytest -q tests/test_attention.py        (CPU, ~1 min; GPU tests skip without CUDA)

The model is BLOOM-560M's real architecture (configs/bloom-560m: hidden 1024, 16 heads, ALiBi,
250,880-token vocabulary) cut to 2 layers, with random weights large enough that attention
shapes the output (a control checks that breaking the mask changes the result).
"""
import sys

import pytest
import torch

from conftest import ROOT, run_cli
from hpo.bloom_attention import (BloomFusedGelu, BloomSdpaAttention, attention_in_use, combined_mask,
                                 set_attention)
from hpo.config import ConfigError, TrialConfig, trial_config_from, trial_parser
from hpo.loss import set_answer_loss

PAD = 3                          # BLOOM's <pad>


def random_bloom(n_layer: int = 2, scale: float = 0.1):
    """BLOOM-560M's config with n_layer layers and uniform random weights (fast: built on the meta device)."""
    from transformers import BloomConfig, BloomForCausalLM
    conf = BloomConfig.from_pretrained(ROOT / "configs" / "bloom-560m")
    conf.n_layer = n_layer
    with torch.device("meta"):
        model = BloomForCausalLM(conf)
    model = model.to_empty(device="cpu")
    model.tie_weights()                      # lm_head shares the embedding matrix, as in the real model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "ln_f" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.uniform_(-scale / 2 if "word_embeddings" in name else -scale,
                           scale / 2 if "word_embeddings" in name else scale, generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def bloom():
    torch.manual_seed(0)
    return random_bloom()


def padded_batch(side: str, lengths=(12, 9, 5), vocab: int = 250880, seed: int = 0):
    """Random token rows of different lengths, padded on `side`; labels only on each row's last 4 tokens
    (the 'answer'), -100 on the prompt and the padding, as hpo.data builds them."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, n in enumerate(lengths):
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.randint(4, vocab, (n,), generator=g)
        mask[i, cols] = 1
        labels[i, cols] = torch.where(torch.arange(n) >= n - 4, ids[i, cols], -100)
    return ids, mask, labels


def forward_logits(model, attention, ids, mask):
    set_attention(model, attention)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("side", ["left", "right"])
def test_sdpa_logits_equal_eager_on_padded_batches(bloom, side):
    ids, mask, _ = padded_batch(side)
    eager = forward_logits(bloom, "eager", ids, mask)
    sdpa = forward_logits(bloom, "sdpa", ids, mask)
    assert attention_in_use(bloom) == "sdpa"
    real = mask.bool()
    assert (eager - sdpa)[real].abs().max() < 1e-4
    # the padding positions too (a left-padded row's pads see no key at all: finite, like eager)
    assert torch.isfinite(sdpa).all() and (eager - sdpa).abs().max() < 1e-4
    # and padding is really handled: each row's hidden states as when it runs alone, unpadded
    with torch.no_grad():
        hidden = bloom.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    for i in range(ids.shape[0]):
        with torch.no_grad():
            alone = bloom.transformer(input_ids=ids[i:i + 1, real[i]]).last_hidden_state
        assert (alone[0] - hidden[i, real[i]]).abs().max() < 1e-4
    if side == "left":     # control: with the pads visible, the same rows give other hidden states
        with torch.no_grad():
            unmasked = bloom.transformer(input_ids=ids, attention_mask=torch.ones_like(mask)).last_hidden_state
        assert (unmasked - hidden)[real].abs().max() > 1e-2


def test_training_loss_and_gradients_equal_eager(bloom):
    """The training step: eager attention + transformers' loss vs sdpa + the answer-token loss.
    Every weight's gradient but the 250,880 x 1024 embedding/LM head (tied): its gradient is a dense
    1 GB tensor, slow on 2 CPU cores; tests/test_loss.py compares it on the tiny model."""
    ids, mask, labels = padded_batch("right")
    grads, losses = {}, {}
    embedding = bloom.transformer.word_embeddings.weight
    embedding.requires_grad_(False)
    for attention in ("eager", "sdpa"):
        set_attention(bloom, attention)
        set_answer_loss(bloom, "off" if attention == "eager" else "auto")
        bloom.zero_grad(set_to_none=True)
        out = bloom(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        losses[attention] = out.loss.item()
        grads[attention] = {n: p.grad.clone() for n, p in bloom.named_parameters() if p.requires_grad}
        assert (out.logits is None) == (attention == "sdpa")      # the fast loss forms no full logits
    set_answer_loss(bloom, "off")
    bloom.zero_grad(set_to_none=True)
    embedding.requires_grad_(True)
    assert abs(losses["eager"] - losses["sdpa"]) < 1e-5 * abs(losses["eager"])
    for name, g in grads["eager"].items():
        scale = g.abs().max().item()
        assert scale > 0, name                                   # every weight gets a gradient
        assert (g - grads["sdpa"][name]).abs().max().item() <= 1e-4 * scale, name


def test_greedy_generation_with_kv_cache_is_identical(bloom):
    ids, mask, _ = padded_batch("left", lengths=(12, 7, 4), seed=1)
    tokens = {}
    for attention in ("eager", "sdpa"):
        set_attention(bloom, attention)
        with torch.no_grad():
            out = bloom.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                                 num_beams=1, use_cache=True, pad_token_id=PAD)
        tokens[attention] = out[:, ids.shape[1]:]
    assert torch.equal(tokens["eager"], tokens["sdpa"])
    # control: the padding matters to the tokens generated (so equality above is informative)
    with torch.no_grad():
        wrong = bloom.generate(input_ids=ids, attention_mask=torch.ones_like(mask), max_new_tokens=4,
                               do_sample=False, num_beams=1, use_cache=True, pad_token_id=PAD)
    assert not torch.equal(wrong[:, ids.shape[1]:], tokens["sdpa"])


def test_trial_generation_gives_the_same_answers(tiny_model, tiny_tokenizer, tiny_data):
    """hpo.metrics' greedy generation (left padding, KV cache) on the tiny model: same answers."""
    from transformers import AutoModelForCausalLM
    from hpo.data import encode_split, load_squad
    from hpo.metrics import generate_answers
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    val = encode_split(tiny_tokenizer, load_squad(tiny_data, 8, 12, 0).validation, 128)
    answers = {}
    for attention in ("eager", "sdpa"):
        set_attention(model, attention)
        answers[attention] = generate_answers(model, tiny_tokenizer, val.prompts, batch_size=6, max_new_tokens=6)
    assert answers["eager"] == answers["sdpa"] and any(answers["sdpa"])


def test_output_attentions_falls_back_to_eager(bloom):
    ids, mask, _ = padded_batch("left")
    set_attention(bloom, "sdpa")
    with torch.no_grad():
        out = bloom(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 16, 12, 12)


def test_under_bf16_autocast_sdpa_is_closer_to_fp32_than_eager(bloom):
    """The docstring's claim: eager rounds slope x position (up to 361 here) to bf16; the relative
    bias of sdpa is small near each query. Hidden states of 300-token rows against fp32 (CPU autocast)."""
    ids, mask, _ = padded_batch("right", lengths=(300, 200))
    real = mask.bool()
    err = {}
    with torch.no_grad():
        set_attention(bloom, "eager")
        ref = bloom.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        for attention in ("eager", "sdpa"):
            set_attention(bloom, attention)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = bloom.transformer(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            err[attention] = (hidden - ref)[real].abs().mean().item()
    assert err["sdpa"] < err["eager"] / 2, err


def test_bf16_mask_stays_finite():
    """fp32's most negative number would be -inf in bf16: a fully masked row would give NaN."""
    alibi = torch.arange(6.0).repeat(2 * 4, 1, 1)                       # [batch*heads, 1, keys]
    additive = torch.zeros(2, 1, 6, 6)
    additive[0, :, :, :3] = torch.finfo(torch.float32).min              # left padding: 3 pads
    m = combined_mask(alibi, additive, 2, 4, 6, 6, torch.bfloat16)
    assert m.dtype == torch.bfloat16 and torch.isfinite(m).all()
    assert m.stride(2) % 16 == 0                                        # aligned rows for the CUDA kernel
    assert combined_mask(alibi, additive, 2, 4, 6, 6, torch.bfloat16) is m   # built once per forward
    q = torch.randn(2, 4, 6, 8, dtype=torch.bfloat16)
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=m)
    assert torch.isfinite(out).all()


def test_fused_gelu_equals_bloom_gelu_forward_and_backward():
    """transformers' GeLUFunction (BLOOM's tanh approximation, op by op) vs torch's fused
    gelu(approximate="tanh"), in fp32 over the range activations take, and far out in the tails."""
    from transformers.models.bloom.modeling_bloom import BloomGelu
    x = torch.cat([torch.linspace(-12, 12, 20001), torch.randn(20000) * 3])
    grad_out = torch.randn_like(x)
    out, grad = {}, {}
    for name, layer in (("bloom", BloomGelu()), ("fused", BloomFusedGelu())):
        xi = x.clone().requires_grad_(True)
        out[name] = layer(xi)
        out[name].backward(grad_out)
        grad[name] = xi.grad
    assert (out["bloom"] - out["fused"]).abs().max() < 1e-5
    assert (grad["bloom"] - grad["fused"]).abs().max() < 1e-5
    # control: the exact (erf) GeLU is another function — the comparison above can tell them apart
    exact = torch.nn.functional.gelu(x)
    assert (exact - out["bloom"].detach()).abs().max() > 1e-4


def test_eager_puts_back_transformers_class(bloom):
    from transformers.models.bloom.modeling_bloom import BloomAttention, BloomGelu
    set_attention(bloom, "sdpa")
    assert all(type(b.self_attention) is BloomSdpaAttention for b in bloom.transformer.h)
    assert all(type(b.mlp.gelu_impl) is BloomFusedGelu for b in bloom.transformer.h)
    set_attention(bloom, "eager")
    assert all(type(b.self_attention) is BloomAttention for b in bloom.transformer.h)
    assert all(type(b.mlp.gelu_impl) is BloomGelu for b in bloom.transformer.h)
    bloom.transformer.h[0].mlp.gelu_impl.__class__ = BloomFusedGelu       # half switched: said so
    assert attention_in_use(bloom) == "mixed"
    set_attention(bloom, "eager")
    with pytest.raises(ValueError, match="sdpa"):
        set_attention(bloom, "flash")


# ----------------------------------------------------------------------------- the option
def test_option_default_and_round_trip():
    assert TrialConfig().attention == "sdpa"
    cfg = trial_config_from(trial_parser().parse_args(["--attention", "eager"]))
    assert cfg.attention == "eager" and "--attention" in cfg.to_argv()
    with pytest.raises(ConfigError, match="--attention: must be one of sdpa, eager"):
        TrialConfig(attention="flash").resolved()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_option_reaches_the_model_from_the_command_line(tmp_path, monkeypatch, attention):
    """scripts/train.py's main with --attention: count the calls of each attention during the trial."""
    from transformers.models.bloom.modeling_bloom import BloomAttention
    from hpo import trial
    calls = {"eager": 0, "sdpa": 0}
    eager_forward, sdpa_forward = BloomAttention.forward, BloomSdpaAttention.forward

    def count_eager(self, *a, **kw):
        calls["eager"] += 1
        return eager_forward(self, *a, **kw)

    def count_sdpa(self, *a, **kw):
        calls["sdpa"] += 1
        return sdpa_forward(self, *a, **kw)
    monkeypatch.setattr(BloomAttention, "forward", count_eager)
    monkeypatch.setattr(BloomSdpaAttention, "forward", count_sdpa)
    rc = trial.main(["--profile", "tiny", "--attention", attention, "--train-samples", "16",
                     "--eval-samples", "4", "--epochs", "1", "--num-threads", "2", "--max-new-tokens", "2",
                     "--output-dir", str(tmp_path)])
    assert rc == 0
    other = "eager" if attention == "sdpa" else "sdpa"
    assert calls[attention] > 0 and calls[other] == 0, calls


def test_bad_attention_value_exits_2_with_a_clear_message(root, tmp_path):
    p = run_cli([sys.executable, str(root / "scripts/train.py"), "--attention", "flash",
                 "--output-dir", str(tmp_path / "o")], timeout=120)
    assert p.returncode == 2
    assert "--attention: invalid choice: 'flash'" in p.stderr and "sdpa" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_sdpa_matches_eager_in_bf16_autocast_on_gpu():
    """Under bf16 autocast both differ from fp32 by bf16 rounding: sdpa no more than eager. Left padding
    (rows that see no key at all) stays finite in the fused CUDA kernel, and greedy generation agrees."""
    model = random_bloom().cuda()
    ids, mask, _ = (t.cuda() for t in padded_batch("left", lengths=(300, 200, 120)))
    logits = {}
    for attention in ("eager", "sdpa"):
        set_attention(model, attention)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits[attention] = model(input_ids=ids, attention_mask=mask).logits.float()
    assert torch.isfinite(logits["sdpa"]).all()
    real = mask.bool()
    ref = forward_logits(model, "eager", ids, mask)                  # fp32 reference
    err = {a: (logits[a] - ref)[real].abs().max().item() for a in logits}
    assert err["sdpa"] <= 1.5 * err["eager"], err
    tokens = {}
    for attention in ("eager", "sdpa"):
        set_attention(model, attention)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                 num_beams=1, pad_token_id=PAD)
        tokens[attention] = out[:, ids.shape[1]:]
    # bf16 rounding may flip a near tie: most tokens agree
    assert (tokens["eager"] == tokens["sdpa"]).float().mean() >= 0.75


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_sdpa_keeps_less_for_the_backward_pass_on_gpu():
    """The transformer body (no LM head) at batch 4 x 512 in bf16 autocast: eager keeps each layer's
    fp32 score matrix for the backward pass, sdpa one shared mask."""
    model = random_bloom().cuda()
    ids = torch.randint(4, 250880, (4, 512), device="cuda")
    mask = torch.ones_like(ids)
    peak = {}
    for attention in ("eager", "sdpa"):
        set_attention(model, attention)
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean().backward()
        peak[attention] = torch.cuda.max_memory_allocated() - base
    assert peak["sdpa"] < peak["eager"], peak
