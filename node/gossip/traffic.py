"""Counting the bytes a peer's averagers put on (and take off) the wire.

Outgoing tensor parts are produced by a compression object's `compress` (all-reduce parts,
state averaging, state served to late joiners) or by `serialize_torch_tensor` (a reducer's
replies); incoming ones pass through `deserialize_torch_tensor`. `counting` wraps the
compression objects we hand hivemind, and `install_traffic_counter` wraps the two module
functions in hivemind's averaging modules, so the counts are exactly the protobuf payload
bytes of our averaging traffic (libp2p framing excluded).

hivemind averagers run in forked child processes, so the counters live in shared memory
created before the fork. They are per process: one peer per process, as `rankswarm node` runs.
"""

from __future__ import annotations

import importlib
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


TRAFFIC = TrafficCounter()
_INSTALLED = False


class CountingCompression(CompressionBase):
    """Delegates to `inner` and counts the bytes of every message it produces."""

    def __init__(self, inner: CompressionBase, counter: TrafficCounter = TRAFFIC):
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


def _wrap_module(name: str) -> None:
    module = importlib.import_module(name)
    if hasattr(module, "serialize_torch_tensor"):
        serialize = module.serialize_torch_tensor

        def counted_serialize(*args, _inner=serialize, **kwargs):
            message = _inner(*args, **kwargs)
            TRAFFIC.add(sent=message.ByteSize())
            return message

        module.serialize_torch_tensor = counted_serialize
    deserialize = module.deserialize_torch_tensor

    def counted_deserialize(message, *args, _inner=deserialize, **kwargs):
        TRAFFIC.add(received=message.ByteSize())
        return _inner(message, *args, **kwargs)

    module.deserialize_torch_tensor = counted_deserialize


def install_traffic_counter() -> TrafficCounter:
    """Wrap hivemind's (de)serialisation in its averaging modules, once per process, before any fork."""
    global _INSTALLED
    if not _INSTALLED:
        for name in ("hivemind.averaging.allreduce", "hivemind.averaging.averager"):
            _wrap_module(name)
        _INSTALLED = True
    return TRAFFIC
