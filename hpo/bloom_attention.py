"""The fast BLOOM path (`--attention sdpa`): attention through torch's fused
`scaled_dot_product_attention`, and the GeLU through torch's fused `gelu(approximate="tanh")`.

Run:  python -m hpo.bloom_attention              # eager vs sdpa on a small random BLOOM: max |difference|
                                                 # of the logits and ms per training step of each
      from hpo.bloom_attention import set_attention
      set_attention(model, "sdpa")               # or "eager": transformers' own code again

Why: transformers 5.23 has only an "eager" attention for BLOOM. It writes the whole score matrix
[batch, heads, query, key] to memory several times (the scores with the ALiBi bias, plus the mask
in fp32, the fp32 softmax, its bf16 copy) and keeps some of them for the backward pass. SDPA
computes the same attention in one fused kernel that never stores that matrix; on a CUDA GPU with
an additive float mask it runs the memory-efficient kernel, on the CPU its flash kernel.

What BLOOM's attention needs, and how it gets it here:
  * ALiBi: no position embeddings; each head h adds slope_h x (position of key j) to the scores.
    BloomModel builds that bias once per forward (`alibi`, shape [batch*heads, 1, keys]; the
    positions count only real tokens, so padding does not shift them).
  * the mask: BloomModel passes the causal + padding mask as an additive float tensor
    [batch, 1, query, keys] (0 = attend, the dtype's most negative number = do not).
  Both are added into ONE additive float mask [batch, heads, query, keys] (the ALiBi part taken
  relative to each query, see combined_mask) — built once per forward and shared by every layer
  (kept on the alibi tensor itself, so it lives as long as that forward) — and passed to SDPA as
  `attn_mask`, with BLOOM's scale 1/sqrt(head_dim).
  * the KV cache for generation: the same `layer_past.update(...)` call as the eager code, so
    greedy generation with left padding and a cache works unchanged (the mask/alibi already cover
    the cached keys).
  * attention dropout: SDPA's dropout_p (0 for BLOOM-560M). With dropout > 0 the random numbers
    differ from the eager code's, so only the distribution is the same.
  * output_attentions=True (SDPA cannot return the probabilities) and the rare
    pretraining_tp > 1 + slow_but_exact configs fall back to the eager code.

Numbers (tested in tests/test_attention.py): in fp32 the result equals eager to ~1e-5 — the same
softmax, with the ALiBi bias taken relative to each query (see combined_mask) and another summation
order. Under bf16 autocast the two differ, and SDPA is the more precise one: eager computes the
scores with `baddbmm` IN BF16 (autocast casts it), so the ALiBi bias slope x key position — up to
361 in BLOOM-560M, where bf16 numbers are 2 apart — is rounded by up to 1, a factor e^1 on the
attention weights; then it adds the mask and takes the softmax in fp32. Here the mask is bf16 too
(the kernel needs the query's dtype), but holds the RELATIVE bias, which is small, hence exact
enough, for the nearby keys that get the attention; the kernel accumulates q.k, adds the mask and
takes the softmax in fp32, and rounds only the probabilities to bf16 before multiplying the values,
as eager does. On a GPU the memory-efficient kernel's backward pass is not bitwise reproducible
from run to run unless torch.use_deterministic_algorithms(True) is set; `--attention eager` is.

The GeLU: transformers' BLOOM computes its tanh-approximated GeLU as a Python autograd Function
(`GeLUFunction`: about 8 elementwise operations forward and 15 backward, each reading and
writing the whole [batch, tokens, 4 x hidden] activation). torch's `F.gelu(x, approximate="tanh")`
is the same formula (sqrt(2/pi) = 0.7978845608 where BLOOM writes 0.79788456) in one fused kernel
each way: equal to ~1e-6 in fp32, 11x faster forward+backward on a CPU, and on a GPU it stops
being a chain of memory-bound kernels. On the laptop tier it was 37 % of a training step.

Fully masked rows (the padding positions of a left-padded batch) get the same finite result as in
eager — the mask uses the dtype's most negative FINITE number, never -inf, so no NaN can arise.
Nothing runs at import time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.bloom.modeling_bloom import BloomAttention, BloomGelu, dropout_add

# Mask rows are padded to a multiple of this many keys: the memory-efficient CUDA kernel wants
# aligned strides and would otherwise copy (and keep for the backward pass) the mask in every layer.
_ALIGN = 16
_CACHE_ATTR = "_hpo_sdpa_mask"


def combined_mask(alibi: torch.Tensor, attention_mask: torch.Tensor | None, batch: int, heads: int,
                  q_len: int, kv_len: int, dtype: torch.dtype, beta: float = 1.0) -> torch.Tensor:
    """ALiBi bias + causal/padding mask as one additive mask [batch, heads, q_len, kv_len] in `dtype`.

    alibi: [batch*heads, 1, kv_len] as BloomModel builds it; attention_mask: [batch, 1, q_len, kv_len]
    additive (0 / most negative), or None (then causal, aligned to the LAST key: with a KV cache the
    q_len new tokens are the last ones). Built once per forward: the result is kept on the alibi
    tensor, which every layer of the same forward receives."""
    key = (attention_mask, dtype, q_len, kv_len, beta)
    cached = getattr(alibi, _CACHE_ATTR, None)
    if cached is not None and cached[0] is attention_mask and cached[1:-1] == key[1:]:
        return cached[-1]
    bias = alibi.view(batch, heads, 1, kv_len).float()
    if beta != 1.0:
        bias = bias * beta
    # Relative ALiBi: subtract each query's own bias, slope x (position of key j - position of query i).
    # The softmax over the keys does not change (the same number is subtracted from a whole row),
    # but the bias is now 0 at the query itself and small for the nearby keys that get the
    # attention, so rounding it to bf16 below costs nothing where it matters (slope x position
    # itself reaches 361 in BLOOM-560M, where bf16 numbers are 2 apart).
    bias = bias - bias[..., kv_len - q_len:].transpose(-1, -2)          # [batch, heads, q_len, kv_len]
    if attention_mask is None:
        # key j is visible from query i when j <= i + (kv_len - q_len)
        q_pos = torch.arange(kv_len - q_len, kv_len, device=alibi.device)[:, None]
        hidden = torch.arange(kv_len, device=alibi.device)[None, :] > q_pos
        summed = torch.where(hidden, torch.finfo(torch.float32).min, bias)
    else:
        summed = bias + attention_mask.float()
    # Clamp to the target dtype's lowest FINITE value before the cast: fp32's most negative
    # number would overflow to -inf in bf16/fp16, and a row of only -inf gives NaN.
    summed = summed.clamp_(min=torch.finfo(dtype).min)
    padded = -(-kv_len // _ALIGN) * _ALIGN
    out = torch.empty(batch, heads, q_len, padded, dtype=dtype, device=alibi.device)[..., :kv_len]
    out.copy_(summed)
    setattr(alibi, _CACHE_ATTR, (*key, out))
    return out


class BloomSdpaAttention(BloomAttention):
    """BloomAttention whose forward calls torch's scaled_dot_product_attention.

    Same weights and the same forward signature and outputs as transformers' BloomAttention (the
    second output, the attention probabilities, is None: SDPA never forms them)."""

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor, alibi: torch.Tensor,
                attention_mask: torch.Tensor | None, layer_past=None, use_cache: bool = False,
                output_attentions: bool = False, **kwargs):
        if output_attentions or (self.pretraining_tp > 1 and self.slow_but_exact):
            return super().forward(hidden_states, residual, alibi, attention_mask, layer_past=layer_past,
                                   use_cache=use_cache, output_attentions=output_attentions, **kwargs)
        batch, q_len, _ = hidden_states.shape
        # [batch, heads, tokens, head_dim] each: views into the fused projection, as in eager
        query, key, value = self._reshape(self.query_key_value(hidden_states))
        if layer_past is not None:                      # generation: append to the KV cache, use all keys
            key, value = layer_past.update(key, value, self.layer_idx)
        kv_len = key.shape[-2]
        mask = combined_mask(alibi, attention_mask, batch, self.num_heads, q_len, kv_len, query.dtype,
                             self.beta)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=self.inv_norm_factor,
            dropout_p=self.attention_dropout.p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, q_len, self.hidden_size)
        output = dropout_add(self.dense(context), residual, self.hidden_dropout, self.training)
        return output, None


class BloomFusedGelu(BloomGelu):
    """BloomGelu computed by torch's fused tanh-approximated GeLU (the same formula, one kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


