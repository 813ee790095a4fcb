"""Pure round logic: vet and de-duplicate meta-signals, merge them exactly, advance the baselines.

A round merges every (peer, step) meta-signal not merged before, count-weighted and exact
(`IndicatorStats.merge_all` adds counts, sums and sums of squares), advances the global EMA
baselines once with the merged batch means (`Baselines.update`), and derives lambda_t and the
explore/exploit balance for the steps that follow. No I/O here: the ledger feeds it records
and persists what it returns.

Peers may lie (docs/security.md). Before merging, `vet` rejects what no honest peer sends (counts
above `trust.max_rollouts_per_step`, dates in the future, identities that are banned or, in a
closed swarm, not admitted) and `hold_back` keeps a round robust to the rest: a peer whose means
lie far outside the other peers' (3 or more peers) is held out, and no peer gets more than
`trust.max_share` times the typical peer's number of meta-signals into one round.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from coordinator.config import TrustConfig
from plumbing.dht_records import Rejection
from protos import records, swarm_pb2
from shaping import INDICATORS, Baselines, IndicatorStats, ShapingConfig, lambda_t


@dataclass(frozen=True)
class RoundState:
    """What the next round starts from: the last committed round number and the baselines after it."""

    round: int
    baselines: Baselines

    @classmethod
    def initial(cls, cfg: ShapingConfig) -> RoundState:
        return cls(round=0, baselines=Baselines.initial(cfg))

    @classmethod
    def after(cls, record: swarm_pb2.BalanceWeights | None, cfg: ShapingConfig) -> RoundState:
        """Resume after a committed round (or from scratch when there is none)."""
        if record is None:
            return cls.initial(cfg)
        return cls(round=record.round, baselines=records.baselines_of(record.baselines))


def balance_of(merged: IndicatorStats) -> swarm_pb2.Balance:
    """The swarm's explore/exploit balance: mean gate g = gate_sum / gate_count over all gated responses.

    The exploration channel (ER) is weighted by g and the exploitation channel (ERV) by 1 - g,
    so g is the share of the incentive that currently goes to exploration (unset when nothing was gated).
    """
    if merged.gate_count <= 0:
        return swarm_pb2.Balance()
    gate = min(1.0, max(0.0, merged.gate_sum / merged.gate_count))  # rounding may leave [0, 1] by an ulp
    return swarm_pb2.Balance(mean_gate=gate, explore_share=gate, exploit_share=1.0 - gate)


@dataclass(frozen=True)
class RoundResult:
    """A merged round: the state after it, the record to publish, and the meta-signals it merged."""

    state: RoundState
    record: swarm_pb2.BalanceWeights
    contributions: tuple[swarm_pb2.MetaSignal, ...]


def select_new(signals: Iterable[swarm_pb2.MetaSignal],
               already_merged: Callable[[str, int], bool]) -> list[swarm_pb2.MetaSignal]:
    """Keep one meta-signal per (peer, step) that no earlier round merged.

    Within the batch the most recently published record of a (peer, step) wins, so a peer
    that republishes a step is counted once. Sorted by (peer, step) for a stable order.
    """
    latest: dict[tuple[str, int], swarm_pb2.MetaSignal] = {}
    for signal in signals:
        key = (signal.peer_id, signal.step)
        if key not in latest or signal.published_at > latest[key].published_at:
            latest[key] = signal
    return [latest[key] for key in sorted(latest) if not already_merged(*key)]


def vet(signal: swarm_pb2.MetaSignal, now: float, trust: TrustConfig,
        refused: Callable[[str], str | None] = lambda peer: None) -> Rejection | None:
    """Why no honest peer would have sent `signal` (a Rejection), or None if it may be merged. `refused(peer)`
    names the admission rule a peer breaks ("banned", "not_admitted"), None if it may take part."""
    name = f"{signal.peer_id}#{signal.step}"
    rule = refused(signal.peer_id)
    if rule is not None:
        return Rejection(name, f"MetaSignal from {signal.peer_id}, which is {rule.replace('_', ' ')}", rule)
    cap = trust.max_rollouts_per_step
    counts = {"num_rollouts": signal.num_rollouts, "gate_count": signal.stats.gate_count,
              **{f"{k}.count": getattr(signal.stats, k).count for k in INDICATORS}}
    too_many = {key: count for key, count in counts.items() if count > cap}
    if too_many:
        return Rejection(name, f"MetaSignal counts {too_many} exceed trust.max_rollouts_per_step={cap}", "bounds")
    if signal.published_at > now + trust.max_clock_skew_s:
        return Rejection(name, f"MetaSignal published {signal.published_at - now:.0f} s in the future "
                               f"(trust.max_clock_skew_s={trust.max_clock_skew_s:g})", "future")
    return None


def _robust_scale(values: list[float], standard_error: float) -> tuple[float, float]:
    """(median, robust deviation) of the peers' means: 1.4826 x their median absolute deviation, but at least
    5 % of |median| and the standard error a peer's mean has from sampling alone (honest peers agree that
    closely; a few peers can agree more closely by chance)."""
    median = statistics.median(values)
    deviation = 1.4826 * statistics.median([abs(v - median) for v in values])
    return median, max(deviation, 0.05 * abs(median), standard_error, 1e-12)


def hold_back(signals: list[swarm_pb2.MetaSignal], trust: TrustConfig) -> tuple[list[swarm_pb2.MetaSignal],
                                                                                 list[Rejection], int]:
    """(signals to merge this round, outliers rejected, signals deferred to later rounds by the share cap)."""
    by_peer: dict[str, list[swarm_pb2.MetaSignal]] = defaultdict(list)
    for signal in signals:
        by_peer[signal.peer_id].append(signal)
    rejected: list[Rejection] = []
    if len(by_peer) >= 3:
        stats = {peer: IndicatorStats.merge_all(records.stats_of(s.stats) for s in own)
                 for peer, own in by_peer.items()}
        pooled = IndicatorStats.merge_all(stats.values())
        for name in INDICATORS:
            known = {peer: s.moments[name].mean for peer, s in stats.items() if s.moments[name].count}
            if len(known) < 3:
                continue
            per_peer = statistics.median(stats[peer].moments[name].count for peer in known)
            median, deviation = _robust_scale(list(known.values()), (pooled.moments[name].std or 0.0) / per_peer ** 0.5)
            for peer, mean in known.items():
                if peer in by_peer and abs(mean - median) > trust.outlier_deviations * deviation:
                    rejected += [Rejection(f"{s.peer_id}#{s.step}", f"peer's mean {name} {mean:.6g} lies "
                                           f"{abs(mean - median) / deviation:.0f} robust deviations from the "
                                           f"peers' median {median:.6g}", "outlier") for s in by_peer.pop(peer)]
    cap = max(1, int(trust.max_share * sorted(len(own) for own in by_peer.values())[(len(by_peer) - 1) // 2])) \
        if by_peer else 0
    kept, deferred = [], 0
    for own in by_peer.values():
        newest_first = sorted(own, key=lambda s: s.step, reverse=True)
        kept += newest_first[:cap]
        deferred += len(newest_first[cap:])
    return sorted(kept, key=lambda s: (s.peer_id, s.step)), rejected, deferred


def merge_round(state: RoundState, signals: list[swarm_pb2.MetaSignal], cfg: ShapingConfig, *,
                run: str, coordinator_key: str, issued_at: float) -> RoundResult | None:
    """Merge `signals` (already de-duplicated and validated) into round `state.round + 1`; None when there are none."""
    if not signals:
        return None
    merged = IndicatorStats.merge_all([records.stats_of(signal.stats) for signal in signals])
    baselines = state.baselines.update(merged, cfg)
    record = records.build(
        swarm_pb2.BalanceWeights, run_id=run, round=state.round + 1, baselines=records.baselines_message(baselines),
        lambda_t=float(lambda_t(baselines, cfg)), balance=balance_of(merged), merged=records.stats_message(merged),
        num_peers=len({s.peer_id for s in signals}), num_contributions=len(signals), issued_at=issued_at,
        coordinator_key=coordinator_key)
    return RoundResult(RoundState(record.round, baselines), record, tuple(signals))
