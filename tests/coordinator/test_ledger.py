"""Ledger: rounds committed before they are returned, de-duplication across restarts, events."""

import random

import pytest
from coordinator_fakes import RUN, batch_stats, meta_record, peer_status, random_batch

from coordinator.events import EventKind, EventLog
from coordinator.ledger import Ledger
from coordinator.store import HistoryStore
from plumbing.dht_records import Rejection
from protos import records, swarm_pb2
from shaping import ShapingConfig


def _ledger(path, events=None) -> Ledger:
    return Ledger(HistoryStore(path, RUN), events or EventLog(), run=RUN, coordinator_key="k",
                  shaping=ShapingConfig(), peer_timeout=30.0)


def _kinds(events: EventLog) -> list[int]:
    return [event.kind for event in events.after(0)]


@pytest.mark.unit
def test_ingest_commits_and_never_merges_a_peer_step_twice_even_after_restart(tmp_path):
    rng = random.Random(3)
    signals = [meta_record(p, 0, batch_stats(*random_batch(rng, 5)), published_at=100.0) for p in ("a", "b")]
    events = EventLog()
    ledger = _ledger(tmp_path / "h.db", events)
    result = ledger.ingest(signals, now=100.5)
    assert result.record.round == 1 and ledger.store.latest_round() == result.record  # committed already
    assert ledger.ingest(signals, now=101.0) is None
    assert ledger.ingest(signals, now=102.0) is None
    assert _kinds(events) == [EventKind.PEER_JOINED, EventKind.PEER_JOINED, EventKind.ROUND_COMPLETED,
                              EventKind.ROUND_SKIPPED]  # a streak of empty rounds is announced once
    ledger.store.close()

    restarted = _ledger(tmp_path / "h.db")
    assert restarted.round == 1 and restarted.latest == result.record
    assert restarted.ingest(signals, now=103.0) is None  # still in the DHT, already merged
    later = meta_record("a", 1, batch_stats(*random_batch(rng, 5)), published_at=103.0)
    second = restarted.ingest(signals + [later], now=104.0)
    assert second.record.round == 2 and second.contributions == (later,)
    expected = records.baselines_of(result.record.baselines).update(records.stats_of(later.stats), ShapingConfig())
    assert records.baselines_of(second.record.baselines) == expected
    assert second.record.baselines == records.baselines_message(expected)  # the derived m_k too
    restarted.store.close()


@pytest.mark.unit
def test_peers_join_leave_and_rejections_are_announced_once(tmp_path):
    events = EventLog()
    ledger = _ledger(tmp_path / "h.db", events)
    status = peer_status("a", 100.0, reachability=swarm_pb2.REACHABILITY_DIRECT, step=3)
    ledger.note_statuses([status], now=100.0)
    ledger.note_rejected([Rejection("x#1", "bad", "max"), Rejection("x#1", "bad again", "max")], now=100.0)
    ledger.sweep(now=120.0)
    ledger.sweep(now=131.0)
    assert _kinds(events) == [EventKind.PEER_JOINED, EventKind.RECORD_REJECTED, EventKind.PEER_LEFT]
    state = ledger.swarm_state(now=131.0)
    assert [(p.peer_id, p.active, p.status) for p in state.peers] == [("a", False, status)]
    ledger.store.close()


@pytest.mark.unit
def test_event_log_waits_are_bounded_and_close_wakes_them():
    events = EventLog(capacity=2)
    assert events.wait_after(0, timeout=0.05) == []
    for i in range(3):
        events.emit(EventKind.ROUND_SKIPPED, float(i))
    assert [e.seq for e in events.after(0)] == [2, 3] and events.last_seq == 3
    events.close()
    assert events.wait_after(3, timeout=5.0) == [] and events.closed
