"""SQLite history: rounds survive a restart unchanged, commits are atomic, bad files are refused clearly."""

import random
import sqlite3
from pathlib import Path

import pytest
from coordinator_fakes import (
    RUN,
    SCHEMA_3_FIELDS,
    batch_stats,
    full_peer_status,
    meta_record,
    peer_status,
    random_batch,
)

from coordinator.rounds import RoundState, merge_round
from coordinator.store import STORE_SCHEMA_VERSION, HistoryStore, StoreError
from protos import swarm_pb2
from shaping import ShapingConfig


def Alert(key, kind, severity, peer_id, message, started_at, started_round) -> swarm_pb2.Alert:
    return swarm_pb2.Alert(key=key, kind=kind, severity=severity, peer_id=peer_id, message=message,
                           started_at=started_at, started_round=started_round)


def _commit_rounds(store: HistoryStore, num_rounds: int, seed: int = 0) -> list:
    rng, state, results = random.Random(seed), RoundState.initial(ShapingConfig()), []
    for r in range(num_rounds):
        records = [meta_record(peer, r, batch_stats(*random_batch(rng, 6))) for peer in ("a", "b")]
        result = merge_round(state, records, ShapingConfig(), run=RUN, coordinator_key="k", issued_at=100.0 + r)
        store.commit_round(result.record, result.contributions, seen_at=100.0 + r)
        state = result.state
        results.append(result)
    return results


@pytest.mark.unit
def test_reopened_store_serves_the_same_history(tmp_path):
    path = tmp_path / "history.db"
    store = HistoryStore(path, RUN)
    results = _commit_rounds(store, 3)
    status = peer_status("a", 99.0, version="0.1.0", reachability=swarm_pb2.REACHABILITY_RELAYED)
    store.touch_peer("a", 99.0, status=status)
    before = (store.rounds(), [store.contributions(r) for r in (1, 2, 3)], store.peers())
    store.close()

    reopened = HistoryStore(path, RUN)
    assert (reopened.rounds(), [reopened.contributions(r) for r in (1, 2, 3)], reopened.peers()) == before
    assert reopened.latest_round() == results[-1].record
    assert reopened.rounds(2, 2) == [results[1].record]
    assert reopened.rounds(limit=2) == [results[1].record, results[2].record]  # the newest, oldest first
    assert reopened.merged_keys([("a", 0), ("b", 2), ("a", 9)]) == {("a", 0), ("b", 2)}
    peer_a = next(p for p in reopened.peers() if p.peer_id == "a")
    assert peer_a.status == status and peer_a.last_step == 2 and peer_a.num_contributions == 3
    reopened.close()


@pytest.mark.unit
def test_a_failed_commit_leaves_nothing_behind(tmp_path):
    store = HistoryStore(tmp_path / "h.db", RUN)
    first = _commit_rounds(store, 1)[0]
    again = merge_round(first.state, list(first.contributions), ShapingConfig(), run=RUN, coordinator_key="k",
                        issued_at=200.0)  # the same (peer, step) pairs: the unique key refuses them
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_round(again.record, again.contributions, seen_at=200.0)
    assert store.latest_round() == first.record and store.rounds() == [first.record]
    store.close()


@pytest.mark.unit
def test_corrupt_file_is_refused_with_the_path(tmp_path):
    path = tmp_path / "h.db"
    path.write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(StoreError, match="corrupt") as info:
        HistoryStore(path, RUN)
    assert str(path) in str(info.value)


@pytest.mark.unit
def test_damaged_pages_are_refused(tmp_path):
    path = tmp_path / "h.db"
    store = HistoryStore(path, RUN)
    _commit_rounds(store, 20)
    store.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[2 * 4096:3 * 4096] = b"\xff" * 4096  # wipe a b-tree page in the middle of the file
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        HistoryStore(path, RUN).rounds()


@pytest.mark.unit
def test_other_run_newer_schema_and_foreign_files_are_refused(tmp_path):
    HistoryStore(tmp_path / "h.db", RUN).close()
    with pytest.raises(StoreError, match="another db_path"):
        HistoryStore(tmp_path / "h.db", "other-run")
    conn = sqlite3.connect(tmp_path / "h.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="schema 99, newer than this coordinator's 3"):
        HistoryStore(tmp_path / "h.db", RUN)
    foreign = sqlite3.connect(tmp_path / "foreign.db")
    foreign.execute("CREATE TABLE t (x)")
    foreign.close()
    with pytest.raises(StoreError, match="something else"):
        HistoryStore(tmp_path / "foreign.db", RUN)


LEGACY_V2 = Path(__file__).parent / "data" / "history_v2.sql"  # written by the coordinator of 0.1.0


def _legacy_file(path: Path, version: int) -> Path:
    """A history file as rankswarm 0.1.0 left it: schema 2, or schema 1 (no statuses, alerts or counts)."""
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_V2.read_text())
    if version == 1:
        conn.executescript("DROP TABLE statuses; DROP TABLE alerts; ALTER TABLE peers DROP COLUMN num_contributions;"
                           "PRAGMA user_version=1;")
    conn.close()
    return path


