"""`GET /metrics`: the coordinator's view of the swarm for Prometheus, through `prometheus_client`.

    registry = build_registry(lambda: monitor.snapshot(now()))   # one per server, never the global one
    text = render_metrics(registry)                               # text format 0.0.4, made at each scrape

`SwarmCollector` turns the monitor's latest snapshot into metric families when scraped; nothing
is kept between scrapes. Names follow Prometheus conventions: the `rankswarm_` prefix, base
units in the name (`_seconds`, `_bytes`, `_ratio`), `_total` for counters, and labels for what
varies (`peer`, `state`, `indicator`, `kind`). Per-peer series cover the peers that are not gone,
so a long run's churn does not grow the series without bound (gone peers are counted in
`rankswarm_peers{state="gone"}`). A value that is not known (a peer that has not reported it) is
left out rather than written as 0. docs/api.md lists every family; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from coordinator.health import reported
from coordinator.monitor import Snapshot
from coordinator.views import PEER_STATES, reachability, state_of, status_of
from protos import records, swarm_pb2
from shaping import INDICATORS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Samples = Iterable[tuple[Sequence[str], float | int | None]]  # (label values, value); None = unknown, left out

# name -> (type, help, label names), in the order of the exposition; counters carry `_total` here
_FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "rankswarm_coordinator_info": ("gauge", "The coordinator's run, version and key (always 1).",
                                   ("run", "version", "key")),
    "rankswarm_round": ("gauge", "Latest committed coordinator round (0 before the first).", ()),
    "rankswarm_round_timestamp_seconds": ("gauge", "DHT time the latest round was committed.", ()),
    "rankswarm_round_age_seconds": ("gauge", "Seconds since the latest round was committed.", ()),
    "rankswarm_round_peers": ("gauge", "Distinct peers merged in the latest round.", ()),
    "rankswarm_round_meta_signals": ("gauge", "Meta-signals merged in the latest round.", ()),
    "rankswarm_meta_signals_merged_total": ("counter", "Meta-signals merged since the run began.", ()),
    "rankswarm_records_rejected_total": ("counter", "Distinct DHT records rejected since the coordinator started.",
                                         ()),
    "rankswarm_records_rejected_by_rule_total": ("counter", "DHT records rejected since the coordinator started, "
                                                            "by the rule they broke.", ("rule",)),
    "rankswarm_baseline": ("gauge", "Global EMA baseline m_k after the latest round.", ("indicator",)),
    "rankswarm_round_mean": ("gauge", "Mean of each indicator over the latest round's responses.", ("indicator",)),
    "rankswarm_lambda": ("gauge", "Auxiliary-signal scale lambda_t after the latest round.", ()),
    "rankswarm_explore_share_ratio": ("gauge", "Share of the incentive on the exploration channel (the merged "
                                               "mean ERA gate).", ()),
    "rankswarm_exploit_share_ratio": ("gauge", "Share of the incentive on the exploitation channel.", ()),
    "rankswarm_peers": ("gauge", "Peers known to the coordinator, by state.", ("state",)),
    "rankswarm_peers_version_mismatch": ("gauge", "Peers (not gone) whose version differs from the coordinator's.",
                                         ()),
    "rankswarm_swarm_tokens_per_second": ("gauge", "Response tokens per second, summed over live peers.", ()),
    "rankswarm_swarm_rollouts_per_second": ("gauge", "Rollouts per second, summed over live peers.", ()),
    "rankswarm_alerts": ("gauge", "Active health alerts, by kind and severity.", ("kind", "severity")),
    "rankswarm_peer_state": ("gauge", "1 for the peer's current state, 0 for the others.", ("peer", "state")),
    "rankswarm_peer_info": ("gauge", "The peer's version, reachability and address (always 1).",
                            ("peer", "version", "reachability", "address", "version_mismatch")),
}


def _step(peer: swarm_pb2.PeerState) -> int | None:
    steps = [s for s in (reported(status_of(peer), "step"), records.get(peer, "last_step")) if s is not None]
    return max(steps) if steps else None


def _status(name: str) -> Callable[[swarm_pb2.PeerState], float | int | None]:
    """Reads field `name` of a peer's latest status report; None where it was not measured."""
    return lambda peer: reported(status_of(peer), name)


