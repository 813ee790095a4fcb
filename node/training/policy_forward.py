"""The training forward: response log-probs, entropies and the hidden states VERL shapes with.

One forward serves both the loss and the rank statistics (verl-method.md section 1): the
final-layer hidden state after the model's final norm is the decoder's `last_hidden_state`
for the Llama/Qwen2 family (tests/node/test_policy_forward.py pins this with a hook on the norm).
Row i of the returned states is the state at the position that *emitted* response token i,
so row 0 sits on the last prompt token.

Memory does not grow with batch x length x vocabulary: the decoder runs without its LM head,
and the head is applied to the response tokens only, `chunk_tokens` at a time. Each chunk's
full-vocabulary float32 logits live only while that chunk's log-probs and entropies are
computed; with gradients on, the chunk is recomputed in the backward (activation
checkpointing) instead of being kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from node.training.rollout import RolloutBatch


@dataclass
class PolicyOutputs:
    logprobs: torch.Tensor  # [B, R] float32, differentiable, zero outside the response mask
    entropy: torch.Tensor | None  # [B, R] float32 (differentiable when asked for), zero outside the mask
    hidden: torch.Tensor | None  # [B, R, d] detached final post-norm states at emitting positions


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only, as in generation with a left-padded prompt."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on `hidden` [N, d] -> [N, V] in the model's dtype (with the final logit
    soft-capping of the models that have one, e.g. Gemma 2)."""
    head = model.get_output_embeddings()
    logits = F.linear(hidden, head.weight, getattr(head, "bias", None))
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _chunk_logprobs(model, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
                    entropy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """log-prob of `targets` [N] and entropy ("grad", "value" or "none": empty) under
    softmax(logits / temperature) of `hidden` [N, d]."""
    log_probs = torch.log_softmax(head_logits(model, hidden).float() / temperature, dim=-1)  # [N, V]
    token = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N]
    if entropy == "none":
        return token, token.new_empty(0)
    source = log_probs if entropy == "grad" else log_probs.detach()
    return token, -(source.exp() * source).sum(-1)  # [N], [N]


def token_logprobs(model, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *,
                   temperature: float = 1.0, chunk_tokens: int = 256, entropy: str = "value"
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of `targets` [B, R] and entropies from the emitting states `hidden` [B, R, d], in chunks.

    Only positions where `mask` is set are computed; results are float32 [B, R], zero elsewhere.
    Gradients reach `hidden` and the head's weights (through a recomputation per chunk). `entropy`:
    "grad" (differentiable, for the entropy bonus), "value" (detached, for the metric) or "none"."""
    flat_hidden, flat_targets = hidden[mask], targets[mask]  # [N, d], [N]
    recompute = torch.is_grad_enabled() and (flat_hidden.requires_grad or any(
        p.requires_grad for p in model.get_output_embeddings().parameters()))
    tokens, entropies = [], []
    for start in range(0, flat_hidden.shape[0], chunk_tokens):
        h, t = flat_hidden[start:start + chunk_tokens], flat_targets[start:start + chunk_tokens]
        if recompute:
            token, ent = checkpoint(_chunk_logprobs, model, h, t, temperature, entropy, use_reentrant=False)
        else:
            token, ent = _chunk_logprobs(model, h, t, temperature, entropy)
        tokens.append(token)
        entropies.append(ent)
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    if not tokens:
        return zeros, None if entropy == "none" else zeros.clone()
    token_lp = zeros.masked_scatter(mask, torch.cat(tokens))
    return token_lp, None if entropy == "none" else zeros.masked_scatter(mask, torch.cat(entropies))


def decoder_states(model, batch: RolloutBatch) -> torch.Tensor:
    """The decoder's final post-norm states at the positions that emitted the response tokens [B, R, d]."""
    ids, attn, p = batch.input_ids, batch.attention_mask, batch.prompt_width
    out = model.get_decoder()(input_ids=ids, attention_mask=attn, position_ids=position_ids_for(attn),
                              use_cache=False)
    num_resp = ids.shape[1] - p
    return out.last_hidden_state[:, p - 1 : p - 1 + num_resp]  # [B, R, d]


def policy_forward(model, batch: RolloutBatch, *, temperature: float = 1.0, with_hidden: bool = True,
                   entropy: str = "value", chunk_tokens: int = 256) -> PolicyOutputs:
    """Run the model on prompt+response and gather what the loss and the shaping need.

    `entropy`: "grad", "value" or "none" (see `token_logprobs`)."""
    states = decoder_states(model, batch)
    logprobs, ent = token_logprobs(model, states, batch.response_ids, batch.response_mask, temperature=temperature,
                                   chunk_tokens=chunk_tokens, entropy=entropy)
    return PolicyOutputs(logprobs, ent, states.detach() if with_hidden else None)