def _expected_statuses() -> tuple[swarm_pb2.PeerStatus, swarm_pb2.PeerStatus]:
    """The two reports in LEGACY_V2, as this version builds them."""
    full = full_peer_status("a", 102.5, balance_round=2, era_deciles=None, schema_version=2,
                            **dict.fromkeys(SCHEMA_3_FIELDS))
    old = peer_status("b", 102.75, schema_version=1, version="0.0.9", reachability=swarm_pb2.REACHABILITY_DIRECT,
                      step=2, throughput=0.5, bytes_sent=1, bytes_received=2)
    return full, old


@pytest.mark.unit
@pytest.mark.parametrize("version", [1, 2])
def test_an_old_history_is_upgraded_in_place_and_resumes_exactly(tmp_path, version):
    expected = _commit_rounds(HistoryStore(tmp_path / "fresh.db", RUN), 3)  # the same rounds, made by this version
    path = _legacy_file(tmp_path / "old.db", version)
    store = HistoryStore(path, RUN)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION == 3
    assert store.rounds() == [r.record for r in expected]  # bit for bit: the JSON kept every float exactly
    assert [store.contributions(r) for r in (1, 2, 3)] == [list(r.contributions) for r in expected]
    assert RoundState.after(store.latest_round(), ShapingConfig()) == expected[-1].state  # baselines resume exactly
    assert store.merged_keys([("a", 2), ("b", 0), ("a", 3)]) == {("a", 2), ("b", 0)}
    full, old = _expected_statuses()
    peers = store.peers()
    assert [(p.peer_id, p.first_seen, p.last_seen, p.last_step, p.num_contributions) for p in peers] == [
        ("a", 100.0, 102.5, 2, 3), ("b", 100.0, 102.75, 2, 3)]
    assert [p.status for p in peers] == [full, old]
    if version == 2:
        assert store.statuses() == [(4, full), (4, old)]
        assert [(a.key, a.ended_at) for a in store.alerts(active=True)] == [("peer_behind:a", 0.0)]
        assert [(a.key, a.ended_at) for a in store.alerts(active=False)] == [("no_peers", 101.5)]
    else:
        assert store.statuses() == [] and store.alerts(active=True) == []
    more = merge_round(expected[-1].state, [meta_record("a", 3, batch_stats(*random_batch(random.Random(1), 6)))],
                       ShapingConfig(), run=RUN, coordinator_key="k", issued_at=104.0)
    store.commit_round(more.record, more.contributions, seen_at=104.0)  # it goes on as a schema-3 file
    store.close()
    assert HistoryStore(path, RUN).rounds() == [r.record for r in expected] + [more.record]


@pytest.mark.unit
def test_an_old_history_that_cannot_be_read_is_named_and_left_unchanged(tmp_path):
    path = _legacy_file(tmp_path / "old.db", 2)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE rounds SET record = replace(record, '\"lambda_t\":', '\"lambda\":') WHERE round = 2")
    conn.commit()
    before = conn.execute("SELECT record FROM rounds ORDER BY round").fetchall()
    conn.close()
    with pytest.raises(StoreError) as info:
        HistoryStore(path, RUN)
    message = str(info.value)
    assert str(path) in message and "round 2" in message and "lambda" in message and "unchanged" in message
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT record FROM rounds ORDER BY round").fetchall() == before
    with pytest.raises(StoreError, match="another db_path"):  # another run's old file: refused before upgrading
        HistoryStore(path, "other-run")


@pytest.mark.unit
def test_status_history_keeps_each_report_once_and_the_newest_as_the_peers_status(tmp_path):
    store = HistoryStore(tmp_path / "h.db", RUN)
    newer = peer_status("a", 50.0, step=5)
    older = peer_status("a", 40.0, step=4)
    store.save_statuses([newer], now=51.0, round_=2)
    store.save_statuses([newer, older], now=52.0, round_=3)  # the DHT may still serve an older one
    assert [p.status for p in store.peers()] == [newer]
    assert store.statuses() == [(3, older), (2, newer)]  # oldest report first; each kept once
    assert store.statuses(first_round=3) == [(3, older)] and store.statuses(since=45.0) == [(2, newer)]
    assert store.prune_statuses(older_than=45.0) == 1 and store.statuses() == [(2, newer)]


@pytest.mark.unit
def test_alerts_open_close_and_old_resolved_ones_are_trimmed(tmp_path, monkeypatch):
    import coordinator.store as store_module

    monkeypatch.setattr(store_module, "_MAX_CLOSED_ALERTS", 3)
    store = HistoryStore(tmp_path / "h.db", RUN)
    for i in range(5):
        store.open_alert(Alert(f"k{i}", "peer_behind", "warning", f"p{i}", f"m{i}", 10.0 + i, i))
    store.update_alert("k0", "reworded")
    for i in range(5):
        store.close_alert(f"k{i}", 20.0 + i, 10 + i)
    store.open_alert(Alert("k9", "no_peers", "warning", "", "none", 30.0, 20))
    assert [a.key for a in store.alerts(active=True)] == ["k9"]
    resolved = store.alerts(active=False)
    assert [a.key for a in resolved] == ["k4", "k3", "k2"]  # newest first, the 3 kept
    assert (resolved[0].ended_at, resolved[0].ended_round) == (24.0, 14)
    assert store.alert_spans("peer_behind", 12, 13) == [("p2", 2, 12), ("p3", 3, 13), ("p4", 4, 14)]
