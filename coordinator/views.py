"""What the coordinator serves is the messages of swarm.proto itself; these are the few helpers over them.

A peer is a `swarm_pb2.PeerState`, an alert a `swarm_pb2.Alert`, the swarm a `swarm_pb2.SwarmState`,
a committed round a `swarm_pb2.RoundRecord` and an event a `swarm_pb2.SwarmEvent`: the ledger and
the monitor build them, the gRPC service sends them as they are, the dashboard's JSON documents
and the terminal client read them. Treat them as immutable (`protos.records.replace` copies).
Fields with presence read as None when unset through `protos.records.get`.
"""

from __future__ import annotations

from protos import records, swarm_pb2

# How the coordinator classifies a peer (coordinator.health.classify_peers), best first: the labels
# of swarm_pb2.PeerHealth ("online", "joining", "behind", "unreachable", "gone").
PEER_STATES = records.labels(swarm_pb2.PeerHealth)


def state_of(peer: swarm_pb2.PeerState) -> str:
    """The peer's state label, "" when it is not classified (or by a newer coordinator's rule)."""
    return records.label(swarm_pb2.PeerHealth, peer.health)


def health(state: str) -> int:
    """The PeerHealth value of a state label ("" -> unspecified)."""
    return records.value_of(swarm_pb2.PeerHealth, state)


def status_of(peer: swarm_pb2.PeerState) -> swarm_pb2.PeerStatus | None:
    """The peer's latest status report, None if it sent none."""
    return peer.status if peer.HasField("status") else None


def reachability(status: swarm_pb2.PeerStatus) -> str:
    """"direct", "relayed" or "unknown" (a peer that did not say)."""
    return records.label(swarm_pb2.Reachability, status.reachability) or "unknown"


def baselines_source(status: swarm_pb2.PeerStatus) -> str:
    """"global", "local" or "unknown" (schema-1 reports leave it empty)."""
    return status.baselines_source or "unknown"


def is_active(alert: swarm_pb2.Alert) -> bool:
    """An alert is active until its end time is set."""
    return alert.ended_at == 0.0


def event_kind(event: swarm_pb2.SwarmEvent) -> str:
    """"round_completed", "round_skipped", "peer_joined", "peer_left" or "record_rejected"."""
    return records.label(swarm_pb2.SwarmEventKind, event.kind)
