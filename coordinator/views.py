"""Typed, read-only views the coordinator serves (converted to protobuf only in protos.convert)."""

from __future__ import annotations

from dataclasses import dataclass

from plumbing.dht_records import BalanceRecord, MetaSignalRecord, PeerStatusRecord

# How the coordinator classifies a peer (coordinator.health.classify_peers), best first.
PEER_STATES = ("online", "joining", "behind", "unreachable", "gone")


@dataclass(frozen=True)
class PeerView:
    """A peer as the coordinator sees it; `state`, `version_mismatch` and `epoch_lag` come from health."""

    peer_id: str
    first_seen: float
    last_seen: float
    last_step: int | None
    num_contributions: int
    active: bool
    status: PeerStatusRecord | None
    state: str = ""                # one of PEER_STATES ("" = not classified)
    version_mismatch: bool = False  # its version differs from the coordinator's
    epoch_lag: int | None = None    # epochs it trailed the swarm by at its latest report


@dataclass(frozen=True)
class Alert:
    """A health condition with when it started (and ended: 0.0 / 0 while active)."""

    key: str
    kind: str
    severity: str  # "critical", "warning" or "info"
    peer_id: str
    message: str
    started_at: float
    started_round: int
    ended_at: float = 0.0
    ended_round: int = 0

    @property
    def active(self) -> bool:
        return self.ended_at == 0.0


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
    alerts: tuple[Alert, ...] = ()  # active alerts, oldest first
    coordinator_version: str = ""
    http_address: str = ""          # the dashboard's host:port ("" when it is off)
    records_rejected: int = 0       # DHT records rejected since the coordinator started


@dataclass(frozen=True)
class RoundView:
    """One committed round: what it published and (optionally) the meta-signals it merged."""

    weights: BalanceRecord
    contributions: tuple[MetaSignalRecord, ...] = ()
