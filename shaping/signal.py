"""The auxiliary signal r_aux and the ERA gate (verl-method.md section 4).

Per response, over the indicators k in (ERA, ERV, ER):
    d_k   = clip((x_k - m_k) / (|m_k| + 1e-8), -5, 5)      0 when x_k or m_k is missing
    g     = sigmoid(gamma * d_ERA)                          0.5 with gate_mode="fixed"
    w     = g * w_explore + (1 - g) * w_exploit             w_explore + w_exploit with channel_mode="both"
    r_aux = lambda_t * sum_k w_k * tanh(d_k)                in (-lambda_t * sum|w|, lambda_t * sum|w|)
lambda_t = lam (fixed) or lam * (1 - s_bar) (performance-scaled; s_bar = score baseline in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shaping.baselines import Baselines
from shaping.config import ShapingConfig
from shaping.rank import RankIndicators

_ORDER = ("era", "erv", "er")  # the channel order of w_explore / w_exploit
_DEV_EPS = 1e-8
_DEV_CLIP = 5.0


@dataclass(frozen=True)
class AuxSignal:
    r_aux: torch.Tensor  # [B] float64
    gate: torch.Tensor  # [B] float64, the ERA gate g (share of incentive to exploration)
    deviations: torch.Tensor  # [B, 3] float64 in the order (ERA, ERV, ER); 0 where missing
    lam: float


def lambda_t(baselines: Baselines, cfg: ShapingConfig) -> float:
    """The signal scale: fixed, or shrinking as the swarm's score baseline approaches the maximum."""
    if cfg.lambda_mode == "fixed":
        return cfg.lam
    level = baselines.score_level(cfg)
    return cfg.lam if level is None else cfg.lam * (1.0 - level)


def deviations(ind: RankIndicators, baselines: Baselines) -> torch.Tensor:
    """[B, 3] relative deviations from the baselines, clipped; missing indicator or baseline -> 0."""
    x = ind.stacked()  # [B, 3]
    cols = []
    for j, name in enumerate(_ORDER):
        m = baselines.value(name)
        if m is None:
            cols.append(torch.zeros_like(x[:, j]))
            continue
        d = ((x[:, j] - m) / (abs(m) + _DEV_EPS)).clamp(-_DEV_CLIP, _DEV_CLIP)
        cols.append(torch.where(torch.isfinite(x[:, j]), d, torch.zeros_like(d)))
    return torch.stack(cols, dim=-1)


def aux_signal(ind: RankIndicators, baselines: Baselines, cfg: ShapingConfig) -> AuxSignal:
    """r_aux and the gate for every response; all zeros (gate 0.5) before a baseline exists."""
    num = ind.er.shape[0]
    lam = lambda_t(baselines, cfg)
    if not baselines.ready:
        zeros = torch.zeros(num, dtype=torch.float64)
        return AuxSignal(zeros, torch.full_like(zeros, 0.5), torch.zeros(num, 3, dtype=torch.float64), lam)
    dev = deviations(ind, baselines)
    if cfg.gate_mode == "fixed":
        gate = torch.full((num,), 0.5, dtype=torch.float64)
    else:
        gate = torch.sigmoid(cfg.gamma * dev[:, 0])
    explore = torch.tensor(cfg.w_explore, dtype=torch.float64)
    exploit = torch.tensor(cfg.w_exploit, dtype=torch.float64)
    if cfg.channel_mode == "both":
        weights = (explore + exploit).expand(num, 3)
    else:
        weights = gate[:, None] * explore + (1.0 - gate[:, None]) * exploit  # [B, 3]
    r_aux = lam * (weights * torch.tanh(dev)).sum(dim=-1)
    return AuxSignal(r_aux, gate, dev, lam)