# the layer classes of each path: transformers' own (eager) and this module's (sdpa)
_PATHS = {"eager": {BloomAttention: BloomAttention, BloomGelu: BloomGelu},
          "sdpa": {BloomAttention: BloomSdpaAttention, BloomGelu: BloomFusedGelu}}


def set_attention(model, attention: str) -> str:
    """Use the `attention` path ("sdpa" or "eager") in every BLOOM attention and GeLU layer of
    `model`, in place.

    Swapping the class of each layer keeps its weights, hooks and place in the model; `eager`
    swaps back to transformers' own BloomAttention and BloomGelu, so a model can be switched
    both ways (the tests and bench/bench_trial.py compare the two on the same weights). Models
    other than BLOOM are left as they are (they bring their own attention). Returns what is in
    use now: "sdpa", "eager", or "model default" (not BLOOM)."""
    if attention not in _PATHS:
        raise ValueError(f"attention must be 'sdpa' or 'eager', not {attention!r}")
    found = False
    for module in model.modules():
        for base, target in _PATHS[attention].items():
            if isinstance(module, base):
                module.__class__ = target
                found = True
    return attention if found else "model default"


def attention_in_use(model) -> str:
    """"sdpa", "eager", "mixed" or "model default" (no BLOOM attention or GeLU layers)."""
    kinds = {type(m) for m in model.modules() if isinstance(m, (BloomAttention, BloomGelu))}
    if not kinds:
        return "model default"
    for name, classes in _PATHS.items():
        if kinds == set(classes.values()):
            return name
    return "mixed"


