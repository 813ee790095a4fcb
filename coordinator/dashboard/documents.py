"""The JSON documents of the dashboard's API: `GET /api/v1/state` and `GET /api/v1/history`.

Built from a `monitor.Snapshot` (its records are the messages of swarm.proto) and the history
store; every field is described in docs/api.md (keep the two in step). Numbers are plain JSON
numbers, absent values (a proto3 `optional` field left unset) are null, times are DHT time in
seconds (the Unix epoch on a synchronised clock).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.health import LIVE_STATES, STATE_ORDER, SwarmSummary, mean_or_none, reported
from coordinator.monitor import Snapshot
from coordinator.store import HistoryStore
from coordinator.views import baselines_source, event_kind, reachability, state_of, status_of
from protos import records, swarm_pb2
from shaping import INDICATORS

DISTRIBUTION_INDICATORS = ("er", "erv", "era")  # PeerStatus carries <name>_deciles for these

API_SCHEMA_VERSION = 2
HISTOGRAM_BINS = 24
RATE_WINDOW_ROUNDS = 5  # merged tokens/s and rollouts/s are averaged over this many rounds
_STATUS_NUMBERS = ("epoch", "tokens_per_s", "step_seconds", "compression_ratio", "reward", "accuracy",
                   "heldout_accuracy", "kl", "er", "erv", "era", "gate", "aux", "averaging_rounds",
                   "averaging_failures", "publish_failures", "balance_round", "num_peers_seen", "staleness",
                   "gradient_bytes_sent", "gradient_bytes_received", "state_averaging_bytes_sent",
                   "state_averaging_bytes_received", "state_bytes_served", "state_bytes_downloaded")
PEER_SORT_KEYS = ("state", "peer_id", "version", "last_seen", "step", "num_contributions", "rollouts_per_s",
                  "bytes_sent", "bytes_received", "epoch_lag", *_STATUS_NUMBERS)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------- /api/v1/state

@dataclass(frozen=True)
class PeerQuery:
    """Which peers the state document lists: filter, order and page."""

    offset: int = 0
    limit: int = 100
    states: tuple[str, ...] = ()  # empty = every state
    text: str = ""                # substring of peer id, address or version
    sort: str = "state"
    descending: bool = False


def peer_document(peer: swarm_pb2.PeerState, now: float) -> dict[str, Any]:
    status = status_of(peer)
    last_step = records.get(peer, "last_step")
    steps = [step for step in (status.step if status else None, last_step) if step is not None]
    doc: dict[str, Any] = {
        "peer_id": peer.peer_id, "state": state_of(peer), "version_mismatch": peer.version_mismatch,
        "first_seen": peer.first_seen, "last_seen": peer.last_seen, "silent_s": max(0.0, now - peer.last_seen),
        "step": max(steps) if steps else None,  # the newer of its status report and its latest merged step
        "merged_step": last_step, "num_contributions": peer.num_contributions,
        "epoch_lag": records.get(peer, "epoch_lag"),
        "rollouts_per_s": status.throughput if status else None,
        "status_reported_at": status.reported_at if status else None,
        "status_schema": status.schema_version if status else None,
        "reachability": reachability(status) if status else None,
        "baselines_source": baselines_source(status) if status else None,
    }
    for name in ("version", "address", "bytes_sent", "bytes_received", "last_averaging_error", *_STATUS_NUMBERS):
        doc[name] = reported(status, name)  # None where not measured
    return doc


def _sort_value(doc: dict[str, Any], key: str):
    return STATE_ORDER.get(doc["state"], len(STATE_ORDER)) if key == "state" else doc.get(key)


def select_peers(peers: Sequence[swarm_pb2.PeerState], now: float, query: PeerQuery) -> dict[str, Any]:
    """Filter, order (peers without the value last, ties by peer id) and cut one page."""
    docs = [peer_document(p, now) for p in peers]
    if query.states:
        docs = [d for d in docs if d["state"] in query.states]
    if query.text:
        needle = query.text.lower()
        docs = [d for d in docs if any(needle in (d[f] or "").lower() for f in ("peer_id", "address", "version"))]
    docs.sort(key=lambda d: d["peer_id"])
    present = [d for d in docs if _sort_value(d, query.sort) is not None]
    present.sort(key=lambda d: _sort_value(d, query.sort), reverse=query.descending)  # stable: ties keep id order
    docs = present + [d for d in docs if _sort_value(d, query.sort) is None]
    return {"total": len(peers), "matching": len(docs), "offset": query.offset, "limit": query.limit,
            "sort": query.sort, "order": "desc" if query.descending else "asc",
            "items": docs[query.offset:query.offset + query.limit]}


def round_document(latest: swarm_pb2.BalanceWeights | None, now: float,
                   stale_after_s: float) -> dict[str, Any] | None:
    if latest is None:
        return None
    merged = records.stats_of(latest.merged)
    stats = {name: {"count": merged.moments[name].count, "mean": merged.moments[name].mean,
                    "std": merged.moments[name].std} for name in INDICATORS}
    stats["gate"] = {"count": merged.gate_count, "mean": merged.gate_mean}
    baselines = {name: records.get(latest.baselines, name) for name in INDICATORS}
    return {"number": latest.round, "issued_at": latest.issued_at, "age_s": max(0.0, now - latest.issued_at),
            "stale": now - latest.issued_at > stale_after_s, "num_peers": latest.num_peers,
            "num_contributions": latest.num_contributions, "lambda_t": latest.lambda_t,
            **{name: records.get(latest.balance, name) for name in ("mean_gate", "explore_share", "exploit_share")},
            "baselines": {**baselines, "ready": latest.baselines.ready}, "merged": stats}


def summary_document(summary: SwarmSummary) -> dict[str, Any]:
    return {"num_peers": summary.num_peers, "by_state": summary.by_state, "versions": summary.versions,
            "tokens_per_s": summary.tokens_per_s, "rollouts_per_s": summary.rollouts_per_s,
            "bytes_sent": summary.bytes_sent, "bytes_received": summary.bytes_received,
            "compression_ratio": _finite(summary.compression_ratio), "epoch": summary.epoch,
            "averaging_rounds": summary.averaging_rounds, "averaging_failures": summary.averaging_failures,
            **{name: _finite(value) for name, value in summary.means.items()}}


def alert_document(alert: swarm_pb2.Alert) -> dict[str, Any]:
    return {"key": alert.key, "kind": alert.kind, "severity": alert.severity, "peer_id": alert.peer_id or None,
            "message": alert.message, "started_at": alert.started_at, "started_round": alert.started_round,
            "ended_at": alert.ended_at or None, "ended_round": alert.ended_round or None}


def pooled_histogram(deciles: Sequence[swarm_pb2.Deciles], bins: int = HISTOGRAM_BINS) -> dict[str, Any] | None:
    """An approximate histogram of the responses behind several peers' deciles: each decile interval
    holds a tenth of its peer's responses, spread evenly over the interval (all of it on a point when
    the interval is empty)."""
    if not deciles:
        return None
    low, high = min(d.values[0] for d in deciles), max(d.values[-1] for d in deciles)
    width = (high - low) / bins if high > low else 1.0
    edges = [low + i * width for i in range(bins + 1)] if high > low else [low, low + 1.0]
    counts = [0.0] * (len(edges) - 1)
    last = len(counts) - 1
    for d in deciles:
        mass = d.count / 10
        for a, b in zip(d.values, d.values[1:]):
            first_bin, last_bin = min(last, int((a - low) / width)), min(last, int((b - low) / width))
            if b <= a or first_bin == last_bin:
                counts[first_bin] += mass
                continue
            for i in range(first_bin, last_bin + 1):
                overlap = min(b, edges[i + 1]) - max(a, edges[i])
                counts[i] += mass * max(0.0, overlap) / (b - a)
    return {"edges": edges, "counts": counts, "num_responses": sum(d.count for d in deciles),
            "num_peers": len(deciles)}


def distributions_document(peers: Sequence[swarm_pb2.PeerState]) -> dict[str, Any]:
    live = [p.status for p in peers if p.HasField("status") and state_of(p) in LIVE_STATES]
    return {name: pooled_histogram([getattr(s, f"{name}_deciles") for s in live if s.HasField(f"{name}_deciles")])
            for name in DISTRIBUTION_INDICATORS}


def state_document(snapshot: Snapshot, query: PeerQuery, *, max_history_rounds: int) -> dict[str, Any]:
    """The whole `/api/v1/state` document (docs/api.md)."""
    state = snapshot.state
    return {
        "schema_version": API_SCHEMA_VERSION, "generated_at": state.now, "run": state.run_id,
        "coordinator": {"key": state.coordinator_key, "version": state.coordinator_version,
                        "http_address": state.http_address or None, "visible_maddrs": list(state.visible_maddrs),
                        "records_rejected": state.records_rejected,
                        "records_rejected_by_rule": {r.rule: r.count for r in state.rejected_by_rule},
                        "stale_after_s": snapshot.stale_after_s,
                        "max_history_rounds": max_history_rounds},
        "round": round_document(records.get(state, "latest"), state.now, snapshot.stale_after_s),
        "swarm": summary_document(snapshot.summary),
        "distributions": distributions_document(state.peers),
        "alerts": {"active": [alert_document(a) for a in state.alerts],
                   "resolved": [alert_document(a) for a in snapshot.resolved]},
        "events": [{"seq": e.seq, "kind": event_kind(e), "at": e.at, "round": e.round, "peer_id": e.peer_id or None,
                    "detail": e.detail} for e in snapshot.events],
        "peers": select_peers(state.peers, state.now, query),
    }


# ---------------------------------------------------------------- /api/v1/history

@dataclass(frozen=True)
class HistoryQuery:
    """Which rounds (and which peers' series) the history document holds."""

    first_round: int = 0   # 0 = from the oldest kept
    last_round: int = 0    # 0 = up to the latest
    max_rounds: int = 500  # the newest this many of the range
    peers: tuple[str, ...] = ()


SWARM_COLUMNS = ("round", "issued_at", "num_peers", "num_contributions", "lambda_t", "explore_share",
                 "exploit_share", "baseline_er", "baseline_erv", "baseline_era", "baseline_score", "reward",
                 "reward_std", "er", "er_std", "erv", "erv_std", "era", "era_std", "rollouts", "tokens",
                 "merged_rollouts_per_s", "merged_tokens_per_s", "kl", "accuracy", "heldout_accuracy", "aux",
                 "peers_reporting", "averaging_failures", "peers_behind")
PEER_COLUMNS = ("round", "reward", "er", "erv", "era", "rollouts", "tokens", "merged_tokens_per_s", "kl",
                "accuracy", "heldout_accuracy", "tokens_per_s", "epoch")
_CARRIED = ("kl", "accuracy", "heldout_accuracy", "aux")


def _round_columns(record: swarm_pb2.BalanceWeights, rollouts: int, tokens: int) -> dict[str, Any]:
    moments = records.stats_of(record.merged).moments
    row = {"round": record.round, "issued_at": record.issued_at, "num_peers": record.num_peers,
           "num_contributions": record.num_contributions, "lambda_t": record.lambda_t,
           "explore_share": records.get(record.balance, "explore_share"),
           "exploit_share": records.get(record.balance, "exploit_share"),
           "reward": moments["score"].mean, "reward_std": moments["score"].std, "rollouts": rollouts, "tokens": tokens}
    for name in INDICATORS:
        row[f"baseline_{name}"] = records.get(record.baselines, name)
    for name in ("er", "erv", "era"):
        row[name], row[f"{name}_std"] = moments[name].mean, moments[name].std
    return row


def _rate_windows(issued: list[float]) -> list[tuple[int, float] | None]:
    """For round i of `issued` (commit times, oldest first): (first index of its window, seconds) where
    its window is the last RATE_WINDOW_ROUNDS rounds up to i, timed from the commit of the round
    before the window. None where that round is not in `issued` (the window would start at an
    unknown time) or no time passed."""
    windows = []
    for i, end in enumerate(issued):
        start = max(1, i - RATE_WINDOW_ROUNDS + 1)  # issued[start - 1] starts the window's clock
        seconds = end - issued[start - 1] if i >= 1 else 0.0
        windows.append((start, seconds) if seconds > 0 else None)
    return windows


def _merged_rate(values: list[int], windows: list[tuple[int, float] | None]) -> list[float | None]:
    """What the rounds of each window merged (`values` per round) per second of the window."""
    return [sum(values[w[0]:i + 1]) / w[1] if w is not None else None for i, w in enumerate(windows)]


_SAMPLED = ("kl", "accuracy", "heldout_accuracy", "aux", "averaging_failures", "tokens_per_s", "epoch",
            "schema_version")


def _failure_count(sample: dict) -> int | None:
    """A report's averaging-failure counter; None in schema-1 reports, which did not count."""
    return sample["averaging_failures"] if (sample["schema_version"] or 1) >= 2 else None


def _carry_forward(rows: list[dict[str, Any]], samples: list[dict], peer_timeout: float,
                   peers: Sequence[str]) -> dict[str, dict[int, dict]]:
    """Fill the status-based swarm columns from each peer's latest report at each round (reports older
    than `peer_timeout` at the round are left out); return, for the requested peers, that report per round."""
    samples = sorted(samples, key=lambda s: (s["round"], s["reported_at"]))
    latest: dict[str, dict] = {}
    failures: dict[str, int] = {}
    per_peer: dict[str, dict[int, dict]] = {p: {} for p in peers}
    index, first_round = 0, rows[0]["round"] if rows else 0
    for row in rows:
        new_failures = 0
        while index < len(samples) and samples[index]["round"] <= row["round"]:
            sample = samples[index]
            peer, count = sample["peer_id"], _failure_count(sample)
            previous = failures.get(peer)
            counted = sample["round"] >= first_round  # reports from before the window only set the starting counts
            if counted and count is not None and previous is not None and count > previous:
                new_failures += count - previous
            if count is not None:
                failures[peer] = count
            latest[peer] = sample
            index += 1
        fresh = [s for s in latest.values() if row["issued_at"] - s["reported_at"] <= peer_timeout]
        for name in _CARRIED:
            row[name] = mean_or_none([s[name] for s in fresh if s[name] is not None])
        row["peers_reporting"] = len(fresh)
        # unknown (not 0) when no fresh report counts failures
        row["averaging_failures"] = new_failures if any(_failure_count(s) is not None for s in fresh) else None
        for peer in peers:
            sample = latest.get(peer)
            if sample is not None and row["issued_at"] - sample["reported_at"] <= peer_timeout:
                per_peer[peer][row["round"]] = sample
    return per_peer


def _peer_series(rows: list[dict[str, Any]], moments: dict[int, dict[str, tuple[int, float]]],
                 statuses: dict[int, dict], merged_tokens_per_s: list[float | None]) -> dict[str, list]:
    series: dict[str, list] = {name: [] for name in PEER_COLUMNS}
    for row in rows:
        r = row["round"]
        merged, status = moments.get(r, {}), statuses.get(r)
        series["round"].append(r)
        for name, column in (("score", "reward"), ("er", "er"), ("erv", "erv"), ("era", "era")):
            count, total = merged.get(name, (0, 0.0))
            series[column].append(total / count if count else None)
        series["rollouts"].append(int(merged["rollouts"][1]) if merged else 0)
        series["tokens"].append(int(merged["tokens"][1]) if merged else 0)
        for name in ("kl", "accuracy", "heldout_accuracy", "tokens_per_s", "epoch"):
            series[name].append(status[name] if status is not None else None)
    series["merged_tokens_per_s"] = merged_tokens_per_s
    return series


def history_document(store: HistoryStore, query: HistoryQuery, *, peer_timeout: float) -> dict[str, Any]:
    """The `/api/v1/history` document (docs/api.md): columns per round, oldest first."""
    records = store.rounds(query.first_round, query.last_round, query.max_rounds)
    doc: dict[str, Any] = {"schema_version": API_SCHEMA_VERSION, "rate_window_rounds": RATE_WINDOW_ROUNDS}
    if not records:
        return {**doc, "rounds": {name: [] for name in SWARM_COLUMNS}, "peers": {}, "behind": []}
    first, last = records[0].round, records[-1].round
    # the rate windows of the first rows reach back before them: read those rounds too, so a round's
    # rate is the same whichever rows a request asks for
    context = store.rounds(1, first - 1, RATE_WINDOW_ROUNDS) if first > 1 else []
    every = context + records
    totals = store.round_totals(every[0].round, last)
    rows = [_round_columns(r, *totals.get(r.round, (0, 0))) for r in every]
    windows = _rate_windows([row["issued_at"] for row in rows])
    for name in ("rollouts", "tokens"):
        for row, rate in zip(rows, _merged_rate([row[name] for row in rows], windows)):
            row[f"merged_{name}_per_s"] = rate
    rows = rows[len(context):]
    samples = store.status_samples(_SAMPLED, last, since=records[0].issued_at - peer_timeout)
    per_peer = _carry_forward(rows, samples, peer_timeout, query.peers)
    spans = store.alert_spans("peer_behind", first, last)
    for row in rows:
        row["peers_behind"] = len({p for p, a, b in spans if a <= row["round"] and (b == 0 or b >= row["round"])})
    moments = store.peer_round_moments(every[0].round, last, list(query.peers))
    peers = {}
    for peer in query.peers:
        tokens = [int(moments.get(peer, {}).get(r.round, {}).get("tokens", (0, 0))[1]) for r in every]
        peers[peer] = _peer_series(rows, moments.get(peer, {}), per_peer[peer],
                                   [_finite_or(v) for v in _merged_rate(tokens, windows)[len(context):]])
    return {**doc, "rounds": {name: [_finite_or(row[name]) for row in rows] for name in SWARM_COLUMNS},
            "peers": peers,
            "behind": [{"peer_id": p, "first_round": a, "last_round": b or None} for p, a, b in spans]}


def _finite_or(value):
    return _finite(value) if isinstance(value, float) else value
