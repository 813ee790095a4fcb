"""SQLite history of the coordinator: committed rounds, the meta-signals they merged, peers,
the peers' status reports and the health alerts (for the dashboard's charts and health log).

A round is committed in one transaction (round row, its contributions, the peers it saw)
before its balance record is published or acknowledged, so a restarted coordinator resumes
from the last committed round, never merges a (peer, step) twice, and loses nothing it
has announced. The file uses WAL journaling (readers never block the round writer) and
carries its schema version in `PRAGMA user_version`; a newer version, another run's file,
or a file that is not a healthy SQLite database is refused with a StoreError naming the path.
A version-1 file (before the dashboard) is upgraded in place: version 2 only adds tables.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from pydantic import ValidationError

from coordinator.views import Alert
from plumbing.dht_records import BalanceRecord, MetaSignalRecord, PeerStatusRecord

STORE_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY,
    issued_at REAL NOT NULL,
    num_peers INTEGER NOT NULL,
    num_contributions INTEGER NOT NULL,
    record TEXT NOT NULL                 -- BalanceRecord as JSON, exactly as published
);
CREATE TABLE contributions (
    peer_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    round INTEGER NOT NULL REFERENCES rounds(round),
    record TEXT NOT NULL,                -- MetaSignalRecord as JSON
    PRIMARY KEY (peer_id, step)          -- a (peer, step) is merged at most once, ever
);
CREATE INDEX contributions_by_round ON contributions(round);
CREATE TABLE peers (
    peer_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_step INTEGER,                   -- latest merged step, NULL before the first merge
    status TEXT                          -- latest PeerStatusRecord as JSON, NULL if none
);
"""
# version 2: what the dashboard charts and the health log read
_SCHEMA_V2 = """
CREATE TABLE statuses (
    peer_id TEXT NOT NULL,
    reported_at REAL NOT NULL,
    round INTEGER NOT NULL,              -- the round in progress when it arrived (latest committed + 1)
    record TEXT NOT NULL,                -- PeerStatusRecord as JSON
    PRIMARY KEY (peer_id, reported_at)   -- a report is kept once however often the DHT serves it
);
CREATE INDEX statuses_by_round ON statuses(round);
CREATE INDEX statuses_by_time ON statuses(reported_at);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,                   -- condition identity, e.g. peer_behind:<peer id>
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    message TEXT NOT NULL,               -- latest wording (numbers change while it lasts)
    started_at REAL NOT NULL,
    started_round INTEGER NOT NULL,
    ended_at REAL,                       -- NULL while active
    ended_round INTEGER
);
CREATE INDEX alerts_by_end ON alerts(ended_at);
-- kept by commit_round, so reading the peers does not count their contributions every time
ALTER TABLE peers ADD COLUMN num_contributions INTEGER NOT NULL DEFAULT 0;
UPDATE peers SET num_contributions = (SELECT count(*) FROM contributions c WHERE c.peer_id = peers.peer_id);
"""
_MAX_CLOSED_ALERTS = 5000  # older resolved alerts are deleted as new ones close


_CHART_INDICATORS = ("er", "erv", "era", "score")


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--")[0] for line in sql.splitlines())


