"""Batched rollout sampling: G responses per prompt with explicit sampling parameters.

The sampled policy must be exactly the policy the loss differentiates, so sampling passes
`temperature`, `top_k=0` and `top_p=1.0` explicitly (a checkpoint's generation_config could
otherwise silently change them) and keeps the log-probabilities of the sampled tokens, which
a test compares with the training forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.training.config import SamplingConfig


@dataclass
class RolloutBatch:
    """Prompt + response token ids of B = num_prompts * group_size rollouts (prompt-major order)."""

    input_ids: torch.Tensor  # [B, P + R]: left-padded prompt then right-padded response
    attention_mask: torch.Tensor  # [B, P + R]
    prompt_width: int  # P: padded prompt length, the response starts at column P
    response_mask: torch.Tensor  # [B, R] bool: response tokens up to and including the first EOS
    sample_logprobs: torch.Tensor  # [B, R] float32: log-prob of each sampled token under the sampler
    truncated: torch.Tensor  # [B] bool: no EOS within max_new_tokens
    texts: list[str]  # decoded responses (special tokens removed)

    @property
    def response_ids(self) -> torch.Tensor:  # [B, R]
        return self.input_ids[:, self.prompt_width :]

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())


def encode_prompts(tokenizer, prompts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Left-pad prompts so every response starts at the same column."""
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of tokens up to and including the first EOS, and which rows never emitted EOS."""
    is_eos = response_ids == eos_token_id  # [B, R]
    # number of EOS seen strictly before each position: a token counts while none came earlier
    eos_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()
    mask = eos_before == 0
    truncated = ~is_eos.any(dim=1)
    return mask, truncated


@torch.no_grad()
def sample_rollouts(model, tokenizer, prompts: list[str], cfg: SamplingConfig, *, group_size: int | None = None,
                    greedy: bool = False, max_new_tokens: int | None = None) -> RolloutBatch:
    """Sample `group_size` responses for each prompt (greedy=True: one argmax response each)."""
    if not prompts:
        raise ValueError("sample_rollouts needs at least one prompt")
    group = 1 if greedy else (group_size or cfg.group_size)
    device = next(model.parameters()).device
    expanded = [p for p in prompts for _ in range(group)]
    enc = encode_prompts(tokenizer, expanded, device)
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    sampling = {"do_sample": False} if greedy else {
        "do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0, "min_p": None,
    }
    was_training = model.training
    model.eval()
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens or cfg.max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
        return_dict_in_generate=True, output_logits=True, use_cache=True, **sampling,
    )
    model.train(was_training)
    prompt_width = enc["input_ids"].shape[1]
    response_ids = out.sequences[:, prompt_width:]  # [B, R]
    mask, truncated = response_mask_from_ids(response_ids, eos_id)
    logits = torch.stack(out.logits, dim=1).float()  # [B, R, V], raw (unprocessed) logits
    logprobs = torch.log_softmax(logits / (1.0 if greedy else cfg.temperature), dim=-1)
    sample_logprobs = logprobs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1) * mask
    attention = torch.cat([enc["attention_mask"], mask.to(enc["attention_mask"].dtype)], dim=1)
    texts = tokenizer.batch_decode(response_ids.masked_fill(~mask, pad_id), skip_special_tokens=True)
    return RolloutBatch(out.sequences, attention, prompt_width, mask, sample_logprobs, truncated, texts)
