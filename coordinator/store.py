"""SQLite history of the coordinator: committed rounds, the meta-signals they merged, peers,
the peers' status reports and the health alerts (for the dashboard's charts and health log).

A round is committed in one transaction (round row, its contributions, the peers it saw)
before its balance record is published or acknowledged, so a restarted coordinator resumes
from the last committed round, never merges a (peer, step) twice, and loses nothing it
has announced. Records are kept as their protobuf bytes (`protos.records.encode`: the exact
record that was published or merged) and validated again when read back; the few numbers the
charts sum over are copied into columns. The file uses WAL journaling (readers never block the
round writer) and carries its schema version in `PRAGMA user_version`; a newer version, another
run's file, or a file that is not a healthy SQLite database is refused with a StoreError naming
the path. Files of schema 1 or 2 (records as the JSON of the former pydantic models) are upgraded
in place, in one transaction (coordinator/legacy_records.py reads their records); a record that
cannot be read leaves the file untouched and is named in the StoreError.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from coordinator import legacy_records
from protos import records, swarm_pb2

STORE_SCHEMA_VERSION = 3  # 1: rounds and peers (JSON records); 2: + statuses and alerts; 3: protobuf records

# the tables holding records; upgrading from schema 1 or 2 rebuilds exactly these
_RECORD_TABLES = """
CREATE TABLE rounds (
    round INTEGER PRIMARY KEY,
    issued_at REAL NOT NULL,
    num_peers INTEGER NOT NULL,
    num_contributions INTEGER NOT NULL,
    record BLOB NOT NULL                 -- swarm_pb2.BalanceWeights, exactly as published
);
CREATE TABLE contributions (
    peer_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    round INTEGER NOT NULL REFERENCES rounds(round),
    num_rollouts INTEGER NOT NULL,       -- copied from the record: the charts sum them per round
    num_tokens INTEGER NOT NULL,
    record BLOB NOT NULL,                -- swarm_pb2.MetaSignal
    PRIMARY KEY (peer_id, step)          -- a (peer, step) is merged at most once, ever
);
CREATE INDEX contributions_by_round ON contributions(round);
CREATE TABLE peers (
    peer_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_step INTEGER,                   -- latest merged step, NULL before the first merge
    num_contributions INTEGER NOT NULL DEFAULT 0,  -- kept by commit_round, so reading peers counts nothing
    status_at REAL,                      -- reported_at of `status`
    status BLOB                          -- latest swarm_pb2.PeerStatus, NULL if none
);
CREATE TABLE statuses (
    peer_id TEXT NOT NULL,
    reported_at REAL NOT NULL,
    round INTEGER NOT NULL,              -- the round in progress when it arrived (latest committed + 1)
    record BLOB NOT NULL,                -- swarm_pb2.PeerStatus
    PRIMARY KEY (peer_id, reported_at)   -- a report is kept once however often the DHT serves it
);
CREATE INDEX statuses_by_round ON statuses(round);
CREATE INDEX statuses_by_time ON statuses(reported_at);
"""
_ALERTS_TABLE = """
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
"""
_META_TABLE = "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
_MAX_CLOSED_ALERTS = 5000  # older resolved alerts are deleted as new ones close
_CHART_INDICATORS = ("er", "erv", "era", "score")
_ALERT_COLUMNS = ("key", "kind", "severity", "peer_id", "message", "started_at", "started_round", "ended_at",
                  "ended_round")


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--")[0] for line in sql.splitlines())


def _statements(sql: str) -> list[str]:
    return [statement for statement in _strip_comments(sql).split(";") if statement.strip()]


class StoreError(RuntimeError):
    """The history database cannot be used; the message names the file and what to do."""


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
        stored_run = conn.execute("SELECT value FROM meta WHERE name='run'").fetchone()
        if stored_run is None or stored_run[0] != self.run:
            raise StoreError(f"{self.path} holds the history of run {stored_run and stored_run[0]!r}, "
                             f"not {self.run!r}; use another db_path for this run")
        if version in (1, 2):
            self._upgrade(conn, version)

    def _create(self, conn: sqlite3.Connection) -> None:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise StoreError(f"{self.path} is an SQLite file of something else (it has tables but no "
                             f"rankswarm schema version); use another db_path")
        conn.execute("BEGIN IMMEDIATE")  # statement by statement: executescript would commit half-way
        for statement in _statements(_META_TABLE + _RECORD_TABLES + _ALERTS_TABLE):
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('run', ?)", (self.run,))
        conn.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
        conn.execute("COMMIT")

    def _upgrade(self, conn: sqlite3.Connection, version: int) -> None:
        """Schema 1 or 2 -> 3 in one transaction: every record re-read from its JSON and rewritten as protobuf."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = legacy_records.read_history(conn, version)
            for table in ("statuses", "contributions", "rounds", "peers"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _statements(_RECORD_TABLES + (_ALERTS_TABLE if version == 1 else "")):
                conn.execute(statement)
            for record, contributions in rows.rounds:
                self._insert_round(conn, record, contributions)
            conn.executemany("INSERT INTO peers VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (peer_id, first, last, step, count, None if status is None else status.reported_at,
                 None if status is None else records.encode(status))
                for peer_id, first, last, step, count, status in rows.peers])
            conn.executemany("INSERT INTO statuses VALUES (?, ?, ?, ?)",
                             [(s.peer_id, s.reported_at, round_, records.encode(s)) for round_, s in rows.statuses])
            conn.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
        except legacy_records.LegacyRecordError as err:
            conn.execute("ROLLBACK")
            raise StoreError(f"{self.path} is a history of schema {version} (rankswarm before protobuf records) "
                             f"and cannot be upgraded: {err}. The file is unchanged: run the coordinator of the "
                             f"rankswarm version that wrote it, or move the file away to start a fresh history "
                             f"(the run's baselines restart)") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------ rounds

    def commit_round(self, record: swarm_pb2.BalanceWeights, contributions: Sequence[swarm_pb2.MetaSignal],
                     seen_at: float) -> None:
        """Write a round, its contributions and the peers it saw in one transaction (all or nothing)."""
        with self._lock, self._transaction():
            self._insert_round(self._conn, record, contributions)
            for c in contributions:
                self._touch_peer(c.peer_id, seen_at, step=c.step)

    @staticmethod
    def _insert_round(conn: sqlite3.Connection, record: swarm_pb2.BalanceWeights,
                      contributions: Sequence[swarm_pb2.MetaSignal]) -> None:
        conn.execute("INSERT INTO rounds VALUES (?, ?, ?, ?, ?)", (record.round, record.issued_at, record.num_peers,
                                                                    record.num_contributions, records.encode(record)))
        conn.executemany("INSERT INTO contributions VALUES (?, ?, ?, ?, ?, ?)",
                         [(c.peer_id, c.step, record.round, c.num_rollouts, c.num_tokens, records.encode(c))
                          for c in contributions])

    def latest_round(self) -> swarm_pb2.BalanceWeights | None:
        with self._lock:
            row = self._conn.execute("SELECT round, record FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        return None if row is None else self._decode(swarm_pb2.BalanceWeights, row[1], f"round {row[0]}")

    def rounds(self, first: int = 0, last: int = 0, limit: int = 1000) -> list[swarm_pb2.BalanceWeights]:
        """Rounds in [first, last] (0 = open end), oldest first; the newest `limit` if there are more."""
        last = last or 2**62
        with self._lock:
            rows = self._conn.execute("SELECT round, record FROM rounds WHERE round BETWEEN ? AND ? "
                                      "ORDER BY round DESC LIMIT ?", (first, last, limit)).fetchall()
        return [self._decode(swarm_pb2.BalanceWeights, data, f"round {r}") for r, data in reversed(rows)]

    def contributions(self, round_: int) -> list[swarm_pb2.MetaSignal]:
        with self._lock:
            rows = self._conn.execute("SELECT peer_id, step, record FROM contributions WHERE round=? "
                                      "ORDER BY peer_id, step", (round_,)).fetchall()
        return [self._decode(swarm_pb2.MetaSignal, data, f"meta-signal {peer}#{step}") for peer, step, data in rows]

    def merged_keys(self, keys: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of these (peer, step) pairs some committed round already merged."""
        keys = list(keys)
        with self._lock:
            return {key for key in keys if self._conn.execute(
                "SELECT 1 FROM contributions WHERE peer_id=? AND step=?", key).fetchone()}

    # ------------------------------------------------------------ peers

    def touch_peer(self, peer_id: str, seen_at: float, status: swarm_pb2.PeerStatus | None = None) -> bool:
        """Note that a peer was seen (with its status, if given); True if it is new to the history."""
        with self._lock, self._transaction():
            return self._touch_peer(peer_id, seen_at, status=status)

    def save_statuses(self, statuses: Sequence[swarm_pb2.PeerStatus], now: float, round_: int) -> None:
        """Keep status reports (in one transaction): each becomes its peer's latest status unless a
        newer one is stored, joins the status history under `round_` (the round in progress: the
        first round committed after the report), and marks its peer seen at min(now, reported_at)."""
        with self._lock, self._transaction():
            for status in statuses:
                self._conn.execute("INSERT OR IGNORE INTO statuses VALUES (?, ?, ?, ?)",
                                   (status.peer_id, status.reported_at, round_, records.encode(status)))
                self._touch_peer(status.peer_id, min(now, status.reported_at), status=status)

    def peers(self) -> list[swarm_pb2.PeerState]:
        """Every peer the history knows (not classified, `active` unset: the ledger and monitor know that)."""
        with self._lock:
            rows = self._conn.execute("SELECT peer_id, first_seen, last_seen, last_step, num_contributions, status "
                                      "FROM peers ORDER BY peer_id").fetchall()
        return [swarm_pb2.PeerState(peer_id=peer_id, first_seen=first, last_seen=last, last_step=step,
                                    num_contributions=count, status=None if status is None else
                                    self._decode(swarm_pb2.PeerStatus, status, f"status of peer {peer_id}"))
                for peer_id, first, last, step, count, status in rows]

    # ------------------------------------------------------------ status history and round aggregates

    def statuses(self, first_round: int = 0, last_round: int = 0, peer_ids: Sequence[str] | None = None, *,
                 since: float | None = None) -> list[tuple[int, swarm_pb2.PeerStatus]]:
        """(round, report) for reports whose round (see save_statuses) is in [first_round, last_round] (0 = open end),
        oldest first; only those of `peer_ids` and those reported at or after `since`, if given."""
        rows = self._status_rows(first_round, last_round, peer_ids, since)
        return [(round_, self._decode(swarm_pb2.PeerStatus, data, f"status of peer {peer_id} at {at}"))
                for round_, peer_id, at, data in rows]

    def _status_rows(self, first_round: int, last_round: int, peer_ids: Sequence[str] | None,
                     since: float | None) -> list[tuple]:
        query = "SELECT round, peer_id, reported_at, record FROM statuses WHERE round BETWEEN ? AND ?"
        params: list = [first_round, last_round or 2**62]
        if since is not None:
            query += " AND reported_at >= ?"
            params.append(since)
        if peer_ids is not None:
            query += f" AND peer_id IN ({','.join('?' * len(peer_ids))})"
            params += list(peer_ids)
        with self._lock:
            return self._conn.execute(query + " ORDER BY reported_at, peer_id", params).fetchall()

    def status_samples(self, fields: Sequence[str], last_round: int = 0, *,
                       since: float | None = None) -> list[dict]:
        """Just `fields` of the stored reports (plus round, peer_id, reported_at) as dicts, oldest first,
        None where a report leaves a field unset: what the charts need. The records are parsed but not
        validated again (they were on the way in, and the charts read thousands of them)."""
        unknown = set(fields) - set(swarm_pb2.PeerStatus.DESCRIPTOR.fields_by_name)
        if unknown:
            raise ValueError(f"PeerStatus has no field(s) {sorted(unknown)}")
        samples = []
        for round_, peer_id, at, data in self._status_rows(0, last_round, None, since):
            status = self._parse(swarm_pb2.PeerStatus, data, f"status of peer {peer_id} at {at}")
            samples.append({"round": round_, "peer_id": peer_id, "reported_at": at,
                            **{name: records.get(status, name) for name in fields}})
        return samples

    def prune_statuses(self, older_than: float) -> int:
        """Delete status reports made before `older_than` (DHT time); returns how many."""
        with self._lock, self._transaction():
            return self._conn.execute("DELETE FROM statuses WHERE reported_at < ?", (older_than,)).rowcount

    def round_totals(self, first: int, last: int) -> dict[int, tuple[int, int]]:
        """round -> (rollouts, response tokens) merged in it, for rounds in [first, last]."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT round, sum(num_rollouts), sum(num_tokens) FROM contributions WHERE round BETWEEN ? AND ? "
                "GROUP BY round", (first, last or 2**62)).fetchall()
        return {round_: (int(rollouts or 0), int(tokens or 0)) for round_, rollouts, tokens in rows}

    def peer_round_moments(self, first: int, last: int,
                           peer_ids: Sequence[str]) -> dict[str, dict[int, dict[str, tuple[int, float]]]]:
        """peer -> round -> indicator -> (count, sum) over its meta-signals merged in that round;
        indicators are er, erv, era, score, plus rollouts and tokens as (count of records, total)."""
        if not peer_ids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                f"SELECT peer_id, step, round, record FROM contributions WHERE round BETWEEN ? AND ? "
                f"AND peer_id IN ({','.join('?' * len(peer_ids))}) ORDER BY round",
                (first, last or 2**62, *peer_ids)).fetchall()
        result: dict[str, dict[int, dict[str, tuple[int, float]]]] = defaultdict(dict)
        for peer_id, step, round_, data in rows:
            signal = self._parse(swarm_pb2.MetaSignal, data, f"meta-signal {peer_id}#{step}")
            entry = result[peer_id].setdefault(round_, {"rollouts": (0, 0.0), "tokens": (0, 0.0)})
            for name, value in (("rollouts", signal.num_rollouts), ("tokens", signal.num_tokens)):
                entry[name] = (entry[name][0] + 1, entry[name][1] + value)
            for name in _CHART_INDICATORS:
                moments, (count, total) = getattr(signal.stats, name), entry.get(name, (0, 0.0))
                entry[name] = (count + moments.count, total + moments.sum)
        return dict(result)

    # ------------------------------------------------------------ alerts

    def open_alert(self, alert: swarm_pb2.Alert) -> None:
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

    def alerts(self, *, active: bool, limit: int = 100, kind: str | None = None) -> list[swarm_pb2.Alert]:
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
        return [swarm_pb2.Alert(**dict(zip(_ALERT_COLUMNS, row))) for row in rows]

    def alert_spans(self, kind: str, first_round: int, last_round: int) -> list[tuple[str, int, int]]:
        """(peer, first round, last round) of every `kind` alert overlapping the rounds (last 0 = active)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT peer_id, started_round, coalesce(ended_round, 0) FROM alerts WHERE kind=? AND "
                "started_round <= ? AND (ended_round IS NULL OR ended_round >= ?) ORDER BY started_round",
                (kind, last_round or 2**62, first_round)).fetchall()
        return [(peer, start, end) for peer, start, end in rows]

    def _touch_peer(self, peer_id: str, seen_at: float, step: int | None = None,
                    status: swarm_pb2.PeerStatus | None = None) -> bool:
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
            self._conn.execute("UPDATE peers SET status=?, status_at=? WHERE peer_id=? AND "
                               "(status_at IS NULL OR status_at <= ?)",
                               (records.encode(status), status.reported_at, peer_id, status.reported_at))
        return new

    # ------------------------------------------------------------ helpers

    # ------------------------------------------------------------ admission

    def admission(self) -> swarm_pb2.Admission | None:
        """Who may take part, as the operator last decided (None before any decision)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name='admission'").fetchone()
        return None if row is None else self._decode(swarm_pb2.Admission, bytes.fromhex(row[0]), "admission list")

    def save_admission(self, record: swarm_pb2.Admission) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO meta VALUES ('admission', ?) ON CONFLICT(name) DO UPDATE SET "
                               "value=excluded.value", (records.encode(record).hex(),))

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

    def _decode(self, message_type, data: bytes, what: str):
        """A stored record, validated again: it restarts the coordinator or goes out to clients."""
        try:
            return records.decode(message_type, data)
        except records.RecordError as err:
            raise StoreError(f"{self.path}: the stored {what} no longer validates ({err}); the file is corrupt "
                             f"or from an incompatible version: move it away to start a fresh history") from None

    def _parse(self, message_type, data: bytes, what: str):
        """A stored record, parsed only (for aggregates over many records that were validated on the way in)."""
        try:
            return message_type.FromString(data)
        except Exception as err:  # DecodeError, or a value that is not bytes
            raise StoreError(f"{self.path}: the stored {what} is not a {message_type.__name__} ({err}); the "
                             f"file is corrupt: move it away to start a fresh history") from None

