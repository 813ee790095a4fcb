"""shaping: the pure maths of VERL advantage shaping (verl-method.md sections 1-5).

Torch tensors in, tensors out; no I/O, logging or networking (tests/shaping/test_purity.py).

Names load on first use (`from shaping import IndicatorStats` imports shaping.stats then), so
that `shaping.config` can be read without importing torch (tests/test_light_configs.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "shaping.advantage": ("ESTIMATORS", "base_advantages", "shaping_bonus", "token_advantages"),
    "shaping.baselines": ("Baselines",),
    "shaping.config": ("ReferenceCompatConfig", "ShapingConfig"),
    "shaping.rank": ("RankIndicators", "compute_indicators", "effective_rank", "effective_rank_batch",
                     "effective_rank_svd", "rank_dynamics", "rank_dynamics_batch", "rank_dynamics_svd"),
    "shaping.signal": ("AuxSignal", "aux_signal", "deviations", "lambda_t"),
    "shaping.stats": ("INDICATORS", "IndicatorStats", "Moments"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'shaping' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from shaping.advantage import ESTIMATORS, base_advantages, shaping_bonus, token_advantages
    from shaping.baselines import Baselines
    from shaping.config import ReferenceCompatConfig, ShapingConfig
    from shaping.rank import (
        RankIndicators,
        compute_indicators,
        effective_rank,
        effective_rank_batch,
        effective_rank_svd,
        rank_dynamics,
        rank_dynamics_batch,
        rank_dynamics_svd,
    )
    from shaping.signal import AuxSignal, aux_signal, deviations, lambda_t
    from shaping.stats import INDICATORS, IndicatorStats, Moments
