"""PPO-clip policy loss with token-mean aggregation, low-variance KL and an entropy bonus.

Token-mean: every response token in the batch weighs the same, so long responses are not
down-weighted per token (verl-method.md section 5). The KL term is the "k3" estimator
exp(r) - r - 1 with r = log pi_ref - log pi, unbiased and always non-negative. Without a reference
policy (`kl_coef` 0) the KL is not computed and reported as None, not 0.

Micro-batches: given `num_tokens` (the response tokens of the whole mini-batch), every part is
a sum over this micro-batch's tokens divided by it, so the parts, and the gradients, of the
micro-batches of one mini-batch add up to those of the mini-batch in one piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from node.training.config import LossConfig


@dataclass
class LossParts:
    total: torch.Tensor  # scalar, differentiable
    policy: float
    kl: float | None       # None: not computed (no reference policy or kl_coef 0)
    entropy: float | None  # None: no entropy given
    clip_fraction: float


def masked_mean(values: torch.Tensor, mask: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
    """Sum over the masked entries divided by `num_tokens` (default: the mask's count)."""
    return (values * mask).sum() / (mask.sum().clamp(min=1) if num_tokens is None else max(num_tokens, 1))


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cfg: LossConfig, *, ref_logprobs: torch.Tensor | None = None,
                entropy: torch.Tensor | None = None, num_tokens: int | None = None) -> LossParts:
    """All inputs are [B, R]; `mask` marks response tokens. Advantages are detached data.

    `num_tokens`: divide by this many tokens instead of the mask's own count (a micro-batch of a
    larger mini-batch passes the mini-batch's count)."""
    mask = mask.to(logprobs.dtype)
    mean = partial(masked_mean, mask=mask, num_tokens=num_tokens)
    ratio = torch.exp(logprobs - old_logprobs.detach())
    adv = advantages.detach().to(logprobs.dtype)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * adv
    policy = mean(-torch.minimum(unclipped, clipped))
    total = policy
    kl_value = None
    if ref_logprobs is not None and cfg.kl_coef > 0:
        log_ratio = ref_logprobs.detach() - logprobs
        kl = mean(torch.exp(log_ratio) - log_ratio - 1.0)
        total = total + cfg.kl_coef * kl
        kl_value = float(kl.detach())
    entropy_value = None
    if entropy is not None:
        mean_entropy = mean(entropy)
        entropy_value = float(mean_entropy.detach())
        if cfg.entropy_coef > 0:
            total = total - cfg.entropy_coef * mean_entropy
    with torch.no_grad():
        clip_frac = float(mean(((ratio - 1.0).abs() > cfg.clip_eps).to(mask.dtype)))
    return LossParts(total, float(policy.detach()), kl_value, entropy_value, clip_frac)
