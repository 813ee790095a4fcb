"""Pure round logic: de-duplicate meta-signals, merge them exactly, advance the swarm's baselines.

A round merges every (peer, step) meta-signal not merged before, count-weighted and exact
(`IndicatorStats.merge_all` adds counts, sums and sums of squares), advances the global EMA
baselines once with the merged batch means (`Baselines.update`), and derives lambda_t and the
explore/exploit balance for the steps that follow. No I/O here: the ledger feeds it records
and persists what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from plumbing.dht_records import BalanceRecord, MetaSignalRecord
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
    def after(cls, record: BalanceRecord | None, cfg: ShapingConfig) -> RoundState:
        """Resume after a committed round (or from scratch when there is none)."""
        return cls.initial(cfg) if record is None else cls(round=record.round, baselines=record.baselines)


@dataclass(frozen=True)
class Balance:
    """The swarm's explore/exploit balance: mean gate g = gate_sum / gate_count over all gated responses.

    The exploration channel (ER) is weighted by g and the exploitation channel (ERV) by 1 - g,
    so g is the share of the incentive that currently goes to exploration.
    """

    mean_gate: float | None
    explore_share: float | None
    exploit_share: float | None

    @classmethod
    def of(cls, merged: IndicatorStats) -> Balance:
        if merged.gate_count <= 0:
            return cls(None, None, None)
        gate = min(1.0, max(0.0, merged.gate_sum / merged.gate_count))  # rounding may leave [0, 1] by an ulp
        return cls(gate, gate, 1.0 - gate)


@dataclass(frozen=True)
class RoundResult:
    """A merged round: the state after it, the record to publish, and the meta-signals it merged."""

    state: RoundState
    record: BalanceRecord
    contributions: tuple[MetaSignalRecord, ...]


def select_new(records: Iterable[MetaSignalRecord],
               already_merged: Callable[[str, int], bool]) -> list[MetaSignalRecord]:
    """Keep one record per (peer, step) that no earlier round merged.

    Within the batch the most recently published record of a (peer, step) wins, so a peer
    that republishes a step is counted once. Sorted by (peer, step) for a stable order.
    """
    latest: dict[tuple[str, int], MetaSignalRecord] = {}
    for record in records:
        key = (record.peer_id, record.step)
        if key not in latest or record.published_at > latest[key].published_at:
            latest[key] = record
    return [latest[key] for key in sorted(latest) if not already_merged(*key)]


def merge_round(state: RoundState, records: list[MetaSignalRecord], cfg: ShapingConfig, *,
                run: str, coordinator_key: str, issued_at: float) -> RoundResult | None:
    """Merge `records` (already de-duplicated) into round `state.round + 1`; None when there are none."""
    if not records:
        return None
    merged = IndicatorStats.merge_all([record.stats for record in records])
    baselines = state.baselines.update(merged, cfg)
    balance = Balance.of(merged)
    record = BalanceRecord(
        run=run, round=state.round + 1, baselines=baselines, lambda_t=float(lambda_t(baselines, cfg)),
        mean_gate=balance.mean_gate, explore_share=balance.explore_share, exploit_share=balance.exploit_share,
        merged=merged, num_peers=len({r.peer_id for r in records}), num_contributions=len(records),
        issued_at=issued_at, coordinator_key=coordinator_key)
    return RoundResult(RoundState(record.round, baselines), record, tuple(records))
