"""`Monitor`: what operators see of the swarm: classified peers, alerts with start times, a summary.

The round loop calls `refresh(now)` after every round, so alerts open and close (with their
times written to the history store) even while nobody watches; the gRPC service, the
dashboard's JSON API and /metrics call `snapshot(now)`, which reuses a snapshot younger than
`max_age_s`, so a wall of open dashboards costs one evaluation. The rules themselves are the
pure functions of `coordinator.health`; this module only remembers what they need between
evaluations (recent epochs and failure counters per peer, open alerts, round times).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coordinator.config import HealthConfig
from coordinator.events import EventKind, EventLog, SwarmEvent
from coordinator.health import (
    Condition,
    PeerMemory,
    SwarmSummary,
    classify_peers,
    peer_conditions,
    round_at,
    summarize,
    swarm_conditions,
)
from coordinator.ledger import Ledger
from coordinator.store import HistoryStore
from coordinator.views import status_of
from protos import records, swarm_pb2

log = logging.getLogger(__name__)

_MAX_ROUND_TIMES = 10_000    # (issued_at, round) pairs kept for the peer_stale_weights rule
_PRUNE_EVERY_S = 3600.0      # how often old status reports are deleted
_RECENT_EVENTS = 50


@dataclass(frozen=True)
class Snapshot:
    """One evaluation: the classified state (with active alerts), the summary, recent history of health."""

    state: swarm_pb2.SwarmState       # classified peers, active alerts: what GetSwarmState sends
    summary: SwarmSummary
    resolved: tuple[swarm_pb2.Alert, ...]  # recently resolved alerts, newest first
    events: tuple[SwarmEvent, ...]    # recent swarm events, newest first
    stale_after_s: float              # the stale_weights threshold in force


class AlertTracker:
    """Turns the conditions of each evaluation into alerts: opened when a condition appears (with the
    time it began), closed when it is gone; both written to the store, so a restart keeps them."""

    def __init__(self, store: HistoryStore):
        self.store = store
        self._open = {alert.key: alert for alert in store.alerts(active=True, limit=1_000_000)}

    def update(self, conditions: Sequence[Condition], now: float,
               round_at: Callable[[float], int]) -> tuple[swarm_pb2.Alert, ...]:
        """Open, reword or close alerts so the open ones are exactly `conditions`; returns them oldest first."""
        current = {c.key: c for c in conditions}
        for key, condition in current.items():
            alert = self._open.get(key)
            if alert is None:
                started = min(condition.since, now)
                alert = swarm_pb2.Alert(key=key, kind=condition.kind, severity=condition.severity,
                                        peer_id=condition.peer_id, message=condition.message, started_at=started,
                                        started_round=round_at(started))
                self.store.open_alert(alert)
                log.warning("alert %s: %s", condition.kind, condition.message)
            elif alert.message != condition.message:  # numbers in the text move; the store gets it at close
                alert = records.replace(alert, message=condition.message)
            self._open[key] = alert
        for key in [key for key in self._open if key not in current]:
            alert = self._open.pop(key)
            self.store.update_alert(key, alert.message)
            self.store.close_alert(key, now, round_at(now))
            log.info("alert %s cleared after %.0f s: %s", alert.kind, now - alert.started_at, alert.message)
        return tuple(sorted(self._open.values(), key=lambda a: (a.started_at, a.key)))


class Monitor:
    """Classifies peers and keeps alerts for one coordinator; thread-safe."""

    def __init__(self, ledger: Ledger, events: EventLog, cfg: HealthConfig, *, version: str, round_interval: float,
                 peer_timeout: float, visible_maddrs: Callable[[], Sequence[str]] = tuple,
                 http_address: Callable[[], str] = str, max_age_s: float = 0.5, now: float | None = None):
        self.ledger, self.events, self.cfg = ledger, events, cfg
        self.version, self.peer_timeout = version, peer_timeout
        self.stale_after_s = cfg.stale_round_after_s or max(60.0, 6 * round_interval)
        self._visible_maddrs, self._http_address = visible_maddrs, http_address
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._memories: dict[str, PeerMemory] = {}
        self._tracker = AlertTracker(ledger.store)
        self._round_times = [(r.issued_at, r.round) for r in ledger.store.rounds(limit=_MAX_ROUND_TIMES)]
        self._cached: tuple[float, Snapshot, int] | None = None  # (when, what, the ledger's round then)
        self._pruned_at = float("-inf")
        if now is not None:  # after a restart: recent reports tell the failure counters' history
            for _, status in ledger.store.statuses(since=now - max(peer_timeout, cfg.failure_window_s)):
                self._remember(status, now)

    def refresh(self, now: float) -> Snapshot:
        """Evaluate now (the round loop calls this after every round); prunes old status reports hourly."""
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            removed = self.ledger.store.prune_statuses(now - self.cfg.status_retention_s)
            if removed:
                log.info("deleted %d status reports older than %.0f s", removed, self.cfg.status_retention_s)
        return self.snapshot(now, fresh=True)

    def snapshot(self, now: float, *, fresh: bool = False) -> Snapshot:
        """The latest evaluation, or a new one if it is older than `max_age_s`, predates the latest committed
        round (a client that saw a round end must see its peers), or `fresh` is asked for."""
        with self._lock:
            round_ = self.ledger.round
            if (not fresh and self._cached is not None and time.monotonic() - self._cached[0] < self.max_age_s
                    and self._cached[2] == round_):
                return self._cached[1]
            snapshot = self._evaluate(now)
            self._cached = (time.monotonic(), snapshot, round_)
            return snapshot

    # ------------------------------------------------------------ one evaluation (holding the lock)

    def _evaluate(self, now: float) -> Snapshot:
        raw = self.ledger.swarm_state(now, self._visible_maddrs())
        latest = raw.latest
        if latest is not None and (not self._round_times or self._round_times[-1][1] < latest.round):
            self._round_times.append((latest.issued_at, latest.round))
            del self._round_times[:-_MAX_ROUND_TIMES]
        for peer in raw.peers:
            if status_of(peer) is not None:
                self._remember(peer.status, now)
        peers = classify_peers(raw.peers, self._memories, now, self.cfg, self.version)
        conditions = swarm_conditions(peers, latest, now, self.cfg, stale_after_s=self.stale_after_s,
                                      rejected=self._recent_rejections(now))
        for peer in peers:
            conditions += peer_conditions(peer, self._memories.get(peer.peer_id), latest, now, self.cfg,
                                          coordinator_version=self.version, rounds_by_time=self._round_times)
        alerts = self._tracker.update(conditions, now, lambda at: round_at(self._round_times, at))
        state = records.replace(raw, peers=peers, alerts=alerts, coordinator_version=self.version,
                                http_address=self._http_address())
        recent = self.events.after(max(0, self.events.last_seq - _RECENT_EVENTS))
        return Snapshot(state, summarize(peers), tuple(self.ledger.store.alerts(active=False, limit=50)),
                        tuple(reversed(recent)), self.stale_after_s)

    def _remember(self, status: swarm_pb2.PeerStatus, now: float) -> None:
        """Note a report not seen before: its epoch, and any rise of its failure counters."""
        memory = self._memories.setdefault(status.peer_id, PeerMemory())
        previous = memory.last
        if previous is not None and status.reported_at <= previous.reported_at:
            return
        if status.HasField("epoch"):
            memory.epochs.append((status.reported_at, status.epoch))
        if previous is not None:  # counters restart with the peer: only rises count
            if status.averaging_failures > previous.averaging_failures:
                memory.failures.append((status.reported_at, status.averaging_failures - previous.averaging_failures))
            if status.publish_failures > previous.publish_failures:
                memory.publish_failures.append((status.reported_at,
                                                status.publish_failures - previous.publish_failures))
        memory.last = status
        horizon = now - max(self.peer_timeout, self.cfg.failure_window_s)
        memory.epochs[:] = [s for s in memory.epochs if s[0] >= horizon] or memory.epochs[-1:]
        memory.failures[:] = [s for s in memory.failures if s[0] >= horizon]
        memory.publish_failures[:] = [s for s in memory.publish_failures if s[0] >= horizon]

    def _recent_rejections(self, now: float) -> list[tuple[float, str, str]]:
        since = now - self.cfg.failure_window_s
        return [(e.at, e.peer_id, e.detail) for e in self.events.after(0)
                if e.kind == EventKind.RECORD_REJECTED and e.at >= since]
