"""Counting the bytes a peer's averagers put on (and take off) the wire.

Three kinds of traffic are kept apart: `gradients` (the gradient all-reduce of every swarm step;
pseudo-gradients of every outer step in diloco mode), `state_averaging` (the parameter average
every `average_state_every` steps) and `state_sync` (full model + optimizer state served to, or
downloaded by, a peer that joins late or fell behind). The gradient and state averagers run in
separate processes, so the all-reduce taps count into the kind of the process they run in. DHT
records (progress, weights claims, statuses) are not counted here: hivemind's DHT goes through
the p2p daemon without a hook for byte counts; the WAN bench measures the rest at the link
(tests/integration/wan_links.py) and reports it as the difference. Outgoing tensor
parts are produced by a compression object's `compress` (all-reduce parts, state served to
others) or by `serialize_torch_tensor` (a reducer's replies); incoming ones pass through
`deserialize_torch_tensor` (in hivemind.averaging.allreduce for rounds, in
hivemind.averaging.averager for state downloads only). `CountingCompression` wraps the
compression objects we hand hivemind and `node.gossip.hivemind_internals.wire_taps` wraps
those module functions, so the counts are exactly the protobuf payload bytes (libp2p framing
excluded).

The same taps count all-reduces that ended with parts missing (`partial_allreduces`): when a
reducer fails, hivemind keeps the local values for its parts, logs "received X% results" and
reports success, and the peer's averaged tensors then differ from the others'.

hivemind averagers run in forked child processes, so a peer's counters (`PeerTraffic`, one per
peer, shared by its gradient and state averagers) live in shared memory created before the fork.
"""

from __future__ import annotations

import multiprocessing as mp

from hivemind.compression import CompressionBase, CompressionInfo


class TrafficCounter:
    """Bytes sent and received, shared with forked averager processes."""

    def __init__(self) -> None:
        self._sent = mp.Value("q", 0)
        self._received = mp.Value("q", 0)

    def add(self, sent: int = 0, received: int = 0) -> None:
        if sent:
            with self._sent.get_lock():
                self._sent.value += sent
        if received:
            with self._received.get_lock():
                self._received.value += received

    def snapshot(self) -> tuple[int, int]:
        return self._sent.value, self._received.value


class SecondsCounter:
    """Wall seconds spent inside all-reduce rounds (in the averager processes), shared like the bytes."""

    def __init__(self) -> None:
        self._micros = mp.Value("q", 0)

    def add(self, seconds: float) -> None:
        with self._micros.get_lock():
            self._micros.value += int(seconds * 1e6)

    def total(self) -> float:
        return self._micros.value / 1e6


class EventCounter:
    """How many times something happened (in the averager processes), shared like the bytes."""

    def __init__(self) -> None:
        self._count = mp.Value("q", 0)

    def add(self, count: int = 1) -> None:
        with self._count.get_lock():
            self._count.value += count

    def count(self) -> int:
        return self._count.value


class PeerTraffic:
    """One peer's counters (shared with its forked averager processes): all-reduce bytes of gradients and of
    state averaging, state download and serving bytes, seconds inside all-reduces, partial all-reduces."""

    def __init__(self) -> None:
        self.gradients = TrafficCounter()
        self.state_averaging = TrafficCounter()
        self.state_sync = TrafficCounter()
        self.allreduce_seconds = SecondsCounter()
        self.partial_allreduces = EventCounter()


class CountingCompression(CompressionBase):
    """Delegates to `inner` and counts the bytes of every message it produces."""

    def __init__(self, inner: CompressionBase, counter: TrafficCounter):
        self.inner = inner
        self.counter = counter
        self.compression_type = inner.compression_type

    def compress(self, tensor, info: CompressionInfo, allow_inplace: bool = False):
        message = self.inner.compress(tensor, info, allow_inplace)
        self.counter.add(sent=message.ByteSize())
        return message

    def extract(self, serialized_tensor):
        return self.inner.extract(serialized_tensor)

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        return self.inner.estimate_compression_ratio(info)
