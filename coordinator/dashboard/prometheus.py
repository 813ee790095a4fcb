"""`GET /metrics`: the coordinator's view of the swarm in the Prometheus text exposition format (0.0.4).

Names follow Prometheus conventions: the `rankswarm_` prefix, base units in the name
(`_seconds`, `_bytes`, `_ratio`), `_total` for counters, one `# HELP` and `# TYPE` line per
family, and labels for what varies (`peer`, `state`, `indicator`, `kind`). Per-peer series
cover the peers that are not gone, so a long run's churn does not grow the series without
bound (gone peers are counted in `rankswarm_peers{state="gone"}`). A value that is not known
(a peer that has not reported it) is left out rather than written as 0.
"""

from __future__ import annotations

import math
from typing import Iterable

from coordinator.monitor import Snapshot
from coordinator.views import PEER_STATES, reachability, state_of
from protos import records, swarm_pb2
from shaping import INDICATORS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float | int | None]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Collects metric families and renders them; each family is written once, in insertion order."""

    def __init__(self):
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            label_text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
            self._lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


def _coordinator_families(out: Exposition, snapshot: Snapshot) -> None:
    state, latest = snapshot.state, records.get(snapshot.state, "latest")
    out.family("rankswarm_coordinator_info", "gauge", "The coordinator's run, version and key (always 1).",
               [({"run": state.run_id, "version": state.coordinator_version, "key": state.coordinator_key}, 1)])
    out.family("rankswarm_round", "gauge", "Latest committed coordinator round (0 before the first).",
               [({}, state.round)])
    out.family("rankswarm_round_timestamp_seconds", "gauge", "DHT time the latest round was committed.",
               [({}, latest.issued_at if latest else None)])
    out.family("rankswarm_round_age_seconds", "gauge", "Seconds since the latest round was committed.",
               [({}, max(0.0, state.now - latest.issued_at) if latest else None)])
    out.family("rankswarm_round_peers", "gauge", "Distinct peers merged in the latest round.",
               [({}, latest.num_peers if latest else None)])
    out.family("rankswarm_round_meta_signals", "gauge", "Meta-signals merged in the latest round.",
               [({}, latest.num_contributions if latest else None)])
    out.family("rankswarm_meta_signals_merged_total", "counter", "Meta-signals merged since the run began.",
               [({}, sum(p.num_contributions for p in state.peers))])
    out.family("rankswarm_records_rejected_total", "counter",
               "Distinct DHT records rejected since the coordinator started.", [({}, state.records_rejected)])
    baselines = {name: records.get(latest.baselines, name) for name in INDICATORS} if latest else {}
    out.family("rankswarm_baseline", "gauge", "Global EMA baseline m_k after the latest round.",
               [({"indicator": name}, baselines.get(name)) for name in INDICATORS])
    merged = records.stats_of(latest.merged).means() if latest else {}
    out.family("rankswarm_round_mean", "gauge", "Mean of each indicator over the latest round's responses.",
               [({"indicator": name}, merged.get(name)) for name in INDICATORS])
    out.family("rankswarm_lambda", "gauge", "Auxiliary-signal scale lambda_t after the latest round.",
               [({}, latest.lambda_t if latest else None)])
    out.family("rankswarm_explore_share_ratio", "gauge",
               "Share of the incentive on the exploration channel (the merged mean ERA gate).",
               [({}, records.get(latest.balance, "explore_share") if latest else None)])
    out.family("rankswarm_exploit_share_ratio", "gauge", "Share of the incentive on the exploitation channel.",
               [({}, records.get(latest.balance, "exploit_share") if latest else None)])


def _swarm_families(out: Exposition, snapshot: Snapshot) -> None:
    summary = snapshot.summary
    out.family("rankswarm_peers", "gauge", "Peers known to the coordinator, by state.",
               [({"state": name}, summary.by_state.get(name, 0)) for name in PEER_STATES])
    mismatched = sum(p.version_mismatch and state_of(p) != "gone" for p in snapshot.state.peers)
    out.family("rankswarm_peers_version_mismatch", "gauge", "Peers (not gone) whose version differs from the "
               "coordinator's.", [({}, mismatched)])
    out.family("rankswarm_swarm_tokens_per_second", "gauge", "Response tokens per second, summed over live peers.",
               [({}, summary.tokens_per_s)])
    out.family("rankswarm_swarm_rollouts_per_second", "gauge", "Rollouts per second, summed over live peers.",
               [({}, summary.rollouts_per_s)])
    kinds: dict[tuple[str, str], int] = {}
    for alert in snapshot.state.alerts:
        kinds[(alert.kind, alert.severity)] = kinds.get((alert.kind, alert.severity), 0) + 1
    out.family("rankswarm_alerts", "gauge", "Active health alerts, by kind and severity.",
               [({"kind": kind, "severity": severity}, n) for (kind, severity), n in sorted(kinds.items())])


def _status(peer: swarm_pb2.PeerState, name: str) -> float | int | None:
    """A field of the peer's status report; None when the report leaves it unset."""
    return records.get(peer.status, name)


