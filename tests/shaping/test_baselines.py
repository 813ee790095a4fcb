"""EMA baselines: bias-corrected numbers by hand, the reference's zero start, merging, serialisation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaping import INDICATORS, Baselines, IndicatorStats, Moments, RankIndicators, ShapingConfig

pytestmark = pytest.mark.unit


def batch(er: float | None = None, erv: float | None = None, era: float | None = None,
          score: float | None = None) -> IndicatorStats:
    """Statistics of a one-response batch holding the given indicator values (None = missing)."""
    def col(x):
        return torch.tensor([math.nan if x is None else x], dtype=torch.float64)
    return IndicatorStats.from_batch(RankIndicators(er=col(er), erv=col(erv), era=col(era)), col(score))


def test_bias_corrected_ema_by_hand():
    b = Baselines.initial(ShapingConfig(alpha=0.3))
    assert b.values() == {k: None for k in INDICATORS} and not b.ready
    b = b.update(batch(er=2.0, erv=1.0, era=-1.0, score=0.5))
    # raw = 0.3 * 2 = 0.6, corrected by 1 - 0.7 = 0.3: exactly the first batch mean
    assert b.raw["er"] == pytest.approx(0.6)
    assert b.value("er") == pytest.approx(2.0) and b.value("era") == pytest.approx(-1.0)
    b = b.update(batch(er=4.0, erv=1.0, era=-1.0, score=0.5))
    # raw = 0.7 * 0.6 + 0.3 * 4 = 1.62; corrected by 1 - 0.7^2 = 0.51: (0.42 + 1.2) / 0.51
    assert b.raw["er"] == pytest.approx(1.62)
    assert b.value("er") == pytest.approx(1.62 / 0.51) == pytest.approx(3.1764705882352944)
    b = b.update(batch(er=1.0, erv=1.0, era=-1.0, score=0.5))
    # raw = 0.7 * 1.62 + 0.3 = 1.434; corrected by 1 - 0.343 = 0.657
    assert b.value("er") == pytest.approx(1.434 / 0.657)
    assert b.value("erv") == pytest.approx(1.0)  # a constant stream is its own baseline at every step
    assert b.ready


@settings(max_examples=50, deadline=None)
@given(means=st.lists(st.floats(-100, 100), min_size=1, max_size=30), alpha=st.floats(0.01, 1.0))
def test_corrected_baseline_is_the_normalised_exponential_average(means, alpha):
    b = Baselines.initial(ShapingConfig(alpha=alpha))
    for m in means:
        b = b.update(batch(er=m))
    n = len(means)
    weights = [alpha * (1 - alpha) ** (n - 1 - i) for i in range(n)]
    expected = sum(w * m for w, m in zip(weights, means)) / sum(weights)
    assert b.value("er") == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert min(means) - 1e-9 <= b.value("er") <= max(means) + 1e-9


def test_missing_indicator_keeps_its_baseline_and_count():
    b = Baselines.initial().update(batch(er=3.0, erv=2.0, score=1.0))
    assert b.value("era") is None and b.updates["era"] == 0
    b2 = b.update(batch(er=5.0))  # no ERV, ERA or score in this batch
    assert b2.value("erv") == b.value("erv") and b2.updates["erv"] == 1
    assert b2.value("score") == b.value("score")
    assert b2.updates["er"] == 2


def test_reference_mode_starts_at_zero_without_correction():
    cfg = ShapingConfig.reference()
    b = Baselines.initial(cfg)
    assert not b.corrected and b.alpha == 0.3
    assert b.values() == {k: 0.0 for k in INDICATORS} and b.ready  # compared against 0 from step 1
    b = b.update(batch(er=2.0, erv=1.0, era=-1.0, score=1.0)).update(batch(er=4.0, erv=1.0, era=-1.0, score=1.0))
    assert b.value("er") == pytest.approx(1.62)  # 0.7 * 0.6 + 0.3 * 4, uncorrected
    assert b.value("erv") == pytest.approx(0.51)


def test_initial_takes_alpha_from_the_config():
    b = Baselines.initial(ShapingConfig(alpha=0.5)).update(batch(er=2.0)).update(batch(er=4.0))
    assert b.alpha == 0.5 and b.value("er") == pytest.approx((0.5 * 2 * 0.5 + 0.5 * 4) / 0.75)


def test_merged_peer_statistics_give_the_baselines_of_one_big_batch():
    peers = [IndicatorStats.from_batch(RankIndicators(er=torch.tensor(er), erv=torch.tensor(erv),
                                                      era=torch.tensor(era)), torch.tensor(score))
             for er, erv, era, score in [([1.0, 2.0], [0.5, math.nan], [0.1, 0.2], [1.0, 0.0]),
                                         ([4.0], [math.nan], [math.nan], [1.0]),
                                         ([3.0, 3.0, 6.0], [1.5, -0.5, 0.0], [0.3, math.nan, -0.1], [0.0, 0.0, 1.0])]]
    merged = Baselines.initial().update(IndicatorStats.merge_all(peers))
    assert merged.value("er") == pytest.approx((1 + 2 + 4 + 3 + 3 + 6) / 6)
    assert merged.value("erv") == pytest.approx((0.5 + 1.5 - 0.5 + 0.0) / 4)
    assert merged.value("era") == pytest.approx((0.1 + 0.2 + 0.3 - 0.1) / 4)
    assert merged.value("score") == pytest.approx(3 / 6)


def test_score_level_maps_and_clamps():
    cfg = ShapingConfig(score_min=-1.0, score_max=1.0)
    b = Baselines.initial(cfg)
    assert b.score_level(cfg) is None
    assert b.update(batch(score=0.5)).score_level(cfg) == pytest.approx(0.75)
    assert b.update(batch(score=3.0)).score_level(cfg) == 1.0


def test_unknown_indicator_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown indicator"):
        Baselines.initial().value("entropy")


@settings(max_examples=40, deadline=None)
@given(means=st.lists(st.tuples(st.floats(-10, 10), st.none() | st.floats(-10, 10)), max_size=8),
       reference=st.booleans())
def test_dict_round_trip(means, reference):
    cfg = ShapingConfig.reference() if reference else ShapingConfig()
    b = Baselines.initial(cfg)
    for er, erv in means:
        b = b.update(batch(er=er, erv=erv))
    assert Baselines.from_dict(b.to_dict()) == b


def corrupt(key: str, sub: str | None, new) -> dict:
    data = Baselines.initial().update(batch(er=1.0, erv=2.0, era=3.0, score=0.5)).to_dict()
    target = data[key] if sub else data
    field = sub or key
    if new is KeyError:
        del target[field]
    else:
        target[field] = new
    return data


@pytest.mark.parametrize("data", [
    None, "raw", [1, 2],
    corrupt("raw", None, KeyError), corrupt("raw", "er", KeyError), corrupt("updates", "era", KeyError),
    corrupt("raw", "er", "abc"), corrupt("raw", "er", math.nan), corrupt("raw", "erv", math.inf),
    corrupt("updates", "er", -1), corrupt("updates", "er", 1.0), corrupt("updates", "er", True),
    corrupt("alpha", None, 0.0), corrupt("alpha", None, 1.5), corrupt("alpha", None, KeyError),
    corrupt("corrected", None, "yes"), corrupt("corrected", None, KeyError),
])
def test_from_dict_rejects_corrupt_input(data):
    with pytest.raises(ValueError):
        Baselines.from_dict(data)


def test_moments_of_a_merged_batch_feed_the_ema_once():
    """One update per (merged) batch, whatever the number of responses it holds."""
    stats = IndicatorStats({"er": Moments(10, 30.0, 100.0), "erv": Moments(), "era": Moments(),
                            "score": Moments(10, 5.0, 5.0)})
    b = Baselines.initial().update(stats)
    assert b.updates["er"] == 1 and b.value("er") == pytest.approx(3.0)
