"""The training forward: response log-probs, entropies and the hidden states VERL shapes with.

One forward serves both the loss and the rank statistics (verl-method.md section 1): the
final-layer hidden state after the model's final norm is `hidden_states[-1]` for the
Llama/Qwen2 family (tests/node/test_policy_forward.py pins this with a hook on the norm).
Row i of the returned states is the state at the position that *emitted* response token i,
so row 0 sits on the last prompt token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.training.rollout import RolloutBatch


@dataclass
class PolicyOutputs:
    logprobs: torch.Tensor  # [B, R] float32, differentiable, zero outside the response mask
    entropy: torch.Tensor  # [B, R] float32, differentiable (for the entropy bonus)
    hidden: torch.Tensor | None  # [B, R, d] detached final post-norm states at emitting positions


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only, as in generation with a left-padded prompt."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]


def policy_forward(model, batch: RolloutBatch, *, temperature: float = 1.0, with_hidden: bool = True) -> PolicyOutputs:
    """Run the model on prompt+response and gather what the loss and the shaping need."""
    ids, attn, p = batch.input_ids, batch.attention_mask, batch.prompt_width
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_for(attn),
                output_hidden_states=with_hidden, use_cache=False)
    num_resp = ids.shape[1] - p
    # logits at column p-1+i predict response token i
    logits = out.logits[:, p - 1 : p - 1 + num_resp].float() / temperature  # [B, R, V]
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = batch.response_ids.unsqueeze(-1)
    mask = batch.response_mask
    token_logprobs = log_probs.gather(-1, targets).squeeze(-1) * mask
    entropy = -(log_probs.exp() * log_probs).sum(-1) * mask
    hidden = None
    if with_hidden:
        hidden = out.hidden_states[-1][:, p - 1 : p - 1 + num_resp].detach()  # [B, R, d]
    return PolicyOutputs(token_logprobs, entropy, hidden)
