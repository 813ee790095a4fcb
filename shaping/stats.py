"""Mergeable sufficient statistics of a batch's indicators: the peers' meta-signal.

Count, sum and sum of squares per indicator (ER, ERV, ERA, score) plus the gate sum: adding
the statistics of k peers gives exactly (up to float summation order) the statistics of one
batch holding all their responses, which is how the coordinator forms swarm-wide means.
Missing values (NaN) do not count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from shaping.rank import RankIndicators

INDICATORS = ("er", "erv", "era", "score")


@dataclass(frozen=True)
class Moments:
    count: int = 0
    sum: float = 0.0
    sumsq: float = 0.0

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)

    @classmethod
    def of(cls, values: torch.Tensor) -> Moments:
        finite = values.detach().to(torch.float64)
        finite = finite[torch.isfinite(finite)]
        return cls(int(finite.numel()), float(finite.sum()), float((finite * finite).sum()))

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def std(self) -> float | None:
        if not self.count:
            return None
        mean = self.sum / self.count
        return math.sqrt(max(self.sumsq / self.count - mean * mean, 0.0))


def _empty() -> dict[str, Moments]:
    return {name: Moments() for name in INDICATORS}


@dataclass(frozen=True)
class IndicatorStats:
    """Per-indicator moments of one batch (or of several merged batches)."""

    moments: dict[str, Moments] = field(default_factory=_empty)
    gate_sum: float = 0.0
    gate_count: int = 0

    @classmethod
    def from_batch(cls, ind: RankIndicators, scores: torch.Tensor, gates: torch.Tensor | None = None) -> IndicatorStats:
        """Statistics of one batch: indicators [B] each (NaN = missing), scores [B], gates [B] or None."""
        values = {"er": ind.er, "erv": ind.erv, "era": ind.era, "score": scores}
        sizes = {v.shape[0] for v in values.values()}
        if len(sizes) != 1:
            raise ValueError(f"indicators and scores must have the same batch size, got {sorted(sizes)}")
        gate = Moments.of(gates) if gates is not None else Moments()
        return cls({k: Moments.of(v) for k, v in values.items()}, gate.sum, gate.count)

    def merge(self, other: IndicatorStats) -> IndicatorStats:
        return IndicatorStats({k: self.moments[k] + other.moments[k] for k in INDICATORS},
                              self.gate_sum + other.gate_sum, self.gate_count + other.gate_count)

    @staticmethod
    def merge_all(stats: Iterable[IndicatorStats]) -> IndicatorStats:
        merged = IndicatorStats()
        for item in stats:
            merged = merged.merge(item)
        return merged

    def means(self) -> dict[str, float | None]:
        return {k: self.moments[k].mean for k in INDICATORS}

    def std(self) -> dict[str, float | None]:
        return {k: self.moments[k].std for k in INDICATORS}

    @property
    def gate_mean(self) -> float | None:
        return self.gate_sum / self.gate_count if self.gate_count else None

    @property
    def num_responses(self) -> int:
        return self.moments["score"].count

    def to_dict(self) -> dict[str, Any]:
        return {"moments": {k: [m.count, m.sum, m.sumsq] for k, m in self.moments.items()},
                "gate_sum": self.gate_sum, "gate_count": self.gate_count}

    @classmethod
    def from_dict(cls, data: Any) -> IndicatorStats:
        """Parse `to_dict` output; ValueError on anything malformed (it may come from another peer)."""
        try:
            raw = data["moments"]
            moments = {k: _moments(k, raw[k]) for k in INDICATORS}
            gate_sum, gate_count = float(data["gate_sum"]), data["gate_count"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed indicator statistics: missing or wrong-typed field {err}") from None
        if set(raw) != set(INDICATORS):
            raise ValueError(f"indicator statistics must hold exactly {INDICATORS}, got {sorted(raw)}")
        if not isinstance(gate_count, int) or gate_count < 0 or not math.isfinite(gate_sum):
            raise ValueError("gate statistics must be a non-negative integer count and a finite sum")
        if not -1e-9 <= gate_sum <= gate_count * (1 + 1e-9):
            raise ValueError(f"gate sum {gate_sum} outside [0, count={gate_count}]: gates lie in [0, 1]")
        return cls(moments, gate_sum, gate_count)


def _moments(name: str, raw: Any) -> Moments:
    if not isinstance(raw, (list, tuple)) or len(raw) != 3:
        raise ValueError(f"moments of {name} must be [count, sum, sumsq], got {raw!r}")
    count, total, sumsq = raw
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count of {name} must be a non-negative integer, got {count!r}")
    total, sumsq = float(total), float(sumsq)
    if not (math.isfinite(total) and math.isfinite(sumsq)) or sumsq < 0:
        raise ValueError(f"sums of {name} must be finite with a non-negative sum of squares")
    if count == 0 and (total != 0 or sumsq != 0):
        raise ValueError(f"{name} has zero count but non-zero sums")
    # Cauchy-Schwarz: sum^2 <= count * sumsq for any real values (small slack for rounding)
    if total * total > count * sumsq * (1 + 1e-9) + 1e-12:
        raise ValueError(f"moments of {name} are inconsistent (sum^2 > count * sumsq)")
    return Moments(count, total, sumsq)
