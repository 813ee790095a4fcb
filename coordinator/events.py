"""The coordinator's swarm event log: what WatchSwarmEvents streams to dashboards and the CLI.

Events get a sequence number that increases strictly within one coordinator process; the
log keeps the last `capacity` of them in memory (history that must survive a restart lives
in the store). Watchers block in `wait_after(seq, timeout)` with a timeout, so a streaming
call notices a cancelled client or a stopping coordinator within that timeout.
"""

from __future__ import annotations

import threading
from collections import deque

from protos import records, swarm_pb2

# What happened: swarm_pb2.SwarmEventKind (ROUND_COMPLETED, ROUND_SKIPPED, PEER_JOINED, PEER_LEFT,
# RECORD_REJECTED); `EventKind.ROUND_COMPLETED` reads as in the proto.
EventKind = swarm_pb2.SwarmEventKind
SwarmEvent = swarm_pb2.SwarmEvent  # one event; `weights` is set for ROUND_COMPLETED
MAX_DETAIL = 1024  # characters of an event's detail


class EventLog:
    """A bounded, thread-safe, append-only event log with blocking readers."""

    def __init__(self, capacity: int = 1000):
        if capacity < 1:
            raise ValueError(f"event log capacity must be >= 1, got {capacity}")
        self._events: deque[SwarmEvent] = deque(maxlen=capacity)
        self._cond = threading.Condition()
        self._next_seq = 1
        self._closed = False

    def emit(self, kind: int, at: float, **fields) -> SwarmEvent:
        """Append an event (fields of swarm_pb2.SwarmEvent: round, peer_id, detail, weights)."""
        if "detail" in fields:  # reasons quote what peers sent: keep them within the string rule
            fields["detail"] = fields["detail"][:MAX_DETAIL]
        with self._cond:
            event = records.build(SwarmEvent, seq=self._next_seq, kind=kind, at=at, **fields)
            self._next_seq += 1
            self._events.append(event)
            self._cond.notify_all()
        return event

    def after(self, seq: int) -> list[SwarmEvent]:
        """Kept events with a sequence number above `seq`, oldest first."""
        with self._cond:
            return [event for event in self._events if event.seq > seq]

    def wait_after(self, seq: int, timeout: float) -> list[SwarmEvent]:
        """Like `after`, but wait up to `timeout` seconds for one to arrive; [] on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._next_seq - 1 > seq, timeout=timeout)
            return [event for event in self._events if event.seq > seq]

    @property
    def last_seq(self) -> int:
        """Sequence number of the latest event (0 before the first)."""
        with self._cond:
            return self._next_seq - 1

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiter; watchers end their streams when they see `closed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
