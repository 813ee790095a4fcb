"""The auxiliary signal: deviations, the ERA gate, the two channels, lambda_t and the ablations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaping import Baselines, IndicatorStats, RankIndicators, ShapingConfig, aux_signal, deviations, lambda_t

pytestmark = pytest.mark.unit


def indicators(*rows: tuple[float, float, float]) -> RankIndicators:
    """Responses given as (ER, ERV, ERA); NaN = missing."""
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)
    return RankIndicators(er=t[:, 0], erv=t[:, 1], era=t[:, 2])


def baselines(er=None, erv=None, era=None, score=None, cfg: ShapingConfig | None = None) -> Baselines:
    """Baselines after one batch with these means (bias-corrected: the values exactly)."""
    def col(x):
        return torch.tensor([math.nan if x is None else x], dtype=torch.float64)
    stats = IndicatorStats.from_batch(RankIndicators(er=col(er), erv=col(erv), era=col(era)), col(score))
    return Baselines.initial(cfg).update(stats, cfg)


def by_hand(x: tuple[float, float, float], m: tuple[float, float, float], cfg: ShapingConfig,
            lam: float = 1.0) -> tuple[float, float]:
    """(r_aux, gate) of one response written out from verl-method.md section 4; x, m as (ER, ERV, ERA)."""
    def dev(xk, mk):
        return min(max((xk - mk) / (abs(mk) + 1e-8), -5.0), 5.0)
    d_er, d_erv, d_era = (dev(a, b) for a, b in zip(x, m))
    g = 0.5 if cfg.gate_mode == "fixed" else 1 / (1 + math.exp(-cfg.gamma * d_era))
    w = [g * e + (1 - g) * x_ for e, x_ in zip(cfg.w_explore, cfg.w_exploit)]
    if cfg.channel_mode == "both":
        w = [e + x_ for e, x_ in zip(cfg.w_explore, cfg.w_exploit)]
    return lam * (w[0] * math.tanh(d_era) + w[1] * math.tanh(d_erv) + w[2] * math.tanh(d_er)), g


def test_deviations_by_hand():
    ind = indicators((12.0, 0.3, -0.1), (8.0, -0.2, 0.05), (200.0, 9.0, 1.0))
    dev = deviations(ind, baselines(er=10.0, erv=0.1, era=0.1))
    # columns in the order (ERA, ERV, ER): (x - m) / (|m| + 1e-8), clipped to [-5, 5]
    assert dev[0].tolist() == pytest.approx([-2.0, 2.0, 0.2], rel=1e-7)
    assert dev[1].tolist() == pytest.approx([-0.5, -3.0, -0.2], rel=1e-7)
    assert dev[2].tolist() == pytest.approx([5.0, 5.0, 5.0])


def test_missing_indicator_or_baseline_gives_deviation_zero():
    ind = indicators((12.0, math.nan, math.nan), (math.nan, 0.5, 0.2))
    dev = deviations(ind, baselines(er=10.0, erv=0.25))  # no ERA baseline yet
    assert dev[0].tolist() == pytest.approx([0.0, 0.0, 0.2])
    assert dev[1].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert torch.isfinite(dev).all()


@pytest.mark.parametrize("cfg", [
    ShapingConfig(),
    ShapingConfig(gamma=0.5, lam=0.7),
    ShapingConfig(gate_mode="fixed"),
    ShapingConfig(channel_mode="both"),
    ShapingConfig(w_explore=(0.2, 0.0, 1.0), w_exploit=(0.0, 1.0, 0.3)),
])
def test_aux_signal_matches_the_formulas_by_hand(cfg):
    m = (10.0, 0.2, -0.05)
    xs = [(12.0, 0.3, -0.1), (8.0, -0.2, 0.05), (10.0, 0.2, -0.05), (30.0, -5.0, 2.0)]
    aux = aux_signal(indicators(*[(er, erv, era) for er, erv, era in xs]), baselines(*m), cfg)
    for i, x in enumerate(xs):
        r, g = by_hand(x, m, cfg, lam=cfg.lam)
        assert float(aux.r_aux[i]) == pytest.approx(r, rel=1e-9, abs=1e-12)
        assert float(aux.gate[i]) == pytest.approx(g, rel=1e-12)
    assert aux.lam == cfg.lam


def test_gate_sends_incentive_to_exploration_when_era_is_high():
    m = (10.0, 0.2, 0.1)
    aux = aux_signal(indicators((12.0, 0.1, 0.5), (12.0, 0.1, -0.3)), baselines(*m), ShapingConfig())
    high, low = aux.gate.tolist()
    assert high > 0.5 > low
    # high ERA: the ER channel dominates (ER above baseline -> positive); low ERA: the ERV
    # channel dominates (ERV below baseline -> negative)
    assert aux.r_aux[0] > 0 > aux.r_aux[1]


@settings(max_examples=100, deadline=None)
@given(x=st.tuples(*[st.one_of(st.floats(-1e3, 1e3), st.just(math.nan))] * 3),
       m=st.tuples(*[st.floats(-1e3, 1e3)] * 3), lam=st.floats(0.0, 5.0),
       gate_mode=st.sampled_from(["era", "fixed"]))
def test_r_aux_lies_in_minus_lambda_lambda(x, m, lam, gate_mode):
    cfg = ShapingConfig(lam=lam, gate_mode=gate_mode)
    aux = aux_signal(indicators(x), baselines(*m), cfg)
    assert torch.isfinite(aux.r_aux).all()
    assert abs(float(aux.r_aux[0])) <= lam
    assert 0.0 <= float(aux.gate[0]) <= 1.0


def test_no_signal_before_a_baseline_exists():
    aux = aux_signal(indicators((12.0, 0.3, 0.1), (5.0, -1.0, 2.0)), Baselines.initial(), ShapingConfig())
    assert torch.equal(aux.r_aux, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(aux.gate, torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.equal(aux.deviations, torch.zeros(2, 3, dtype=torch.float64))


def test_lambda_fixed_and_performance_scaled():
    fixed = ShapingConfig(lam=0.8)
    perf = ShapingConfig(lam=0.8, lambda_mode="performance", score_min=-1.0, score_max=1.0)
    assert lambda_t(baselines(er=1.0, score=0.5), fixed) == 0.8
    assert lambda_t(baselines(er=1.0), perf) == 0.8  # no score baseline yet: the full lambda
    # s_bar = (0.5 - (-1)) / 2 = 0.75 -> lambda_t = 0.8 * 0.25
    assert lambda_t(baselines(er=1.0, score=0.5), perf) == pytest.approx(0.2)
    assert lambda_t(baselines(er=1.0, score=1.0), perf) == pytest.approx(0.0)
    aux = aux_signal(indicators((2.0, 0.0, 0.0)), baselines(er=1.0, score=0.5), perf)
    assert aux.lam == pytest.approx(0.2) and abs(float(aux.r_aux[0])) <= 0.2


def test_signal_does_not_mutate_the_baselines():
    b = baselines(er=10.0, erv=0.2, era=0.1)
    before = b.to_dict()
    aux_signal(indicators((12.0, 0.3, 0.2)), b, ShapingConfig())
    assert b.to_dict() == before
