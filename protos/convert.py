"""Protobuf <-> typed objects, at the edge where messages enter or leave a process.

Only the gRPC service and client import this; everything else handles the pydantic records
of `plumbing.dht_records` and the views of `coordinator.views`. `*_from_pb` functions check
`schema_version` (SchemaVersionError naming both versions when newer, ValueError when
missing) and raise ValueError on malformed contents.
"""

from __future__ import annotations

from pydantic import ValidationError

from coordinator.events import EventKind, SwarmEvent
from coordinator.views import PEER_STATES, Alert, PeerView, RoundView, SwarmStateView
from protos import swarm_pb2
from plumbing.dht_records import (DISTRIBUTION_INDICATORS, PEER_STATUS_SCHEMA_VERSION, SCHEMA_VERSION,
                                   BalanceRecord, Deciles, MetaSignalRecord, PeerStatusRecord, SchemaVersionError,
                                   check_schema_version)
from shaping import INDICATORS, Baselines, IndicatorStats

__all__ = ["SCHEMA_VERSION"]  # plus the functions below

_REACHABILITY = {"unknown": swarm_pb2.REACHABILITY_UNSPECIFIED, "direct": swarm_pb2.REACHABILITY_DIRECT,
                 "relayed": swarm_pb2.REACHABILITY_RELAYED}
_EVENT_KINDS = {EventKind.ROUND_COMPLETED: swarm_pb2.ROUND_COMPLETED, EventKind.ROUND_SKIPPED: swarm_pb2.ROUND_SKIPPED,
                EventKind.PEER_JOINED: swarm_pb2.PEER_JOINED, EventKind.PEER_LEFT: swarm_pb2.PEER_LEFT,
                EventKind.RECORD_REJECTED: swarm_pb2.RECORD_REJECTED}
_PEER_HEALTH = {state: getattr(swarm_pb2, f"PEER_HEALTH_{state.upper()}") for state in PEER_STATES}
_PEER_HEALTH[""] = swarm_pb2.PEER_HEALTH_UNSPECIFIED
# PeerStatus fields added in schema 2 that are proto3 `optional` (unset = None)
_STATUS_OPTIONAL = ("tokens_per_s", "step_seconds", "compression_ratio", "reward", "accuracy", "heldout_accuracy",
                    "kl", "er", "erv", "era", "gate", "aux", "epoch", "num_peers_seen", "balance_round")
_STATUS_PLAIN = ("averaging_rounds", "averaging_failures", "last_averaging_error", "publish_failures")


def check_request_version(version: int, what: str) -> None:
    """Refuse a request of a missing (ValueError) or newer (SchemaVersionError) schema."""
    if version == 0:
        raise ValueError(f"{what} has no schema_version; set schema_version={SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{what} has schema_version {version}, newer than this coordinator's "
                                 f"{SCHEMA_VERSION}; upgrade the coordinator or use an older client")


def check_message_version(version: int, what: str) -> None:
    """Refuse a received message of a missing or newer schema (either direction)."""
    check_schema_version(version, what)


def _validated(model, **fields):
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{model.__name__}.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


# ---------------------------------------------------------------- statistics and baselines

def stats_to_pb(stats: IndicatorStats) -> swarm_pb2.SignalStats:
    message = swarm_pb2.SignalStats(gate_sum=stats.gate_sum, gate_count=stats.gate_count)
    for name in INDICATORS:
        moments = stats.moments[name]
        getattr(message, name).CopyFrom(swarm_pb2.IndicatorMoments(
            count=moments.count, sum=moments.sum, sumsq=moments.sumsq))
    return message


def stats_from_pb(message: swarm_pb2.SignalStats) -> IndicatorStats:
    moments = {name: [getattr(message, name).count, getattr(message, name).sum, getattr(message, name).sumsq]
               for name in INDICATORS}
    # through from_dict: the same checks (finite, consistent moments, gates in [0, 1]) as for DHT records
    return IndicatorStats.from_dict({"moments": moments, "gate_sum": message.gate_sum,
                                     "gate_count": message.gate_count})


def baselines_to_pb(baselines: Baselines) -> swarm_pb2.Baselines:
    state = baselines.to_dict()
    message = swarm_pb2.Baselines(ready=baselines.ready, alpha=state["alpha"], bias_corrected=state["corrected"])
    for name in INDICATORS:
        getattr(message, f"{name}_state").CopyFrom(
            swarm_pb2.EmaState(raw=state["raw"][name], updates=state["updates"][name]))
        value = baselines.value(name)
        if value is not None:
            setattr(message, name, value)
    return message


def baselines_from_pb(message: swarm_pb2.Baselines) -> Baselines:
    """The exact baseline state from the EMA states (the m_k values are derived, for display only)."""
    states = {name: getattr(message, f"{name}_state") for name in INDICATORS}
    return Baselines.from_dict({"raw": {k: s.raw for k, s in states.items()},
                                "updates": {k: s.updates for k, s in states.items()},
                                "alpha": message.alpha, "corrected": message.bias_corrected})  # ValueError if bad