# (metric suffix, type, help, how to read it from a peer)
_PEER_METRICS = [
    ("step", "gauge", "The peer's latest training step.", lambda p: _step(p)),
    ("epoch", "gauge", "The peer's optimizer epoch.", lambda p: _status(p, "epoch")),
    ("epoch_lag", "gauge", "Epochs the peer trailed the swarm by at its latest report.",
     lambda p: records.get(p, "epoch_lag")),
    ("last_seen_timestamp_seconds", "gauge", "DHT time the coordinator last heard from the peer.",
     lambda p: p.last_seen),
    ("rollouts_per_second", "gauge", "Rollouts per second since the peer started.", lambda p: p.status.throughput),
    ("tokens_per_second", "gauge", "Response tokens per second in the peer's latest step.",
     lambda p: _status(p, "tokens_per_s")),
    ("sent_bytes_total", "counter", "Bytes the peer sent to the swarm since it started.",
     lambda p: p.status.bytes_sent),
    ("received_bytes_total", "counter", "Bytes the peer received from the swarm since it started.",
     lambda p: p.status.bytes_received),
    ("compression_ratio", "gauge", "Dense fp32 gradient bytes over the bytes the peer sent.",
     lambda p: _status(p, "compression_ratio")),
    ("reward", "gauge", "Mean reward of the peer's latest step.", lambda p: _status(p, "reward")),
    ("accuracy_ratio", "gauge", "Share of the peer's latest rollouts judged correct.",
     lambda p: _status(p, "accuracy")),
    ("heldout_accuracy_ratio", "gauge", "The peer's latest held-out greedy accuracy.",
     lambda p: _status(p, "heldout_accuracy")),
    ("kl", "gauge", "KL to the reference policy in the peer's latest step.", lambda p: _status(p, "kl")),
    ("gate_ratio", "gauge", "Mean ERA gate (exploration share) of the peer's latest step.",
     lambda p: _status(p, "gate")),
    ("aux", "gauge", "Mean auxiliary signal r_aux of the peer's latest step.", lambda p: _status(p, "aux")),
    ("averaging_rounds_total", "counter", "Averaging rounds the peer completed since it started.",
     lambda p: p.status.averaging_rounds),
    ("averaging_failures_total", "counter", "Averaging rounds that failed on the peer since it started.",
     lambda p: p.status.averaging_failures),
    ("meta_signals_merged_total", "counter", "The peer's meta-signals merged by the coordinator.",
     lambda p: p.num_contributions),
]
_NEEDS_STATUS = {"epoch", "rollouts_per_second", "tokens_per_second", "sent_bytes_total", "received_bytes_total",
                 "compression_ratio", "reward", "accuracy_ratio", "heldout_accuracy_ratio", "kl", "gate_ratio", "aux",
                 "averaging_rounds_total", "averaging_failures_total"}


def _step(peer: swarm_pb2.PeerState) -> int | None:
    steps = [s for s in (peer.status.step if peer.HasField("status") else None, records.get(peer, "last_step"))
             if s is not None]
    return max(steps) if steps else None


def _peer_families(out: Exposition, peers: list[swarm_pb2.PeerState]) -> None:
    out.family("rankswarm_peer_state", "gauge", "1 for the peer's current state, 0 for the others.",
               [({"peer": p.peer_id, "state": name}, int(state_of(p) == name)) for p in peers for name in PEER_STATES])
    out.family("rankswarm_peer_info", "gauge", "The peer's version, reachability and address (always 1).",
               [({"peer": p.peer_id, "version": p.status.version, "reachability": reachability(p.status),
                  "address": p.status.address, "version_mismatch": str(p.version_mismatch).lower()}, 1)
                for p in peers if p.HasField("status")])
    for suffix, kind, help_text, read in _PEER_METRICS:
        with_status = [p for p in peers if p.HasField("status")] if suffix in _NEEDS_STATUS else peers
        out.family(f"rankswarm_peer_{suffix}", kind, help_text, [({"peer": p.peer_id}, read(p)) for p in with_status])
    out.family("rankswarm_peer_indicator", "gauge", "Mean ER, ERV and ERA over the peer's latest step's responses.",
               [({"peer": p.peer_id, "indicator": name}, _status(p, name))
                for p in peers if p.HasField("status") for name in ("er", "erv", "era")])


def render_metrics(snapshot: Snapshot) -> str:
    """The whole /metrics page."""
    out = Exposition()
    _coordinator_families(out, snapshot)
    _swarm_families(out, snapshot)
    _peer_families(out, [p for p in snapshot.state.peers if state_of(p) != "gone"])
    return out.render()