# per-peer families with the label `peer`: (name, type, help, how to read it; None = unknown)
_PEER_METRICS: list[tuple[str, str, str, Callable[[swarm_pb2.PeerState], float | int | None]]] = [
    ("step", "gauge", "The peer's latest training step.", _step),
    ("epoch", "gauge", "The peer's optimizer epoch.", _status("epoch")),
    ("epoch_lag", "gauge", "Epochs the peer trailed the swarm by at its latest report.",
     lambda p: records.get(p, "epoch_lag")),
    ("last_seen_timestamp_seconds", "gauge", "DHT time the coordinator last heard from the peer.",
     lambda p: p.last_seen),
    ("rollouts_per_second", "gauge", "Rollouts per second since the peer started.",
     _status("throughput")),
    ("tokens_per_second", "gauge", "Response tokens per second in the peer's latest step.",
     _status("tokens_per_s")),
    ("sent_bytes_total", "counter", "Bytes the peer sent to the swarm since it started.",
     _status("bytes_sent")),
    ("received_bytes_total", "counter", "Bytes the peer received from the swarm since it started.",
     _status("bytes_received")),
    ("compression_ratio", "gauge", "Dense fp32 gradient bytes over the bytes the peer sent.",
     _status("compression_ratio")),
    ("reward", "gauge", "Mean reward of the peer's latest step.", _status("reward")),
    ("accuracy_ratio", "gauge", "Share of the peer's latest rollouts judged correct.",
     _status("accuracy")),
    ("heldout_accuracy_ratio", "gauge", "The peer's latest held-out greedy accuracy.",
     _status("heldout_accuracy")),
    ("kl", "gauge", "KL to the reference policy in the peer's latest step.", _status("kl")),
    ("gate_ratio", "gauge", "Mean ERA gate (exploration share) of the peer's latest step.",
     _status("gate")),
    ("aux", "gauge", "Mean auxiliary signal r_aux of the peer's latest step.", _status("aux")),
    ("staleness", "gauge", "Policy versions between the weights that sampled the peer's latest rollouts and those "
     "it trained (0: on-policy).", _status("staleness")),
    ("averaging_rounds_total", "counter", "Averaging rounds the peer completed since it started.",
     _status("averaging_rounds")),
    ("averaging_failures_total", "counter", "Averaging rounds that failed on the peer since it started.",
     _status("averaging_failures")),
    ("meta_signals_merged_total", "counter", "The peer's meta-signals merged by the coordinator.",
     lambda p: p.num_contributions),
]
_FAMILIES.update({f"rankswarm_peer_{suffix}": (kind, help_text, ("peer",))
                  for suffix, kind, help_text, _ in _PEER_METRICS})
_FAMILIES["rankswarm_peer_traffic_bytes_total"] = (
    "counter", "Bytes the peer exchanged with the swarm since it started, by kind (gradients: (pseudo-)gradient "
    "all-reduces; state_averaging: parameter averaging; state: full state served or downloaded) and direction.",
    ("peer", "kind", "direction"))
# (kind, direction) -> the PeerStatus field (schema 3) that counts it
TRAFFIC_FIELDS = {("gradients", "sent"): "gradient_bytes_sent", ("gradients", "received"): "gradient_bytes_received",
                  ("state_averaging", "sent"): "state_averaging_bytes_sent",
                  ("state_averaging", "received"): "state_averaging_bytes_received",
                  ("state", "sent"): "state_bytes_served", ("state", "received"): "state_bytes_downloaded"}
_FAMILIES["rankswarm_peer_indicator"] = ("gauge", "Mean ER, ERV and ERA over the peer's latest step's responses.",
                                         ("peer", "indicator"))


def _family(name: str, samples: Samples = ()) -> Metric:
    """The family `name` (as _FAMILIES describes it) with the samples whose value is known."""
    kind, help_text, labels = _FAMILIES[name]
    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text, labels=labels)
    for values, value in samples:
        if value is not None:
            family.add_metric([str(v) for v in values], value)
    return family