def _optional(message, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None


# ---------------------------------------------------------------- records

def meta_signal_to_pb(record: MetaSignalRecord) -> swarm_pb2.MetaSignal:
    message = swarm_pb2.MetaSignal(schema_version=record.schema_version, run_id=record.run, peer_id=record.peer_id,
                                   step=record.step, stats=stats_to_pb(record.stats),
                                   num_rollouts=record.num_rollouts, num_tokens=record.num_tokens,
                                   published_at=record.published_at)
    if record.mean_gate is not None:
        message.mean_gate = record.mean_gate
    return message


def meta_signal_from_pb(message: swarm_pb2.MetaSignal) -> MetaSignalRecord:
    check_message_version(message.schema_version, "MetaSignal")
    return _validated(MetaSignalRecord, schema_version=message.schema_version, run=message.run_id,
                      peer_id=message.peer_id, step=message.step, stats=stats_from_pb(message.stats),
                      num_rollouts=message.num_rollouts, num_tokens=message.num_tokens,
                      published_at=message.published_at)


def balance_to_pb(record: BalanceRecord) -> swarm_pb2.BalanceWeights:
    balance = swarm_pb2.Balance()
    for name in ("mean_gate", "explore_share", "exploit_share"):
        if getattr(record, name) is not None:
            setattr(balance, name, getattr(record, name))
    return swarm_pb2.BalanceWeights(
        schema_version=record.schema_version, run_id=record.run, round=record.round,
        baselines=baselines_to_pb(record.baselines), lambda_t=record.lambda_t, balance=balance,
        merged=stats_to_pb(record.merged), num_peers=record.num_peers, num_contributions=record.num_contributions,
        issued_at=record.issued_at, coordinator_key=record.coordinator_key)


def balance_from_pb(message: swarm_pb2.BalanceWeights) -> BalanceRecord:
    check_message_version(message.schema_version, "BalanceWeights")
    balance = message.balance
    return _validated(BalanceRecord, schema_version=message.schema_version, run=message.run_id, round=message.round,
                      baselines=baselines_from_pb(message.baselines), lambda_t=message.lambda_t,
                      mean_gate=_optional(balance, "mean_gate"), explore_share=_optional(balance, "explore_share"),
                      exploit_share=_optional(balance, "exploit_share"), merged=stats_from_pb(message.merged),
                      num_peers=message.num_peers, num_contributions=message.num_contributions,
                      issued_at=message.issued_at, coordinator_key=message.coordinator_key)


def balance_response(record: BalanceRecord | None) -> swarm_pb2.GetBalanceWeightsResponse:
    if record is None:
        return swarm_pb2.GetBalanceWeightsResponse(schema_version=SCHEMA_VERSION, available=False)
    return swarm_pb2.GetBalanceWeightsResponse(schema_version=SCHEMA_VERSION, available=True,
                                               weights=balance_to_pb(record))


def balance_from_response(message: swarm_pb2.GetBalanceWeightsResponse) -> BalanceRecord | None:
    check_message_version(message.schema_version, "GetBalanceWeightsResponse")
    return balance_from_pb(message.weights) if message.available else None


def peer_status_to_pb(record: PeerStatusRecord) -> swarm_pb2.PeerStatus:
    message = swarm_pb2.PeerStatus(
        schema_version=record.schema_version, run_id=record.run, peer_id=record.peer_id, version=record.version,
        address=record.address, reachability=_REACHABILITY[record.reachability], step=record.step,
        throughput=record.throughput, bytes_sent=record.bytes_sent, bytes_received=record.bytes_received,
        reported_at=record.reported_at, baselines_source=record.baselines_source,
        **{name: getattr(record, name) for name in _STATUS_PLAIN})
    for name in _STATUS_OPTIONAL:
        if getattr(record, name) is not None:
            setattr(message, name, getattr(record, name))
    for name, deciles in record.deciles.items():
        getattr(message, f"{name}_deciles").CopyFrom(swarm_pb2.Deciles(count=deciles.count, values=deciles.values))
    return message


def peer_status_from_pb(message: swarm_pb2.PeerStatus) -> PeerStatusRecord:
    check_schema_version(message.schema_version, "PeerStatus", PEER_STATUS_SCHEMA_VERSION)
    reachability = {code: name for name, code in _REACHABILITY.items()}.get(message.reachability)
    if reachability is None:
        raise ValueError(f"PeerStatus.reachability {message.reachability} is not a known Reachability value")
    deciles = {name: _validated(Deciles, count=getattr(message, f"{name}_deciles").count,
                                values=list(getattr(message, f"{name}_deciles").values))
               for name in DISTRIBUTION_INDICATORS if message.HasField(f"{name}_deciles")}
    return _validated(PeerStatusRecord, schema_version=message.schema_version, run=message.run_id,
                      peer_id=message.peer_id, version=message.version, address=message.address,
                      reachability=reachability, step=message.step, throughput=message.throughput,
                      bytes_sent=message.bytes_sent, bytes_received=message.bytes_received,
                      reported_at=message.reported_at, baselines_source=message.baselines_source or "unknown",
                      deciles=deciles, **{name: getattr(message, name) for name in _STATUS_PLAIN},
                      **{name: _optional(message, name) for name in _STATUS_OPTIONAL})


# ---------------------------------------------------------------- coordinator views

def round_to_pb(view: RoundView) -> swarm_pb2.RoundRecord:
    return swarm_pb2.RoundRecord(weights=balance_to_pb(view.weights),
                                 contributions=[meta_signal_to_pb(c) for c in view.contributions])


def round_from_pb(message: swarm_pb2.RoundRecord) -> RoundView:
    return RoundView(balance_from_pb(message.weights), tuple(meta_signal_from_pb(c) for c in message.contributions))


def _peer_to_pb(peer: PeerView) -> swarm_pb2.PeerState:
    message = swarm_pb2.PeerState(peer_id=peer.peer_id, first_seen=peer.first_seen, last_seen=peer.last_seen,
                                  last_step=peer.last_step or 0, num_contributions=peer.num_contributions,
                                  active=peer.active, health=_PEER_HEALTH[peer.state],
                                  version_mismatch=peer.version_mismatch)
    if peer.epoch_lag is not None:
        message.epoch_lag = peer.epoch_lag
    if peer.status is not None:
        message.status.CopyFrom(peer_status_to_pb(peer.status))
    return message


def _peer_from_pb(message: swarm_pb2.PeerState) -> PeerView:
    state = {code: name for name, code in _PEER_HEALTH.items()}.get(message.health, "")  # newer states: unknown
    return PeerView(message.peer_id, message.first_seen, message.last_seen,
                    message.last_step if message.num_contributions else None, message.num_contributions,
                    message.active, peer_status_from_pb(message.status) if message.HasField("status") else None,
                    state=state, version_mismatch=message.version_mismatch,
                    epoch_lag=message.epoch_lag if message.HasField("epoch_lag") else None)


def alert_to_pb(alert: Alert) -> swarm_pb2.Alert:
    return swarm_pb2.Alert(key=alert.key, kind=alert.kind, severity=alert.severity, peer_id=alert.peer_id,
                           message=alert.message, started_at=alert.started_at, started_round=alert.started_round,
                           ended_at=alert.ended_at, ended_round=alert.ended_round)


def alert_from_pb(message: swarm_pb2.Alert) -> Alert:
    return Alert(message.key, message.kind, message.severity, message.peer_id, message.message, message.started_at,
                 message.started_round, message.ended_at, message.ended_round)


def swarm_state_to_pb(view: SwarmStateView) -> swarm_pb2.SwarmState:
    message = swarm_pb2.SwarmState(schema_version=SCHEMA_VERSION, run_id=view.run,
                                   coordinator_key=view.coordinator_key, round=view.round,
                                   peers=[_peer_to_pb(p) for p in view.peers],
                                   visible_maddrs=list(view.visible_maddrs), now=view.now,
                                   alerts=[alert_to_pb(a) for a in view.alerts],
                                   coordinator_version=view.coordinator_version, http_address=view.http_address,
                                   records_rejected=view.records_rejected)
    if view.latest is not None:
        message.latest.CopyFrom(balance_to_pb(view.latest))
    return message


def swarm_state_from_pb(message: swarm_pb2.SwarmState) -> SwarmStateView:
    check_message_version(message.schema_version, "SwarmState")
    latest = balance_from_pb(message.latest) if message.HasField("latest") else None
    return SwarmStateView(message.run_id, message.coordinator_key, message.round, latest,
                          tuple(_peer_from_pb(p) for p in message.peers), tuple(message.visible_maddrs), message.now,
                          alerts=tuple(alert_from_pb(a) for a in message.alerts),
                          coordinator_version=message.coordinator_version, http_address=message.http_address,
                          records_rejected=message.records_rejected)


def event_to_pb(event: SwarmEvent) -> swarm_pb2.SwarmEvent:
    message = swarm_pb2.SwarmEvent(schema_version=SCHEMA_VERSION, seq=event.seq, kind=_EVENT_KINDS[event.kind],
                                   at=event.at, round=event.round, peer_id=event.peer_id, detail=event.detail)
    if event.weights is not None:
        message.weights.CopyFrom(balance_to_pb(event.weights))
    return message


def event_from_pb(message: swarm_pb2.SwarmEvent) -> SwarmEvent:
    check_message_version(message.schema_version, "SwarmEvent")
    kind = {code: kind for kind, code in _EVENT_KINDS.items()}.get(message.kind)
    if kind is None:
        raise ValueError(f"SwarmEvent.kind {message.kind} is not a known event kind (newer coordinator?)")
    weights = balance_from_pb(message.weights) if message.HasField("weights") else None
    return SwarmEvent(message.seq, kind, message.at, message.round, message.peer_id, message.detail, weights)
