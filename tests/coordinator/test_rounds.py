"""Round merging: per-peer meta-signals merged count-weighted equal one batch of all responses."""

import random

import pytest
from coordinator_fakes import batch_stats, meta_record, random_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.rounds import RoundState, balance_of, merge_round, select_new
from protos import records, swarm_pb2
from shaping import INDICATORS, IndicatorStats, ShapingConfig

CFG = ShapingConfig()


def _assert_stats_close(actual: IndicatorStats, expected: IndicatorStats) -> None:
    for name in INDICATORS:
        got, want = actual.moments[name], expected.moments[name]
        assert got.count == want.count, name
        assert got.sum == pytest.approx(want.sum, rel=1e-12, abs=1e-9), name
        assert got.sumsq == pytest.approx(want.sumsq, rel=1e-12, abs=1e-9), name
    assert actual.gate_count == expected.gate_count
    assert actual.gate_sum == pytest.approx(expected.gate_sum, rel=1e-12, abs=1e-9)


@pytest.mark.unit
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), num_peers=st.integers(1, 5), steps=st.integers(1, 3))
def test_merged_round_equals_one_batch_of_all_responses(seed, num_peers, steps):
    rng = random.Random(seed)
    everything = {name: [] for name in INDICATORS}
    all_gates, signals = [], []
    for peer in range(num_peers):
        for step in range(steps):
            values, gates = random_batch(rng, rng.randint(1, 12))
            for name in INDICATORS:
                everything[name] += values[name]
            all_gates += gates
            signals.append(meta_record(f"peer{peer}", step, batch_stats(values, gates)))
    rng.shuffle(signals)  # arrival order must not matter

    result = merge_round(RoundState.initial(CFG), select_new(signals, lambda p, s: False), CFG,
                         run="test-run", coordinator_key="k", issued_at=5.0)

    one_batch = batch_stats(everything, all_gates)
    _assert_stats_close(records.stats_of(result.record.merged), one_batch)
    expected_baselines = RoundState.initial(CFG).baselines.update(one_batch, CFG)
    for name in INDICATORS:
        want = expected_baselines.value(name)  # None when no response had the indicator
        got = records.get(result.record.baselines, name)
        assert got is None if want is None else got == pytest.approx(want, rel=1e-9)
    assert result.record.num_peers == num_peers and result.record.num_contributions == num_peers * steps
    if all_gates:
        assert result.record.balance.mean_gate == pytest.approx(sum(all_gates) / len(all_gates))
    else:
        assert not result.record.balance.HasField("mean_gate")


@pytest.mark.unit
def test_select_new_counts_each_peer_step_once():
    rng = random.Random(0)
    old = meta_record("a", 1, batch_stats(*random_batch(rng, 4)), published_at=10.0)
    newer = meta_record("a", 1, batch_stats(*random_batch(rng, 4)), published_at=11.0)
    merged_before = meta_record("b", 7, batch_stats(*random_batch(rng, 4)))
    other = meta_record("b", 8, batch_stats(*random_batch(rng, 4)))
    kept = select_new([old, merged_before, newer, other], lambda peer, step: (peer, step) == ("b", 7))
    assert kept == [newer, other]


@pytest.mark.unit
def test_rounds_advance_from_the_previous_state():
    rng = random.Random(1)
    first = merge_round(RoundState.initial(CFG), [meta_record("a", 0, batch_stats(*random_batch(rng, 5)))], CFG,
                        run="test-run", coordinator_key="k", issued_at=1.0)
    stats = batch_stats(*random_batch(rng, 5))
    second = merge_round(first.state, [meta_record("a", 1, stats)], CFG, run="test-run", coordinator_key="k",
                         issued_at=2.0)
    assert second.record.round == 2
    assert records.baselines_of(second.record.baselines) == first.state.baselines.update(stats, CFG)
    assert second.state.baselines == first.state.baselines.update(stats, CFG)
    assert merge_round(second.state, [], CFG, run="test-run", coordinator_key="k", issued_at=3.0) is None


@pytest.mark.unit
def test_balance_is_the_mean_gate_split_into_explore_and_exploit():
    assert balance_of(batch_stats({"er": [1.0]}, [])) == swarm_pb2.Balance()  # all unset: nothing gated
    balance = balance_of(batch_stats({"er": [1.0, 2.0]}, [0.2, 0.6]))
    assert balance.mean_gate == pytest.approx(0.4)
    assert balance.explore_share == pytest.approx(0.4) and balance.exploit_share == pytest.approx(0.6)
