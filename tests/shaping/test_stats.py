"""Mergeable indicator statistics: k peers' statistics merged equal one batch holding all responses."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaping import INDICATORS, IndicatorStats, Moments, RankIndicators

pytestmark = pytest.mark.unit

value = st.one_of(st.floats(-50, 50, allow_nan=False), st.just(math.nan))
response = st.tuples(value, value, value, st.floats(-1, 1), st.floats(0, 1))  # er, erv, era, score, gate


def stats_of(rows: list[tuple[float, ...]]) -> IndicatorStats:
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    return IndicatorStats.from_batch(RankIndicators(er=t[:, 0], erv=t[:, 1], era=t[:, 2]), t[:, 3], t[:, 4])


def assert_same_stats(a: IndicatorStats, b: IndicatorStats) -> None:
    for k in INDICATORS:
        assert a.moments[k].count == b.moments[k].count  # counts are exact integers
        assert a.moments[k].sum == pytest.approx(b.moments[k].sum, rel=1e-12, abs=1e-9)
        assert a.moments[k].sumsq == pytest.approx(b.moments[k].sumsq, rel=1e-12, abs=1e-9)
    assert a.gate_count == b.gate_count
    assert a.gate_sum == pytest.approx(b.gate_sum, rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(peers=st.lists(st.lists(response, min_size=0, max_size=12), min_size=1, max_size=6))
def test_merging_peers_equals_one_batch_of_all_responses(peers):
    merged = IndicatorStats.merge_all(stats_of(rows) for rows in peers)
    everything = stats_of([r for rows in peers for r in rows])
    assert_same_stats(merged, everything)
    for k, mean in merged.means().items():
        other = everything.means()[k]
        assert (mean is None and other is None) or mean == pytest.approx(other, rel=1e-9, abs=1e-12)
    # merge order does not matter
    assert_same_stats(IndicatorStats.merge_all(stats_of(rows) for rows in reversed(peers)), merged)


def test_missing_values_do_not_count():
    stats = stats_of([(2.0, math.nan, math.nan, 1.0, 0.25), (4.0, 1.0, math.nan, 0.0, 0.75)])
    assert stats.moments["er"] == Moments(2, 6.0, 20.0)
    assert stats.moments["erv"] == Moments(1, 1.0, 1.0)
    assert stats.moments["era"] == Moments(0, 0.0, 0.0)
    assert stats.means() == {"er": 3.0, "erv": 1.0, "era": None, "score": 0.5}
    assert stats.gate_mean == 0.5 and stats.num_responses == 2


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=30))
def test_moments_mean_and_population_std(values):
    m = Moments.of(torch.tensor(values, dtype=torch.float64))
    assert m.count == len(values)
    assert m.mean == pytest.approx(float(np.mean(values)), abs=1e-9)
    assert m.std == pytest.approx(float(np.std(values)), abs=1e-6 * (1 + max(abs(v) for v in values)))


def test_empty_statistics_have_no_means():
    empty = IndicatorStats()
    assert empty.means() == {k: None for k in INDICATORS}
    assert empty.std() == {k: None for k in INDICATORS}
    assert empty.gate_mean is None and empty.num_responses == 0


def test_batch_sizes_must_agree():
    ind = RankIndicators(er=torch.ones(3), erv=torch.ones(3), era=torch.ones(3))
    with pytest.raises(ValueError, match="same batch size"):
        IndicatorStats.from_batch(ind, torch.ones(4))


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(response, min_size=0, max_size=10), with_gate=st.booleans())
def test_dict_round_trip(rows, with_gate):
    stats = stats_of(rows)
    if not with_gate:
        stats = IndicatorStats(stats.moments)
    assert IndicatorStats.from_dict(stats.to_dict()) == stats


def good_dict() -> dict:
    return stats_of([(2.0, 1.0, 0.5, 1.0, 0.5), (3.0, -1.0, 0.0, 0.0, 0.25)]).to_dict()


def corrupt(path: tuple, new) -> dict:
    data = good_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    if new is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return data


@pytest.mark.parametrize("data", [
    None, [], "moments", 3,
    corrupt(("moments",), KeyError),
    corrupt(("moments", "erv"), KeyError),
    corrupt(("gate_sum",), KeyError),
    corrupt(("moments", "bogus"), [0, 0.0, 0.0]),
    corrupt(("moments", "er"), [1, 2.0]),
    corrupt(("moments", "er"), {"count": 1}),
    corrupt(("moments", "er"), [-1, 0.0, 0.0]),
    corrupt(("moments", "er"), [1.5, 1.0, 1.0]),
    corrupt(("moments", "er"), [True, 1.0, 1.0]),
    corrupt(("moments", "er"), [2, math.nan, 1.0]),
    corrupt(("moments", "er"), [2, 1.0, math.inf]),
    corrupt(("moments", "er"), [2, 1.0, -1.0]),
    corrupt(("moments", "er"), [0, 1.0, 1.0]),
    corrupt(("moments", "er"), [2, 10.0, 1.0]),  # sum^2 = 100 > count * sumsq = 2
    corrupt(("gate_count",), -1),
    corrupt(("gate_count",), 2.0),
    corrupt(("gate_sum",), math.nan),
    corrupt(("gate_sum",), 5.0),  # 2 gates in [0, 1] cannot sum to 5
    corrupt(("gate_sum",), -0.5),  # nor to a negative number
])
def test_from_dict_rejects_corrupt_input(data):
    with pytest.raises(ValueError):
        IndicatorStats.from_dict(data)
