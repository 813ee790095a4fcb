"""Robust aggregation of one all-reduce part: what a reducer returns when some senders lie.

hivemind's reducer adds every sender's part with the weight the sender claims and divides, so one
NaN poisons everyone, one amplified part drags the average anywhere and one inflated weight buys
the average outright. `robust_average` replaces that (`gossip.robust`, RobustConfig), per part of
the partitioned all-reduce (the per-part placement follows "Secure Distributed Training at
Scale", Gorbunov et al., 2022):

1. parts that are not finite, or of the wrong shape, and weights that are not finite or not
   positive are dropped, and their senders reported (the reducer bans them for the round);
2. every weight is capped at the lower median of the group's weights (and at `max_weight`), so
   claiming a bigger batch buys no more influence than the typical sender has;
3. with three senders or more, CenteredClip (Karimireddy, He, Jaggi, 2021): start from the
   coordinate-wise median m0 and iterate  v <- v + sum_i w_i clip(x_i - v, tau) / sum_i w_i,
   clip(d, tau) = d min(1, tau / |d|), with tau = `radius` (default 1) x the median of
   |x_i - m0|. A sender
   far from the others moves the result by at most tau w_i / sum w; honest parts, which sit
   within a few typical distances of each other, are barely touched.
4. a part farther than `reject_radius` x tau from m0 counts for nothing in that part (weight 0
   before step 3). Clipping alone still lets it pull by tau w_i / sum w in every part, every
   round, which adds up: measured in bench_attacks, a x -1000 sign flip clipped to tau took
   about half the honest peers' gain. No honest part sits ten typical distances out, and a
   liar that stays inside the radius to be counted is clipped as before, so the bound on what
   one sender can do is unchanged; it is only the blatant liar that now does nothing at all.

With two senders nothing can tell the liar from the honest one, but an amplified part need not
win: each part is scaled down to the smaller of the two parts' norms before the capped weighted
mean, so a liar can at most cancel the honest part, never drag the average further than it
(docs/security.md says what that does and does not guarantee).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.gossip.config import RobustConfig


@dataclass(frozen=True)
class RobustResult:
    average: torch.Tensor  # the aggregated part; finite whenever at least one sender was kept
    rejected: tuple[int, ...]  # indices of the senders dropped (non-finite part or weight, wrong shape)
    outliers: tuple[int, ...] = ()  # indices of the senders whose part was too far out to count (step 4)


def sanitize(parts: list[torch.Tensor], weights: list[float],
             shape: torch.Size) -> tuple[list[int], list[torch.Tensor], list[float]]:
    """(kept indices, their parts in float64, their weights): drops non-finite or misshapen parts and
    non-finite or non-positive weights."""
    kept, kept_parts, kept_weights = [], [], []
    for index, (part, weight) in enumerate(zip(parts, weights)):
        if part.shape != shape or not _finite_number(weight) or weight <= 0:
            continue
        part = part.double()  # sums and norms of float32 extremes overflow float32
        if not bool(torch.isfinite(part).all()):
            continue
        kept.append(index)
        kept_parts.append(part)
        kept_weights.append(float(weight))
    return kept, kept_parts, kept_weights


def capped_weights(weights: list[float], max_weight: float | None = None) -> list[float]:
    """Each weight capped at the group's lower median (and at `max_weight`)."""
    cap = sorted(weights)[(len(weights) - 1) // 2]
    if max_weight is not None:
        cap = min(cap, max_weight)
    return [min(weight, cap) for weight in weights]


def centered_clip(parts: torch.Tensor, share: torch.Tensor, radius: float, iterations: int,
                  reject_radius: float = float("inf")) -> tuple[torch.Tensor, torch.Tensor]:
    """CenteredClip of `parts` [n, ...] with weight shares `share` [n] (summing to 1), started at the
    coordinate-wise median m0; parts farther than `reject_radius` x tau from m0 count for nothing.
    Returns (the result, a boolean mask [n] of the parts that did not count)."""
    flat = parts.reshape(parts.shape[0], -1)  # [n, d]
    center = flat.median(dim=0).values  # [d]; torch's median is the lower one for even n
    distances = (flat - center).norm(dim=1)  # [n]
    typical = float(distances.median())
    tau = radius * typical
    if tau <= 0:  # a majority sent exactly the median: it is the answer
        return center.reshape(parts.shape[1:]), torch.zeros(len(flat), dtype=torch.bool)
    far = distances > max(reject_radius * tau, typical)  # at least half the senders always count
    share = torch.where(far, torch.zeros_like(share), share)
    share = share / share.sum()
    for _ in range(iterations):
        delta = flat - center  # [n, d]
        norms = delta.norm(dim=1).clamp_min(1e-30)
        factor = torch.clamp(tau / norms, max=1.0)  # [n]
        center = center + (share * factor) @ delta
    return center.reshape(parts.shape[1:]), far


def robust_average(parts: list[torch.Tensor], weights: list[float], shape: torch.Size,
                   policy: RobustConfig) -> RobustResult:
    """The aggregate of one part over the senders' `parts` (see the module docstring)."""
    kept, kept_parts, kept_weights = sanitize(parts, weights, shape)
    rejected = tuple(index for index in range(len(parts)) if index not in kept)
    if not kept:
        return RobustResult(torch.zeros(shape), rejected)
    capped = torch.tensor(capped_weights(kept_weights, policy.max_weight), dtype=torch.float64)
    share = capped / capped.sum()  # [n]; a weight near the float64 maximum still gives shares that sum to 1
    stacked = torch.stack(kept_parts)  # [n, ...]
    if len(kept) < 3:
        flat = stacked.reshape(len(kept), -1)  # [n, d]
        norms = flat.norm(dim=1)
        scale = torch.clamp(norms.min() / norms.clamp_min(1e-30), max=1.0)  # [n]: no part longer than the other
        average = ((share * scale) @ flat).reshape(stacked.shape[1:])
        outliers = ()
    else:
        average, far = centered_clip(stacked, share, policy.radius, policy.iterations, policy.reject_radius)
        outliers = tuple(kept[i] for i in far.nonzero().flatten().tolist())
    return RobustResult(average.float(), rejected, outliers)


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
