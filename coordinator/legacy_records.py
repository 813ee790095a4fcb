"""Read the records of a history file of schema 1 or 2, written before records were protobuf.

Those files kept every record as the JSON of a pydantic model (MetaSignalRecord, BalanceRecord,
PeerStatusRecord) that no longer exists. `HistoryStore` calls `read_history` once, when it opens
such a file, and rewrites what it returns as protobuf in the same transaction (schema 3). The JSON
field names are the proto's except `run` (now `run_id`) and the nested parts converted below, so
the flat fields go to `records.build` as they are and anything unexpected is refused, naming the
row, never guessed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protos import records, swarm_pb2
from shaping import Baselines, IndicatorStats


class LegacyRecordError(ValueError):
    """A record of the old file that cannot be read; the message names its row."""


@dataclass
class LegacyHistory:
    """Everything schema 3 keeps, read from an older file."""

    rounds: list[tuple[swarm_pb2.BalanceWeights, list[swarm_pb2.MetaSignal]]] = field(default_factory=list)
    peers: list[tuple[str, float, float, int | None, int, swarm_pb2.PeerStatus | None]] = field(default_factory=list)
    statuses: list[tuple[int, swarm_pb2.PeerStatus]] = field(default_factory=list)


def meta_signal(data: dict[str, Any]) -> swarm_pb2.MetaSignal:
    stats = IndicatorStats.from_dict(data.pop("stats"))
    return records.build(swarm_pb2.MetaSignal, run_id=data.pop("run"), stats=records.stats_message(stats),
                         mean_gate=stats.gate_mean, **data)


def balance(data: dict[str, Any]) -> swarm_pb2.BalanceWeights:
    shares = swarm_pb2.Balance(**{name: data.pop(name) for name in ("mean_gate", "explore_share", "exploit_share")})
    return records.build(swarm_pb2.BalanceWeights, run_id=data.pop("run"), balance=shares,
                         baselines=records.baselines_message(Baselines.from_dict(data.pop("baselines"))),
                         merged=records.stats_message(IndicatorStats.from_dict(data.pop("merged"))), **data)


def peer_status(data: dict[str, Any]) -> swarm_pb2.PeerStatus:
    deciles = {f"{name}_deciles": swarm_pb2.Deciles(**value) for name, value in data.pop("deciles", {}).items()}
    for name in ("reachability", "baselines_source"):  # "unknown" was the default; the proto leaves it unset
        if data.get(name) == "unknown":
            del data[name]
    reachability = records.value_of(swarm_pb2.Reachability, data.pop("reachability", ""))
    return records.build(swarm_pb2.PeerStatus, run_id=data.pop("run"), reachability=reachability, **deciles, **data)


def _read(parse: Callable[[dict], Any], text: Any, row: str) -> Any:
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object: {text!r:.60}")
        return parse(data)
    except (ValueError, KeyError, TypeError) as err:  # RecordError and JSONDecodeError are ValueErrors
        raise LegacyRecordError(f"{row}: {type(err).__name__}: {err}") from None


def read_history(conn: sqlite3.Connection, version: int) -> LegacyHistory:
    """Every round, contribution, peer and status report of a schema-1 or -2 file, as protobuf records."""
    history = LegacyHistory()
    contributions: dict[int, list[swarm_pb2.MetaSignal]] = {}
    for peer_id, step, round_, text in conn.execute("SELECT peer_id, step, round, record FROM contributions "
                                                    "ORDER BY round, peer_id, step"):
        row = f"meta-signal {peer_id}#{step} of round {round_}"
        contributions.setdefault(round_, []).append(_read(meta_signal, text, row))
    for round_, text in conn.execute("SELECT round, record FROM rounds ORDER BY round"):
        history.rounds.append((_read(balance, text, f"round {round_}"), contributions.pop(round_, [])))
    if contributions:
        raise LegacyRecordError(f"meta-signals of rounds {sorted(contributions)} that the file does not hold")
    counts = dict(conn.execute("SELECT peer_id, count(*) FROM contributions GROUP BY peer_id"))
    for peer_id, first, last, step, text in conn.execute("SELECT peer_id, first_seen, last_seen, last_step, status "
                                                         "FROM peers ORDER BY peer_id"):
        status = None if text is None else _read(peer_status, text, f"status of peer {peer_id}")
        history.peers.append((peer_id, first, last, step, counts.get(peer_id, 0), status))
    if version >= 2:
        for peer_id, at, round_, text in conn.execute("SELECT peer_id, reported_at, round, record FROM statuses "
                                                      "ORDER BY reported_at, peer_id"):
            history.statuses.append((round_, _read(peer_status, text, f"status of peer {peer_id} at {at}")))
    return history
