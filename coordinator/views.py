"""Typed, read-only views the coordinator serves (converted to protobuf only in protos.convert)."""

from __future__ import annotations

from dataclasses import dataclass

from rankswarm.dht_records import BalanceRecord, MetaSignalRecord, PeerStatusRecord


@dataclass(frozen=True)
class PeerView:
    """A peer as the coordinator sees it."""

    peer_id: str
    first_seen: float
    last_seen: float
    last_step: int | None
    num_contributions: int
    active: bool
    status: PeerStatusRecord | None


@dataclass(frozen=True)
class SwarmStateView:
    """The swarm right now: latest round, peers, and the key peers pin to verify balance records."""

    run: str
    coordinator_key: str
    round: int
    latest: BalanceRecord | None
    peers: tuple[PeerView, ...]
    visible_maddrs: tuple[str, ...]
    now: float


@dataclass(frozen=True)
class RoundView:
    """One committed round: what it published and (optionally) the meta-signals it merged."""

    weights: BalanceRecord
    contributions: tuple[MetaSignalRecord, ...] = ()
