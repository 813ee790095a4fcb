"""Counting the bytes a peer's averagers put on (and take off) the wire.

Two kinds of traffic are kept apart: AVERAGING (the all-reduce rounds: gradients every swarm
step, parameters every `average_state_every` steps) and STATE_SYNC (full model + optimizer
state served to, or downloaded by, a peer that joins late or fell behind). Outgoing tensor
parts are produced by a compression object's `compress` (all-reduce parts, state served to
others) or by `serialize_torch_tensor` (a reducer's replies); incoming ones pass through
`deserialize_torch_tensor` (in hivemind.averaging.allreduce for rounds, in
hivemind.averaging.averager for state downloads only). `CountingCompression` wraps the
compression objects we hand hivemind and `install_traffic_counter` wraps those module
functions, so the counts are exactly the protobuf payload bytes (libp2p framing excluded).

The same wrapping counts all-reduces that ended with parts missing (`PARTIAL_ALLREDUCES`):
when a reducer fails, hivemind keeps the local values for its parts, logs "received X%
results" and reports success, and the peer's averaged tensors then differ from the others'.

hivemind averagers run in forked child processes, so the counters live in shared memory
created before the fork. They are per process: one peer per process, as `rankswarm node` runs.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing as mp
import time

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


AVERAGING = TrafficCounter()
STATE_SYNC = TrafficCounter()
ALLREDUCE_SECONDS = SecondsCounter()
PARTIAL_ALLREDUCES = EventCounter()
_INSTALLED = False


class CountingCompression(CompressionBase):
    """Delegates to `inner` and counts the bytes of every message it produces."""

    def __init__(self, inner: CompressionBase, counter: TrafficCounter = AVERAGING):
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


def _wrap_module(name: str, counter: TrafficCounter) -> None:
    module = importlib.import_module(name)
    if hasattr(module, "serialize_torch_tensor"):
        serialize = module.serialize_torch_tensor

        def counted_serialize(*args, _inner=serialize, **kwargs):
            message = _inner(*args, **kwargs)
            counter.add(sent=message.ByteSize())
            return message

        module.serialize_torch_tensor = counted_serialize
    deserialize = module.deserialize_torch_tensor

    def counted_deserialize(message, *args, _inner=deserialize, **kwargs):
        counter.add(received=message.ByteSize())
        return _inner(message, *args, **kwargs)

    module.deserialize_torch_tensor = counted_deserialize


def _time_aggregation(cls) -> None:
    """Time `cls._aggregate_with_group` (a formed group's all-reduce, matchmaking excluded)."""
    inner = cls.__dict__["_aggregate_with_group"]

    @functools.wraps(inner)
    async def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await inner(self, *args, **kwargs)
        finally:
            ALLREDUCE_SECONDS.add(time.perf_counter() - started)

    cls._aggregate_with_group = timed


def _count_partial_results(cls) -> None:
    """Count `cls.finalize` calls that end an all-reduce with some parts' results missing."""
    inner = cls.__dict__["finalize"]

    @functools.wraps(inner)
    def finalize(self, *args, **kwargs):
        if not self.finished.is_set() and self.failed_size:
            PARTIAL_ALLREDUCES.add()
        return inner(self, *args, **kwargs)

    cls.finalize = finalize


def install_traffic_counter() -> tuple[TrafficCounter, TrafficCounter]:
    """Wrap hivemind's (de)serialisation in its averaging modules, once per process, before any fork.

    Returns the (AVERAGING, STATE_SYNC) counters."""
    global _INSTALLED
    if not _INSTALLED:
        _wrap_module("hivemind.averaging.allreduce", AVERAGING)
        _wrap_module("hivemind.averaging.averager", STATE_SYNC)
        from hivemind.averaging.averager import DecentralizedAverager
        from hivemind.optim.power_sgd_averager import PowerSGDGradientAverager

        # PowerSGD overrides the method without calling the base one: wrap both, nothing counts twice
        _time_aggregation(DecentralizedAverager)
        _time_aggregation(PowerSGDGradientAverager)
        from hivemind.averaging.partition import TensorPartContainer

        _count_partial_results(TensorPartContainer)
        _INSTALLED = True
    return AVERAGING, STATE_SYNC
