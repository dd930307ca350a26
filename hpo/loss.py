"""The trial's loss without the fp32 logits of the whole batch: only where there is an answer token.

Run:  nothing to run; hpo.trial installs it with the attention (`--attention sdpa`, the default):
      from hpo.loss import set_answer_loss
      set_answer_loss(model, "auto")     # "fused" | "plain" | "off" (= transformers' own loss)
      python -m pytest -q tests/test_loss.py

Why: BLOOM's vocabulary has 250,880 tokens. transformers' loss computes the logits of EVERY
position (batch x length x 250,880), copies them to fp32 and takes the softmax over all of them —
at batch 8 x 512 tokens that is 4 GB of fp32 logits, plus their gradient. But the trial's labels
are -100 everywhere except on the answer tokens (a few of the 512 positions): those positions
contribute nothing to the loss.

What this computes — the SAME number as transformers' ForCausalLMLoss, hence the same gradients:
  * labels are shifted as there (position t predicts token t+1; the last position predicts nothing);
  * only the positions whose shifted label is not -100 go through the LM head (BLOOM's lm_head
    shares its weight with the input embeddings — it is called as a module, so the tie and any
    DeepSpeed ZeRO-3 gathering hooks stay in place);
  * the cross-entropy is summed over those positions in fp32 and divided by `num_items_in_batch`
    when the Trainer passes it (answer tokens of the whole accumulated batch), else by the number
    of answer tokens in this batch: the same token weighting as before.
Two ways to get that sum:
  * "plain" (any device): logits of the answer positions only, in chunks of CHUNK_ROWS positions;
    with more than one chunk each chunk's logits are recomputed in the backward pass instead of
    kept (torch.utils.checkpoint), so at most one chunk's fp32 logits exist at a time;
  * "fused" (CUDA + liger-kernel): liger's fused linear cross-entropy computes the logits chunk by
    chunk (about CHUNK_ROWS positions each), takes the loss and its gradient inside a Triton kernel
    and never stores them (install on GPU clusters with `pip install -e .[gpu]`; not on laptops:
    it needs triton, which needs a CUDA GPU).
"auto" takes "fused" where it can run (CUDA, liger importable, weights not ZeRO-3 shards), else
"plain". The forward with labels then returns logits=None (no caller of the trial needs them;
without labels — generation — the model is unchanged and returns its logits).
Nothing runs at import time.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions
from transformers.models.bloom.modeling_bloom import BloomForCausalLM

IGNORE_INDEX = -100          # transformers' (and hpo.data's) label for "no loss here"
# Plain path: positions per chunk. 1,024 x 250,880 fp32 logits = 1 GB. A trial's batch has far
# fewer answer tokens, so it runs as one chunk, with no recomputation.
CHUNK_ROWS = 1024
LOSS_MODES = ("auto", "fused", "plain", "off")


@functools.lru_cache(maxsize=1)
def liger_fused_ce():
    """liger-kernel's fused linear cross-entropy function, or None where it is not installed/usable."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except Exception:            # not installed, or triton without a GPU driver: the plain path
        return None
    return liger_fused_linear_cross_entropy


def _is_zero3_shard(param) -> bool:
    """DeepSpeed ZeRO-3 keeps only a shard of each weight outside a module's own forward."""
    return hasattr(param, "ds_id")


def fused_possible(hidden: torch.Tensor, lm_head) -> bool:
    return hidden.is_cuda and liger_fused_ce() is not None and not _is_zero3_shard(lm_head.weight)