def _coordinator_samples(snapshot: Snapshot) -> Iterator[tuple[str, Samples]]:
    state, latest = snapshot.state, records.get(snapshot.state, "latest")
    yield "rankswarm_coordinator_info", [((state.run_id, state.coordinator_version, state.coordinator_key), 1)]
    yield "rankswarm_round", [((), state.round)]
    yield "rankswarm_round_timestamp_seconds", [((), latest.issued_at if latest else None)]
    yield "rankswarm_round_age_seconds", [((), max(0.0, state.now - latest.issued_at) if latest else None)]
    yield "rankswarm_round_peers", [((), latest.num_peers if latest else None)]
    yield "rankswarm_round_meta_signals", [((), latest.num_contributions if latest else None)]
    yield "rankswarm_meta_signals_merged_total", [((), sum(p.num_contributions for p in state.peers))]
    yield "rankswarm_records_rejected_total", [((), state.records_rejected)]
    yield "rankswarm_records_rejected_by_rule_total", [((r.rule,), r.count) for r in state.rejected_by_rule]
    baselines = {name: records.get(latest.baselines, name) for name in INDICATORS} if latest else {}
    yield "rankswarm_baseline", [((name,), baselines.get(name)) for name in INDICATORS]
    merged = records.stats_of(latest.merged).means() if latest else {}
    yield "rankswarm_round_mean", [((name,), merged.get(name)) for name in INDICATORS]
    yield "rankswarm_lambda", [((), latest.lambda_t if latest else None)]
    yield "rankswarm_explore_share_ratio", [((), records.get(latest.balance, "explore_share") if latest else None)]
    yield "rankswarm_exploit_share_ratio", [((), records.get(latest.balance, "exploit_share") if latest else None)]


def _swarm_samples(snapshot: Snapshot) -> Iterator[tuple[str, Samples]]:
    summary, peers = snapshot.summary, snapshot.state.peers
    yield "rankswarm_peers", [((name,), summary.by_state.get(name, 0)) for name in PEER_STATES]
    yield "rankswarm_peers_version_mismatch", [((), sum(p.version_mismatch and state_of(p) != "gone" for p in peers))]
    yield "rankswarm_swarm_tokens_per_second", [((), summary.tokens_per_s)]
    yield "rankswarm_swarm_rollouts_per_second", [((), summary.rollouts_per_s)]
    kinds: dict[tuple[str, str], int] = {}
    for alert in snapshot.state.alerts:
        kinds[(alert.kind, alert.severity)] = kinds.get((alert.kind, alert.severity), 0) + 1
    yield "rankswarm_alerts", sorted(kinds.items())


def _peer_samples(peers: list[swarm_pb2.PeerState]) -> Iterator[tuple[str, Samples]]:
    yield "rankswarm_peer_state", [((p.peer_id, name), int(state_of(p) == name)) for p in peers
                                   for name in PEER_STATES]
    yield "rankswarm_peer_info", [((p.peer_id, p.status.version, reachability(p.status), p.status.address,
                                    str(p.version_mismatch).lower()), 1) for p in peers if p.HasField("status")]
    for suffix, _, _, read in _PEER_METRICS:
        yield f"rankswarm_peer_{suffix}", [((p.peer_id,), read(p)) for p in peers]
    yield "rankswarm_peer_indicator", [((p.peer_id, name), reported(status_of(p), name))
                                       for p in peers for name in ("er", "erv", "era")]
    yield "rankswarm_peer_traffic_bytes_total", [((p.peer_id, kind, direction), reported(status_of(p), field))
                                                 for p in peers for (kind, direction), field in TRAFFIC_FIELDS.items()]


class SwarmCollector(Collector):
    """The swarm's metric families, made from `snapshot()` at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        """Every family, without samples: what the registry checks names against."""
        return [_family(name) for name in _FAMILIES]

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        for name, samples in (*_coordinator_samples(snapshot), *_swarm_samples(snapshot),
                              *_peer_samples([p for p in snapshot.state.peers if state_of(p) != "gone"])):
            yield _family(name, samples)


def build_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of its own holding one SwarmCollector (the process-wide default registry stays untouched)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SwarmCollector(snapshot))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The whole /metrics page (text format 0.0.4, CONTENT_TYPE)."""
    return generate_latest(registry)