class StoreError(RuntimeError):
    """The history database cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class PeerRow:
    """One peer as the history knows it."""

    peer_id: str
    first_seen: float
    last_seen: float
    last_step: int | None
    num_contributions: int
    status: PeerStatusRecord | None


class HistoryStore:
    """The coordinator's SQLite file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path, run: str):
        self.path = Path(path)
        self.run = run
        self._lock = threading.Lock()
        self._conn = self._open()

    # ------------------------------------------------------------ opening and checking

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._prepare(conn)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is not a usable coordinator history ({err}); it may be corrupt: "
                             f"move it away to start a fresh history (the run's baselines restart)") from None
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_SCHEMA_VERSION:
            raise StoreError(f"{self.path} has history schema {version}, newer than this coordinator's "
                             f"{STORE_SCHEMA_VERSION}; upgrade rankswarm")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a commit survives power loss before we announce it
        conn.execute("PRAGMA foreign_keys=ON")
        if version == 0:
            self._create(conn)
        elif version == 1:
            self._upgrade_to_2(conn)
        stored_run = conn.execute("SELECT value FROM meta WHERE name='run'").fetchone()
        if stored_run is None or stored_run[0] != self.run:
            raise StoreError(f"{self.path} holds the history of run {stored_run and stored_run[0]!r}, "
                             f"not {self.run!r}; use another db_path for this run")

    def _create(self, conn: sqlite3.Connection) -> None:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise StoreError(f"{self.path} is an SQLite file of something else (it has tables but no "
                             f"rankswarm schema version); use another db_path")
        conn.execute("BEGIN IMMEDIATE")  # statement by statement: executescript would commit half-way
        for statement in filter(str.strip, _strip_comments(_SCHEMA + _SCHEMA_V2).split(";")):
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('run', ?)", (self.run,))
        conn.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
        conn.execute("COMMIT")

    def _upgrade_to_2(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, _strip_comments(_SCHEMA_V2).split(";")):
            conn.execute(statement)
        conn.execute("PRAGMA user_version=2")
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------ rounds

    def commit_round(self, record: BalanceRecord, contributions: Sequence[MetaSignalRecord], seen_at: float) -> None:
        """Write a round, its contributions and the peers it saw in one transaction (all or nothing)."""
        with self._lock, self._transaction():
            self._conn.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?)",
                               (record.round, record.issued_at, record.num_peers, record.num_contributions,
                                record.model_dump_json()))
            self._conn.executemany("INSERT INTO contributions VALUES (?, ?, ?, ?)",
                                   [(c.peer_id, c.step, record.round, c.model_dump_json()) for c in contributions])
            for c in contributions:
                self._touch_peer(c.peer_id, seen_at, step=c.step)

    def latest_round(self) -> BalanceRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT record FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        return None if row is None else self._parse(BalanceRecord, row[0])

    def rounds(self, first: int = 0, last: int = 0, limit: int = 1000) -> list[BalanceRecord]:
        """Rounds in [first, last] (0 = open end), oldest first; the newest `limit` if there are more."""
        last = last or 2**62
        with self._lock:
            rows = self._conn.execute("SELECT record FROM rounds WHERE round BETWEEN ? AND ? "
                                      "ORDER BY round DESC LIMIT ?", (first, last, limit)).fetchall()
        return [self._parse(BalanceRecord, row[0]) for row in reversed(rows)]

    def contributions(self, round_: int) -> list[MetaSignalRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT record FROM contributions WHERE round=? ORDER BY peer_id, step",
                                      (round_,)).fetchall()
        return [self._parse(MetaSignalRecord, row[0]) for row in rows]

    def merged_keys(self, keys: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of these (peer, step) pairs some committed round already merged."""
        keys = list(keys)
        with self._lock:
            return {key for key in keys if self._conn.execute(
                "SELECT 1 FROM contributions WHERE peer_id=? AND step=?", key).fetchone()}

    # ------------------------------------------------------------ peers

    def touch_peer(self, peer_id: str, seen_at: float, status: PeerStatusRecord | None = None) -> bool:
        """Note that a peer was seen (with its status, if given); True if it is new to the history."""
        with self._lock, self._transaction():
            return self._touch_peer(peer_id, seen_at, status=status)

    def save_statuses(self, statuses: Sequence[PeerStatusRecord], now: float, round_: int) -> None:
        """Keep status reports (in one transaction): each becomes its peer's latest status unless a
        newer one is stored, joins the status history under `round_` (the round in progress: the
        first round committed after the report), and marks its peer seen at min(now, reported_at)."""
        with self._lock, self._transaction():
            for status in statuses:
                self._conn.execute("INSERT OR IGNORE INTO statuses VALUES (?, ?, ?, ?)",
                                   (status.peer_id, status.reported_at, round_, status.model_dump_json()))
                self._touch_peer(status.peer_id, min(now, status.reported_at), status=status)

    def peers(self) -> list[PeerRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT peer_id, first_seen, last_seen, last_step, status, num_contributions "
                "FROM peers ORDER BY peer_id").fetchall()
        return [PeerRow(peer_id, first, last, step, count, None if status is None else
                        self._parse(PeerStatusRecord, status))
                for peer_id, first, last, step, status, count in rows]

    # ------------------------------------------------------------ status history and round aggregates

    def statuses(self, first_round: int = 0, last_round: int = 0, peer_ids: Sequence[str] | None = None, *,
                 since: float | None = None) -> list[tuple[int, PeerStatusRecord]]:
        """(round, report) for reports whose round (see save_statuses) is in [first_round, last_round] (0 = open end),
        oldest first; only those of `peer_ids` and those reported at or after `since`, if given."""
        query = "SELECT round, record FROM statuses WHERE round BETWEEN ? AND ?"
        params: list = [first_round, last_round or 2**62]
        if since is not None:
            query += " AND reported_at >= ?"
            params.append(since)
        if peer_ids is not None:
            query += f" AND peer_id IN ({','.join('?' * len(peer_ids))})"
            params += list(peer_ids)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY reported_at, peer_id", params).fetchall()
        return [(round_, self._parse(PeerStatusRecord, record)) for round_, record in rows]

    def status_samples(self, fields: Sequence[str], last_round: int = 0, *,
                       since: float | None = None) -> list[dict]:
        """Just `fields` of the stored reports (plus round, peer_id, reported_at) as dicts, oldest first:
        what the charts need, read by SQLite without validating whole records (they were on the way in)."""
        unknown = set(fields) - set(PeerStatusRecord.model_fields)
        if unknown:
            raise ValueError(f"PeerStatusRecord has no field(s) {sorted(unknown)}")
        columns = "".join(f", json_extract(record, '$.{name}')" for name in fields)
        query = f"SELECT round, peer_id, reported_at{columns} FROM statuses WHERE round <= ?"
        params: list = [last_round or 2**62]
        if since is not None:
            query += " AND reported_at >= ?"
            params.append(since)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY reported_at, peer_id", params).fetchall()
        names = ("round", "peer_id", "reported_at", *fields)
        return [dict(zip(names, row)) for row in rows]

    def prune_statuses(self, older_than: float) -> int:
        """Delete status reports made before `older_than` (DHT time); returns how many."""
        with self._lock, self._transaction():
            return self._conn.execute("DELETE FROM statuses WHERE reported_at < ?", (older_than,)).rowcount

    def round_totals(self, first: int, last: int) -> dict[int, tuple[int, int]]:
        """round -> (rollouts, response tokens) merged in it, for rounds in [first, last]."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT round, sum(json_extract(record, '$.num_rollouts')), sum(json_extract(record, '$.num_tokens')) "
                "FROM contributions WHERE round BETWEEN ? AND ? GROUP BY round", (first, last or 2**62)).fetchall()
        return {round_: (int(rollouts or 0), int(tokens or 0)) for round_, rollouts, tokens in rows}

    def peer_round_moments(self, first: int, last: int,
                           peer_ids: Sequence[str]) -> dict[str, dict[int, dict[str, tuple[int, float]]]]:
        """peer -> round -> indicator -> (count, sum) over its meta-signals merged in that round;
        indicators are er, erv, era, score, plus rollouts and tokens as (count of records, total)."""
        if not peer_ids:
            return {}
        moments = ", ".join(f"sum(json_extract(record, '$.stats.moments.{k}[0]')), "
                            f"sum(json_extract(record, '$.stats.moments.{k}[1]'))" for k in _CHART_INDICATORS)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT peer_id, round, count(*), sum(json_extract(record, '$.num_rollouts')), "
                f"sum(json_extract(record, '$.num_tokens')), {moments} FROM contributions "
                f"WHERE round BETWEEN ? AND ? AND peer_id IN ({','.join('?' * len(peer_ids))}) "
                f"GROUP BY peer_id, round ORDER BY round", (first, last or 2**62, *peer_ids)).fetchall()
        result: dict[str, dict[int, dict[str, tuple[int, float]]]] = defaultdict(dict)
        for peer_id, round_, num, rollouts, tokens, *sums in rows:
            entry = {"rollouts": (num, float(rollouts or 0)), "tokens": (num, float(tokens or 0))}
            for i, name in enumerate(_CHART_INDICATORS):
                entry[name] = (int(sums[2 * i] or 0), float(sums[2 * i + 1] or 0.0))
            result[peer_id][round_] = entry
        return dict(result)

    # ------------------------------------------------------------ alerts

    def open_alert(self, alert: Alert) -> None:
        with self._lock, self._transaction():
            self._conn.execute("INSERT INTO alerts (key, kind, severity, peer_id, message, started_at, started_round) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", (alert.key, alert.kind, alert.severity, alert.peer_id,
                                                                alert.message, alert.started_at, alert.started_round))

    def update_alert(self, key: str, message: str) -> None:
        with self._lock, self._transaction():
            self._conn.execute("UPDATE alerts SET message=? WHERE key=? AND ended_at IS NULL", (message, key))

    def close_alert(self, key: str, ended_at: float, ended_round: int) -> None:
        with self._lock, self._transaction():
            self._conn.execute("UPDATE alerts SET ended_at=?, ended_round=? WHERE key=? AND ended_at IS NULL",
                               (ended_at, ended_round, key))
            self._conn.execute("DELETE FROM alerts WHERE ended_at IS NOT NULL AND id <= "
                               "(SELECT id FROM alerts WHERE ended_at IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?)",
                               (_MAX_CLOSED_ALERTS,))

    def alerts(self, *, active: bool, limit: int = 100, kind: str | None = None) -> list[Alert]:
        """Active alerts oldest first, or resolved ones newest first (at most `limit`)."""
        where = "ended_at IS NULL" if active else "ended_at IS NOT NULL"
        params: list = []
        if kind is not None:
            where += " AND kind=?"
            params.append(kind)
        order = "started_at, id" if active else "ended_at DESC, id DESC"
        with self._lock:
            rows = self._conn.execute(f"SELECT key, kind, severity, peer_id, message, started_at, started_round, "
                                      f"coalesce(ended_at, 0), coalesce(ended_round, 0) FROM alerts WHERE {where} "
                                      f"ORDER BY {order} LIMIT ?", (*params, limit)).fetchall()
        return [Alert(*row) for row in rows]

    def alert_spans(self, kind: str, first_round: int, last_round: int) -> list[tuple[str, int, int]]:
        """(peer, first round, last round) of every `kind` alert overlapping the rounds (last 0 = active)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT peer_id, started_round, coalesce(ended_round, 0) FROM alerts WHERE kind=? AND "
                "started_round <= ? AND (ended_round IS NULL OR ended_round >= ?) ORDER BY started_round",
                (kind, last_round or 2**62, first_round)).fetchall()
        return [(peer, start, end) for peer, start, end in rows]

    def _touch_peer(self, peer_id: str, seen_at: float, step: int | None = None,
                    status: PeerStatusRecord | None = None) -> bool:
        new = self._conn.execute("SELECT 1 FROM peers WHERE peer_id=?", (peer_id,)).fetchone() is None
        if new:
            self._conn.execute("INSERT INTO peers (peer_id, first_seen, last_seen) VALUES (?, ?, ?)",
                               (peer_id, seen_at, seen_at))
        self._conn.execute("UPDATE peers SET last_seen=max(last_seen, ?) WHERE peer_id=?", (seen_at, peer_id))
        if step is not None:
            self._conn.execute("UPDATE peers SET last_step=max(coalesce(last_step, -1), ?), "
                               "num_contributions=num_contributions + 1 WHERE peer_id=?",
                               (step, peer_id))
        if status is not None:  # never replace a newer report with an older one the DHT still serves
            self._conn.execute("UPDATE peers SET status=? WHERE peer_id=? AND (status IS NULL OR "
                               "json_extract(status, '$.reported_at') <= ?)",
                               (status.model_dump_json(), peer_id, status.reported_at))
        return new

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all (the caller holds the lock)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _parse(self, model, text: str):
        try:
            return model.model_validate_json(text)
        except ValidationError as err:
            reason = err.errors()[0]["msg"]
            raise StoreError(f"{self.path} holds a {model.__name__} that no longer validates ({reason}); "
                             f"the file is corrupt or from an incompatible version") from None