def _chunk_ce_sum(lm_head, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # .float(): as transformers does, the softmax over the vocabulary in fp32 (logits may be bf16)
    return F.cross_entropy(lm_head(rows).float(), targets, reduction="sum")


def plain_ce_sum(lm_head, rows: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Sum of the cross-entropy of rows (positions x hidden) against targets, chunk by chunk."""
    n = rows.shape[0]
    if n <= chunk_rows:
        return _chunk_ce_sum(lm_head, rows, targets)
    from torch.utils.checkpoint import checkpoint
    total = None
    for start in range(0, n, chunk_rows):
        args = (rows[start:start + chunk_rows], targets[start:start + chunk_rows])
        # checkpoint: keep only this chunk's inputs for the backward pass, recompute its logits there
        part = checkpoint(_chunk_ce_sum, lm_head, *args, use_reentrant=False) if torch.is_grad_enabled() \
            else _chunk_ce_sum(lm_head, *args)
        total = part if total is None else total + part
    return total


def fused_ce_sum(lm_head, rows: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """The same sum with liger-kernel: logits chunk by chunk in a Triton kernel, never stored."""
    fused = liger_fused_ce()
    if fused is None:
        raise RuntimeError("fused loss: liger-kernel is not importable (install it with `pip install -e .[gpu]`)")
    vocab, hidden = lm_head.weight.shape
    # liger cuts the rows into chunks whose logits hold about chunk_mem_const x rows x hidden numbers.
    # Its default (1) suits vocabularies a few times the hidden size; BLOOM's is 245 x its hidden size,
    # so that would be chunks of 1/245 of the rows (a single row for a trial's answer tokens), each
    # re-reading the whole 1 GB weight gradient. Ask for chunks of about chunk_rows rows instead.
    chunks = max(1, -(-rows.shape[0] // chunk_rows))
    mem_const = max(1, -(-vocab // (hidden * chunks)))
    # reduction="sum": the division stays in causal_lm_loss, so the token weighting is transformers'
    return fused(rows, lm_head.weight, targets, getattr(lm_head, "bias", None), ignore_index=IGNORE_INDEX,
                 reduction="sum", chunk_mem_const=mem_const)


def causal_lm_loss(hidden: torch.Tensor, lm_head, labels: torch.Tensor, num_items_in_batch=None,
                   mode: str = "auto", shift_labels: torch.Tensor | None = None,
                   chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """transformers' causal-LM loss from the last hidden states [batch, length, hidden] and the LM head,
    with logits only at the labelled positions. mode: auto | fused | plain (see the module docstring)."""
    if shift_labels is None:                       # position t predicts token t+1, as in ForCausalLMLoss
        shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden.device)
    keep = targets != IGNORE_INDEX
    rows = hidden.reshape(-1, hidden.shape[-1])[keep]
    targets = targets[keep]
    use_fused = mode == "fused" or (mode == "auto" and fused_possible(hidden, lm_head))
    if use_fused and rows.shape[0] > 0:
        total = fused_ce_sum(lm_head, rows, targets, chunk_rows)
    else:
        total = plain_ce_sum(lm_head, rows, targets, chunk_rows)
    if num_items_in_batch is None:                 # mean over this batch's labelled tokens (0/0 = nan, as before)
        return total / keep.sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class AnswerLossBloomForCausalLM(BloomForCausalLM):
    """BloomForCausalLM whose forward WITH labels computes the loss by `causal_lm_loss` (no logits
    returned); without labels (generation) it is transformers' forward. Installed by set_answer_loss."""

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, inputs_embeds=None,
                labels=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, logits_to_keep=0, **kwargs):
        mode = getattr(self, "hpo_loss_mode", "auto")
        if labels is None or mode == "off" or return_dict is False:
            return super().forward(input_ids=input_ids, past_key_values=past_key_values,
                                   attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels,
                                   use_cache=use_cache, output_attentions=output_attentions,
                                   output_hidden_states=output_hidden_states, return_dict=return_dict,
                                   logits_to_keep=logits_to_keep, **kwargs)
        out = self.transformer(input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
                               inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                               return_dict=True)
        loss = causal_lm_loss(out.last_hidden_state, self.lm_head, labels,
                              num_items_in_batch=kwargs.get("num_items_in_batch"), mode=mode,
                              shift_labels=kwargs.get("shift_labels"))
        return CausalLMOutputWithCrossAttentions(loss=loss, logits=None, past_key_values=out.past_key_values,
                                                 hidden_states=out.hidden_states, attentions=out.attentions)


# save_pretrained writes the class name into config.json ("architectures"); keep BLOOM's, so a
# model saved by a trial is an ordinary BLOOM checkpoint for every other tool.
AnswerLossBloomForCausalLM.__name__ = "BloomForCausalLM"


def describe(mode: str) -> str:
    """What set_answer_loss's result means, for the trial's log."""
    if mode == "off":
        return "transformers' (logits at every position)"
    if mode in ("auto", "fused", "plain"):
        how = {"fused": "fused (liger-kernel)", "plain": "plain, in chunks"}.get(mode) or (
            "fused with liger-kernel on CUDA" if liger_fused_ce() else "plain (liger-kernel not installed)")
        return f"answer tokens only, {how}"
    return "the model's own"


def set_answer_loss(model, mode: str) -> str:
    """Install (mode auto | fused | plain) or remove ("off") the answer-token loss on a BLOOM model,
    in place (its class is swapped; weights untouched). Other models are left as they are.
    Returns what the loss is now: the mode, or "model default"."""
    if mode not in LOSS_MODES:
        raise ValueError(f"loss mode must be one of {', '.join(LOSS_MODES)}, not {mode!r}")
    if not isinstance(model, BloomForCausalLM):
        return "model default"
    model.__class__ = BloomForCausalLM if mode == "off" else AnswerLossBloomForCausalLM
    model.hpo_loss_mode = mode
    return mode
