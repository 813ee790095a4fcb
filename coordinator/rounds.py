"""Pure round logic: de-duplicate meta-signals, merge them exactly, advance the swarm's baselines.

A round merges every (peer, step) meta-signal not merged before, count-weighted and exact
(`IndicatorStats.merge_all` adds counts, sums and sums of squares), advances the global EMA
baselines once with the merged batch means (`Baselines.update`), and derives lambda_t and the
explore/exploit balance for the steps that follow. No I/O here: the ledger feeds it records
and persists what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protos import records, swarm_pb2
from shaping import Baselines, IndicatorStats, ShapingConfig, lambda_t


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
