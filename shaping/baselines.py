"""Swarm- or peer-level baselines m_k: bias-corrected EMAs of the batch means (verl-method.md 4).

    raw_k <- (1 - alpha) raw_k + alpha * batch_mean_k        (only for batches holding indicator k)
    m_k    = raw_k / (1 - (1 - alpha)^n_k)                    (Adam-style bias correction)

With alpha = 0.3 the first update gives m_k = the first batch mean exactly. The reference
starts raw_k at 0 and uses it uncorrected (`compat.zero_start_baselines`), which makes every
early deviation strongly positive. The state is a plain dict when serialised (DHT, checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shaping.config import ShapingConfig
from shaping.stats import INDICATORS, IndicatorStats


def _zeros() -> dict[str, float]:
    return {k: 0.0 for k in INDICATORS}


def _counts() -> dict[str, int]:
    return {k: 0 for k in INDICATORS}


@dataclass(frozen=True)
class Baselines:
    """EMA state per indicator (ER, ERV, ERA, score). Immutable: `update` returns a new one."""

    raw: dict[str, float] = field(default_factory=_zeros)
    updates: dict[str, int] = field(default_factory=_counts)
    alpha: float = 0.3
    corrected: bool = True

    @classmethod
    def initial(cls, cfg: ShapingConfig | None = None) -> Baselines:
        cfg = cfg or ShapingConfig()
        return cls(alpha=cfg.alpha, corrected=not cfg.compat.zero_start_baselines)

    def update(self, stats: IndicatorStats, cfg: ShapingConfig | None = None) -> Baselines:
        """Fold one (possibly merged) batch in; indicators absent from the batch keep their value."""
        alpha = cfg.alpha if cfg is not None else self.alpha
        raw, updates = dict(self.raw), dict(self.updates)
        for name, mean in stats.means().items():
            if mean is None:
                continue
            raw[name] = (1.0 - alpha) * raw[name] + alpha * mean
            updates[name] += 1
        return Baselines(raw, updates, alpha, self.corrected)

    def value(self, name: str) -> float | None:
        """m_k, or None before any batch held indicator k (always a number in reference mode)."""
        if name not in self.raw:
            raise ValueError(f"unknown indicator {name!r}; use one of {INDICATORS}")
        if not self.corrected:
            return self.raw[name]
        n = self.updates[name]
        if n == 0:
            return None
        return self.raw[name] / (1.0 - (1.0 - self.alpha) ** n)

    def values(self) -> dict[str, float | None]:
        return {k: self.value(k) for k in INDICATORS}

    @property
    def ready(self) -> bool:
        """True once a baseline exists: no auxiliary signal is given before that."""
        return not self.corrected or any(self.updates[k] > 0 for k in ("er", "erv", "era"))

    def score_level(self, cfg: ShapingConfig) -> float | None:
        """s_bar: the score baseline mapped to [0, 1] with the configured score range."""
        score = self.value("score")
        if score is None:
            return None
        return min(max((score - cfg.score_min) / (cfg.score_max - cfg.score_min), 0.0), 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"raw": dict(self.raw), "updates": dict(self.updates), "alpha": self.alpha, "corrected": self.corrected}

    @classmethod
    def from_dict(cls, data: Any) -> Baselines:
        """Parse `to_dict` output; ValueError on anything malformed."""
        try:
            raw = {k: float(data["raw"][k]) for k in INDICATORS}
            updates = {k: data["updates"][k] for k in INDICATORS}
            alpha, corrected = float(data["alpha"]), data["corrected"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed baselines: {err!r}") from None
        if not all(math.isfinite(v) for v in raw.values()):
            raise ValueError("baselines must be finite numbers")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in updates.values()):
            raise ValueError("baseline update counts must be non-negative integers")
        if not 0.0 < alpha <= 1.0 or not isinstance(corrected, bool):
            raise ValueError("baselines need 0 < alpha <= 1 and a boolean `corrected`")
        return cls(raw, updates, alpha, corrected)