def main(argv=None) -> int:
    import argparse
    import time
    from pathlib import Path
    from transformers import BloomConfig, BloomForCausalLM
    ap = argparse.ArgumentParser(description="eager vs sdpa BLOOM attention: difference and speed (CPU/GPU)")
    ap.add_argument("--layers", type=int, default=2, help="layers of the BLOOM-560M config [2]")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size [the real 250,880]")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args(argv)
    conf = BloomConfig.from_pretrained(Path(__file__).resolve().parent.parent / "configs" / "bloom-560m")
    conf.n_layer = a.layers
    conf.vocab_size = a.vocab or conf.vocab_size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = BloomForCausalLM(conf).to(device)
    ids = torch.randint(0, conf.vocab_size, (a.batch_size, a.seq_len), device=device)
    mask = torch.ones_like(ids)
    mask[0, : a.seq_len // 3] = 0                                       # one left-padded row
    logits = {}
    for name in ("eager", "sdpa"):
        set_attention(model, name)
        with torch.no_grad():
            logits[name] = model(input_ids=ids, attention_mask=mask).logits.float()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"{name:5s}: {(time.perf_counter() - t0) / a.steps * 1000:.0f} ms per forward+backward "
              f"(batch {a.batch_size} x {a.seq_len}, {a.layers} layers, {device})")
    real = mask.bool()
    print(f"max |logits eager - sdpa| over real tokens: {(logits['eager'] - logits['sdpa'])[real].abs().max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
