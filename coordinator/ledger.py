"""The coordinator's state of record: round state, history store, peers and events, behind one lock.

The round loop feeds it what the DHT returned (`ingest`, `note_rejected`, `note_statuses`);
the gRPC service reads from it. It knows nothing of the
DHT or gRPC, so a test can drive a coordinator's rounds in one process with plain records
(messages of swarm.proto, validated where they entered). Every round is committed to the store
before it is returned (and so before it is published).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from coordinator.config import TrustConfig
from coordinator.events import EventKind, EventLog
from coordinator.rounds import RoundResult, RoundState, hold_back, merge_round, select_new, vet
from coordinator.store import HistoryStore
from plumbing.dht_keys import FINGERPRINT_PATTERN
from plumbing.dht_records import Rejection
from protos import records, swarm_pb2
from shaping import ShapingConfig

log = logging.getLogger(__name__)

_MAX_REMEMBERED_REJECTIONS = 10_000  # rejections are announced once; forget them all past this many


class Ledger:
    """Round state + store + events for one run; thread-safe."""

    def __init__(self, store: HistoryStore, events: EventLog, *, run: str, coordinator_key: str,
                 shaping: ShapingConfig, peer_timeout: float, trust: TrustConfig | None = None):
        self.store, self.events = store, events
        self.run, self.coordinator_key = run, coordinator_key
        self.shaping, self.peer_timeout = shaping, peer_timeout
        self.trust = trust or TrustConfig()
        self._lock = threading.RLock()
        self._latest = store.latest_round()
        self._state = RoundState.after(self._latest, shaping)
        self._active: dict[str, float] = {}  # peer id -> last seen (DHT time); empty after a restart
        self._announced_rejections: set[tuple[str, str]] = set()
        self._status_at: dict[str, float] = {}  # peer id -> reported_at of its latest stored status
        self._admission = self._load_admission()
        self.num_rejected = 0  # distinct DHT records rejected since start
        self.rejected_by_rule: Counter[str] = Counter()  # the same, by the rule they broke
        self._skipping = False
        if self._latest is not None:
            log.info("resuming run %s after round %d", run, self._latest.round)

    def _load_admission(self) -> swarm_pb2.Admission:
        """The stored admission list, made to say what `trust.closed` says now (a new version if it changed)."""
        stored = self.store.admission()
        if stored is not None and stored.closed == self.trust.closed and stored.coordinator_key == self.coordinator_key:
            return stored
        version = stored.version + 1 if stored is not None else 1
        admission = records.build(swarm_pb2.Admission, run_id=self.run, closed=self.trust.closed,
                                  admitted=list(stored.admitted) if stored else [],
                                  banned=list(stored.banned) if stored else [], version=version, issued_at=0.0,
                                  coordinator_key=self.coordinator_key)
        self.store.save_admission(admission)
        return admission

    @property
    def admission(self) -> swarm_pb2.Admission:
        with self._lock:
            return self._admission

    def refused(self, peer_id: str) -> str | None:
        """"banned", "not_admitted" (closed swarm) or None: whether `peer_id` may take part."""
        admission = self.admission
        if peer_id in admission.banned:
            return "banned"
        if admission.closed and peer_id not in admission.admitted:
            return "not_admitted"
        return None

    def set_admission(self, peer_id: str, action: int, now: float) -> swarm_pb2.Admission:
        """Admit, ban or forget `peer_id` (a key fingerprint); the new list is stored, then returned."""
        if not FINGERPRINT_PATTERN.match(peer_id):
            raise ValueError(f"peer_id {peer_id!r} is not a key fingerprint (32 hex digits, as `rankswarm status` "
                             f"and the dashboard show them)")
        if action not in (swarm_pb2.ADMIT, swarm_pb2.BAN, swarm_pb2.FORGET):
            raise ValueError("action must be ADMIT, BAN or FORGET")
        with self._lock:
            admitted = set(self._admission.admitted) - {peer_id}
            banned = set(self._admission.banned) - {peer_id}
            if action == swarm_pb2.ADMIT:
                admitted.add(peer_id)
            elif action == swarm_pb2.BAN:
                banned.add(peer_id)
            self._admission = records.replace(self._admission, admitted=sorted(admitted), banned=sorted(banned),
                                              version=self._admission.version + 1, issued_at=now)
            self.store.save_admission(self._admission)
            log.warning("admission of %s: %s (list version %d)", peer_id,
                        swarm_pb2.AdmissionAction.Name(action).lower(), self._admission.version)
            return self._admission

    @property
    def latest(self) -> swarm_pb2.BalanceWeights | None:
        with self._lock:
            return self._latest

    @property
    def round(self) -> int:
        with self._lock:
            return self._state.round

    # ------------------------------------------------------------ fed by the round loop

    def ingest(self, signals: Sequence[swarm_pb2.MetaSignal], now: float) -> RoundResult | None:
        """Merge the meta-signals not merged before into a new round, commit it, and return it."""
        with self._lock:
            vetted = []
            for signal in signals:
                rejection = vet(signal, now, self.trust, self.refused)
                if rejection is not None:
                    self.note_rejected([rejection], now)
                    continue
                vetted.append(signal)
                self._seen(signal.peer_id, min(now, signal.published_at), now)
            merged = self.store.merged_keys((s.peer_id, s.step) for s in vetted)
            fresh, outliers, deferred = hold_back(select_new(vetted, lambda peer, step: (peer, step) in merged),
                                                  self.trust)
            self.note_rejected(outliers, now)
            if deferred:
                log.info("%d meta-signals wait for a later round (trust.max_share)", deferred)
            result = merge_round(self._state, fresh, self.shaping, run=self.run,
                                 coordinator_key=self.coordinator_key, issued_at=now)
            if result is None:
                self._note_skip(now, len(signals))
                return None
            self.store.commit_round(result.record, result.contributions, seen_at=now)  # before anyone hears of it
            self._state, self._latest, self._skipping = result.state, result.record, False
            self.events.emit(EventKind.ROUND_COMPLETED, now, round=result.record.round, weights=result.record,
                             detail=f"{result.record.num_contributions} meta-signals from "
                                    f"{result.record.num_peers} peers")
            return result

    def note_rejected(self, rejected: Iterable[Rejection], now: float) -> None:
        """Count and announce each record's rejection once per rule (they repeat every round until the record
        expires)."""
        with self._lock:
            for subkey, reason, rule in rejected:
                if (subkey, rule) in self._announced_rejections:
                    continue
                if len(self._announced_rejections) >= _MAX_REMEMBERED_REJECTIONS:
                    self._announced_rejections.clear()
                self._announced_rejections.add((subkey, rule))
                self.num_rejected += 1
                self.rejected_by_rule[rule] += 1
                self.events.emit(EventKind.RECORD_REJECTED, now, round=self._state.round, peer_id=subkey,
                                 detail=reason)

    def note_statuses(self, statuses: Iterable[swarm_pb2.PeerStatus], now: float) -> None:
        """Store status reports read from the DHT (signed by their peers); reports already stored are skipped,
        and a report dated in the future is rejected (it would stay "newest" over the peer's real ones)."""
        kept = []
        for status in statuses:
            if (rule := self.refused(status.peer_id)) is not None:
                self.note_rejected([Rejection(status.peer_id, f"PeerStatus from {status.peer_id}, which is "
                                              f"{rule.replace('_', ' ')}", rule)], now)
            elif status.reported_at > now + self.trust.max_clock_skew_s:
                self.note_rejected([Rejection(status.peer_id, f"PeerStatus reported {status.reported_at - now:.0f} s "
                                              f"in the future (trust.max_clock_skew_s)", "future")], now)
            else:
                kept.append(status)
        self._save_statuses(kept, now)

    def sweep(self, now: float) -> None:
        """Announce the peers not seen within the peer timeout as gone."""
        with self._lock:
            for peer_id, last_seen in list(self._active.items()):
                if now - last_seen > self.peer_timeout:
                    del self._active[peer_id]
                    self.events.emit(EventKind.PEER_LEFT, now, round=self._state.round, peer_id=peer_id,
                                     detail=f"not seen for {now - last_seen:.0f} s")

    # ------------------------------------------------------------ used by the gRPC service

    def swarm_state(self, now: float, visible_maddrs: Sequence[str] = ()) -> swarm_pb2.SwarmState:
        """The swarm as the history knows it: peers unclassified (the monitor classifies them), no alerts."""
        with self._lock:
            active = set(self._active)
            latest, round_ = self._latest, self._state.round
        peers = [records.replace(peer, active=peer.peer_id in active) for peer in self.store.peers()]
        return swarm_pb2.SwarmState(schema_version=records.latest_schema(swarm_pb2.SwarmState), run_id=self.run,
                                    coordinator_key=self.coordinator_key, round=round_, latest=latest, peers=peers,
                                    visible_maddrs=list(visible_maddrs), now=now, records_rejected=self.num_rejected,
                                    rejected_by_rule=[swarm_pb2.RejectionCount(rule=rule, count=count)
                                                      for rule, count in sorted(self.rejected_by_rule.items())],
                                    admission=self.admission)

    def history(self, first: int = 0, last: int = 0, limit: int = 1000,
                include_contributions: bool = False) -> list[swarm_pb2.RoundRecord]:
        rounds = self.store.rounds(first, last, limit)
        return [swarm_pb2.RoundRecord(weights=record, contributions=self.store.contributions(record.round)
                                      if include_contributions else ()) for record in rounds]

    # ------------------------------------------------------------ helpers

    def _save_statuses(self, statuses: list[swarm_pb2.PeerStatus], now: float) -> None:
        with self._lock:
            fresh = [s for s in statuses if s.reported_at > self._status_at.get(s.peer_id, float("-inf"))]
            if not fresh:
                return
            # tagged with the round in progress: a report belongs to the first round committed after it
            self.store.save_statuses(fresh, now, self._state.round + 1)  # one transaction for the lot
            for status in fresh:
                self._status_at[status.peer_id] = max(status.reported_at, self._status_at.get(status.peer_id, 0.0))
                self._seen(status.peer_id, min(now, status.reported_at), now)

    def _seen(self, peer_id: str, seen_at: float, now: float) -> None:
        if now - seen_at > self.peer_timeout:
            return  # an old record still alive in the DHT says nothing about the peer now
        if peer_id not in self._active:
            self.events.emit(EventKind.PEER_JOINED, now, round=self._state.round, peer_id=peer_id)
        self._active[peer_id] = max(seen_at, self._active.get(peer_id, seen_at))

    def _note_skip(self, now: float, num_seen: int) -> None:
        if self._skipping:
            return  # announce a streak of empty rounds once, not every interval
        self._skipping = True
        reason = ("no meta-signals in the DHT" if num_seen == 0 else
                  f"all {num_seen} visible meta-signals were merged in earlier rounds")
        self.events.emit(EventKind.ROUND_SKIPPED, now, round=self._state.round, detail=reason)
