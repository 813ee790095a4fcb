"""SQLite history: rounds survive a restart unchanged, commits are atomic, bad files are refused clearly."""

import random
import sqlite3

import pytest

from coordinator.rounds import RoundState, merge_round
from coordinator.store import _SCHEMA, STORE_SCHEMA_VERSION, HistoryStore, StoreError, _strip_comments
from coordinator.views import Alert
from coordinator_fakes import RUN, batch_stats, meta_record, random_batch
from plumbing.dht_records import PeerStatusRecord
from shaping import ShapingConfig


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
    status = PeerStatusRecord(run=RUN, peer_id="a", version="0.1.0", reachability="relayed", reported_at=99.0)
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
    with pytest.raises(StoreError, match="schema 99, newer than this coordinator's 2"):
        HistoryStore(tmp_path / "h.db", RUN)
    foreign = sqlite3.connect(tmp_path / "foreign.db")
    foreign.execute("CREATE TABLE t (x)")
    foreign.close()
    with pytest.raises(StoreError, match="something else"):
        HistoryStore(tmp_path / "foreign.db", RUN)


@pytest.mark.unit
def test_a_version_1_history_is_upgraded_in_place_and_keeps_its_rounds(tmp_path):
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(_strip_comments(_SCHEMA))  # the tables of schema version 1, nothing of version 2
    conn.execute("INSERT INTO meta VALUES ('run', ?)", (RUN,))
    conn.execute("INSERT INTO rounds VALUES (1, 1.0, 1, 2, '{}')")  # a version-1 peer with 2 contributions
    conn.executemany("INSERT INTO contributions VALUES ('old', ?, 1, '{}')", [(0,), (1,)])
    conn.execute("INSERT INTO peers VALUES ('old', 1.0, 1.0, 1, NULL)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = HistoryStore(path, RUN)
    assert [(p.peer_id, p.num_contributions) for p in store.peers()] == [("old", 2)]
    store._conn.execute("DELETE FROM contributions")  # the placeholder round's records are not valid records
    store._conn.execute("DELETE FROM rounds")
    results = _commit_rounds(store, 2)
    status = PeerStatusRecord(run=RUN, peer_id="a", reported_at=100.5, reward=0.25)
    store.save_statuses([status], now=101.0, round_=3)
    store.close()
    reopened = HistoryStore(path, RUN)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION == 2
    assert reopened.rounds() == [r.record for r in results] and reopened.statuses() == [(3, status)]


@pytest.mark.unit
def test_status_history_keeps_each_report_once_and_the_newest_as_the_peers_status(tmp_path):
    store = HistoryStore(tmp_path / "h.db", RUN)
    newer = PeerStatusRecord(run=RUN, peer_id="a", step=5, reported_at=50.0)
    older = PeerStatusRecord(run=RUN, peer_id="a", step=4, reported_at=40.0)
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
