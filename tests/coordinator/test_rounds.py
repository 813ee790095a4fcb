"""Round merging: per-peer meta-signals merged count-weighted equal one batch of all responses."""

import random

import pytest
from coordinator_fakes import batch_stats, meta_record, random_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.config import TrustConfig
from coordinator.rounds import RoundState, balance_of, hold_back, merge_round, select_new, vet
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


# ---------------------------------------------------------------- peers that lie (docs/security.md)

TRUST = TrustConfig(max_rollouts_per_step=64)


def _honest(peer: str, step: int, rng: random.Random, size: int = 16) -> swarm_pb2.MetaSignal:
    return meta_record(peer, step, batch_stats(*random_batch(rng, size)), published_at=1000.0)


@pytest.mark.unit
def test_counts_above_the_bound_and_future_dates_are_rejected_by_rule():
    rng = random.Random(0)
    assert vet(_honest("a", 1, rng), 1000.0, TRUST) is None
    inflated = records.replace(_honest("a", 2, rng), num_rollouts=10**12)
    assert vet(inflated, 1000.0, TRUST).rule == "bounds"
    huge = _honest("a", 3, rng, size=65)  # statistics of more responses than one step may hold
    rejection = vet(huge, 1000.0, TRUST)
    assert rejection.rule == "bounds" and "er.count" in rejection.reason and rejection.subkey == "a#3"
    assert vet(records.replace(_honest("a", 4, rng), published_at=1000.0 + 61), 1000.0, TRUST).rule == "future"


@pytest.mark.unit
def test_an_outsider_with_wild_means_is_held_out_and_the_baseline_stays_honest():
    rng = random.Random(1)
    honest = [_honest(peer, step, rng) for peer in ("a", "b") for step in range(3)]
    values, gates = random_batch(rng, 16)
    values["er"] = [1e6] * 16  # the outsider's claimed effective rank
    outsider = meta_record("mallory", 1, batch_stats(values, gates), published_at=1000.0)
    kept, rejected, deferred = hold_back([*honest, outsider], TRUST)
    assert kept == sorted(honest, key=lambda s: (s.peer_id, s.step)) and deferred == 0
    assert [(r.subkey, r.rule) for r in rejected] == [("mallory#1", "outlier")] and "mean er" in rejected[0].reason
    result = merge_round(RoundState.initial(CFG), kept, CFG, run="r", coordinator_key="k", issued_at=1.0)
    assert records.baselines_of(result.record.baselines).value("er") < 50


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(20))
def test_honest_peers_are_never_held_out(seed):
    rng = random.Random(seed)
    signals = [_honest(f"peer{p}", step, rng, size=rng.randint(4, 64)) for p in range(rng.randint(3, 8))
               for step in range(rng.randint(1, 3))]
    kept, rejected, deferred = hold_back(signals, TRUST)
    assert rejected == [] and deferred == 0 and len(kept) == len(signals)


@pytest.mark.unit
def test_no_peer_gets_more_than_its_share_of_a_round():
    rng = random.Random(2)
    honest = [_honest(peer, 1, rng) for peer in ("a", "b", "c")]
    spam = [_honest("mallory", step, rng) for step in range(100)]  # a hundred steps in one round
    kept, rejected, deferred = hold_back(honest + spam, TRUST)
    mine = [s.step for s in kept if s.peer_id == "mallory"]
    assert rejected == [] and deferred == 96 and mine == [96, 97, 98, 99]  # 4 x the typical 1, newest first
