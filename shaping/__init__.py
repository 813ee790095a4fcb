"""shaping: the pure maths of VERL advantage shaping (verl-method.md sections 1-5).

Torch tensors in, tensors out; no I/O, logging or networking (tests/shaping/test_purity.py).
"""

from shaping.advantage import ESTIMATORS, base_advantages, shaping_bonus, token_advantages
from shaping.baselines import Baselines
from shaping.config import ReferenceCompatConfig, ShapingConfig
from shaping.rank import (RankIndicators, compute_indicators, effective_rank, effective_rank_batch,
                          effective_rank_svd, rank_dynamics, rank_dynamics_batch, rank_dynamics_svd)
from shaping.signal import AuxSignal, aux_signal, deviations, lambda_t
from shaping.stats import INDICATORS, IndicatorStats, Moments

__all__ = [
    "ESTIMATORS", "INDICATORS", "AuxSignal", "Baselines", "IndicatorStats", "Moments", "RankIndicators",
    "ReferenceCompatConfig", "ShapingConfig", "aux_signal", "base_advantages", "compute_indicators",
    "deviations", "effective_rank", "effective_rank_batch", "effective_rank_svd", "lambda_t",
    "rank_dynamics", "rank_dynamics_batch", "rank_dynamics_svd", "shaping_bonus", "token_advantages",
]
