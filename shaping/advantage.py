"""Base advantages from task rewards, and the VERL bonus on top (verl-method.md section 5).

Estimators map rewards [P, G] (P prompts, G rollouts each) to A0 [P, G]:
    grpo     (R - mean_group) / (std_group + 1e-6), unbiased std
    dr_grpo  R - mean_group                           (no std division)
    rloo     R - mean of the other G - 1 rollouts     = G / (G - 1) * (R - mean_group)
Shaping: A = A0 + min(relu(r_aux), |A0| / kappa), detached; added to every response token
(or to the last one in reference mode).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_STD_EPS = 1e-6


def _check_rewards(rewards: torch.Tensor) -> torch.Tensor:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        raise ValueError(f"rewards must be [num_prompts, group_size], got shape {tuple(getattr(rewards, 'shape', ()))}")
    if rewards.shape[0] == 0 or rewards.shape[1] < 2:
        raise ValueError("advantage estimators need at least one prompt with >= 2 rollouts, "
                         f"got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or Inf; scorers must return finite numbers")
    return rewards.to(torch.float64)


def grpo(rewards: torch.Tensor) -> torch.Tensor:
    r = _check_rewards(rewards)
    return (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True, unbiased=True) + _STD_EPS)


def dr_grpo(rewards: torch.Tensor) -> torch.Tensor:
    r = _check_rewards(rewards)
    return r - r.mean(dim=1, keepdim=True)


def rloo(rewards: torch.Tensor) -> torch.Tensor:
    r = _check_rewards(rewards)
    group = r.shape[1]
    others_mean = (r.sum(dim=1, keepdim=True) - r) / (group - 1)
    return r - others_mean


ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"grpo": grpo, "dr_grpo": dr_grpo, "rloo": rloo}


def base_advantages(rewards: torch.Tensor, estimator: str = "grpo") -> torch.Tensor:
    """A0 [P, G] from rewards [P, G] with the named estimator."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; use one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[estimator](rewards)


def shaping_bonus(a0: torch.Tensor, r_aux: torch.Tensor, kappa: float) -> torch.Tensor:
    """min(relu(r_aux), |A0| / kappa) per response [B]: never negative, never above |A0| / kappa."""
    if a0.shape != r_aux.shape or a0.dim() != 1:
        raise ValueError(f"a0 and r_aux must both be [B], got {tuple(a0.shape)} and {tuple(r_aux.shape)}")
    if kappa <= 0:
        raise ValueError(f"kappa must be positive, got {kappa}")
    a0 = a0.detach().to(torch.float64)
    return torch.minimum(torch.relu(r_aux.detach().to(torch.float64)), a0.abs() / kappa)


def token_advantages(a0: torch.Tensor, bonus: torch.Tensor, response_mask: torch.Tensor,
                     last_token: bool = False) -> torch.Tensor:
    """Per-token advantages [B, T]: A0 everywhere plus the bonus on every token (or the last one)."""
    if response_mask.dim() != 2 or response_mask.shape[0] != a0.shape[0] or bonus.shape != a0.shape:
        raise ValueError(f"response_mask must be [B, T] with B = {a0.shape[0]}, got {tuple(response_mask.shape)}")
    mask = response_mask.to(torch.float64)
    a0 = a0.detach().to(torch.float64)
    bonus = bonus.detach().to(torch.float64)
    if not last_token:
        return (a0 + bonus)[:, None] * mask
    lengths = response_mask.to(torch.long).sum(dim=1)
    last = torch.zeros_like(mask)
    rows = torch.nonzero(lengths > 0).squeeze(-1)
    last[rows, lengths[rows] - 1] = 1.0
    return a0[:, None] * mask + bonus[:, None] * last
