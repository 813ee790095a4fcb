"""Taps on hivemind's averaging internals that count what crosses the wire, per averager process.

hivemind runs every averager (gradients, training state) in a forked child process of its own,
and does its (de)serialisation, all-reduce rounds and part bookkeeping there, through module
functions and classes we cannot hand a counter to. So, once per process and before any
averager forks (`install`):
- `serialize_torch_tensor` / `deserialize_torch_tensor` are replaced in
  hivemind.averaging.allreduce (all-reduce parts: gradients, state averaging) and
  hivemind.averaging.averager (state downloads), counting message bytes;
- `_aggregate_with_group` is wrapped to time formed groups' all-reduces (matchmaking excluded);
- `TensorPartContainer.finalize` is wrapped to count all-reduces that end with parts missing:
  when a reducer fails, hivemind keeps the local values for its parts, logs "received X%
  results" and reports success, and the peer's averaged tensors then differ from the others'.

The counters are the averager's own (`node.gossip.traffic.PeerTraffic`, shared memory made
before the fork): an averager built from `averagers.PeerAverager` makes its counters the active
ones in its child process when that process starts (`activate`), so two peers in one process
(tests) never count each other's traffic. In the parent process nothing is active and nothing is
counted.
"""

from __future__ import annotations

import functools
import importlib
import time

from hivemind.averaging.averager import DecentralizedAverager
from hivemind.averaging.partition import TensorPartContainer
from hivemind.optim.power_sgd_averager import PowerSGDGradientAverager

from node.gossip.hivemind_internals.touches import Touch
from node.gossip.traffic import PeerTraffic, TrafficCounter

TOUCHES = (
    Touch("hivemind.averaging.allreduce", "serialize_torch_tensor", "replace", "count the bytes of reducer replies",
          ("tensor",)),
    Touch("hivemind.averaging.allreduce", "deserialize_torch_tensor", "replace",
          "count the bytes of received all-reduce parts", ("serialized_tensor",)),
    Touch("hivemind.averaging.averager", "deserialize_torch_tensor", "replace",
          "count the bytes of downloaded state", ("serialized_tensor",)),
    Touch("hivemind.averaging.averager.DecentralizedAverager", "_aggregate_with_group", "wrap",
          "time formed groups' all-reduces", ("self", "group_info", "min_vector_size")),
    Touch("hivemind.optim.power_sgd_averager.PowerSGDGradientAverager", "_aggregate_with_group", "wrap",
          "PowerSGD overrides it without calling the base one", ("self", "group_info", "min_vector_size")),
    Touch("hivemind.averaging.partition.TensorPartContainer", "finalize", "wrap",
          "count all-reduces that end with parts missing", ("self",)),
    Touch("hivemind.averaging.partition.TensorPartContainer", "failed_size", "read",
          "how much of this peer's average is missing"),
    Touch("hivemind.averaging.partition.TensorPartContainer", "finished", "read", "finalize runs twice"),
)

_active: PeerTraffic | None = None  # the counters of the averager this child process runs
_allreduce_kind = "gradients"  # what this process's all-reduces average: "gradients" or "state_averaging"
_installed = False


def _active_counter(kind: str) -> TrafficCounter | None:
    if _active is None:
        return None
    return getattr(_active, _allreduce_kind if kind == "allreduce" else kind)


def _replace_module_functions(name: str, kind: str) -> None:
    module = importlib.import_module(name)
    if hasattr(module, "serialize_torch_tensor"):
        serialize = module.serialize_torch_tensor

        @functools.wraps(serialize)  # keeps the original's signature visible (the seam's guard test reads it)
        def counted_serialize(*args, _inner=serialize, **kwargs):
            message = _inner(*args, **kwargs)
            if (counter := _active_counter(kind)) is not None:
                counter.add(sent=message.ByteSize())
            return message

        module.serialize_torch_tensor = counted_serialize
    deserialize = module.deserialize_torch_tensor

    @functools.wraps(deserialize)
    def counted_deserialize(message, *args, _inner=deserialize, **kwargs):
        if (counter := _active_counter(kind)) is not None:
            counter.add(received=message.ByteSize())
        return _inner(message, *args, **kwargs)

    module.deserialize_torch_tensor = counted_deserialize


def _time_aggregation(cls) -> None:
    inner = cls.__dict__["_aggregate_with_group"]

    @functools.wraps(inner)
    async def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await inner(self, *args, **kwargs)
        finally:
            if _active is not None:
                _active.allreduce_seconds.add(time.perf_counter() - started)

    cls._aggregate_with_group = timed


def _count_partial_results(cls) -> None:
    inner = cls.__dict__["finalize"]

    @functools.wraps(inner)
    def finalize(self, *args, **kwargs):
        if not self.finished.is_set() and self.failed_size and _active is not None:
            _active.partial_allreduces.add()
        return inner(self, *args, **kwargs)

    cls.finalize = finalize


def activate(traffic: PeerTraffic, allreduce_kind: str = "gradients") -> None:
    """Count into `traffic` in this process (an averager's child process, once, at its start); its
    all-reduce bytes into `traffic.<allreduce_kind>`."""
    global _active, _allreduce_kind
    _active = traffic
    _allreduce_kind = allreduce_kind


def install() -> None:
    """Put the taps in place, once per process; before any averager forks, or its child misses them."""
    global _installed
    if _installed:
        return
    _replace_module_functions("hivemind.averaging.allreduce", "allreduce")
    _replace_module_functions("hivemind.averaging.averager", "state_sync")
    # PowerSGD overrides the method without calling the base one: wrap both, nothing counts twice
    _time_aggregation(DecentralizedAverager)
    _time_aggregation(PowerSGDGradientAverager)
    _count_partial_results(TensorPartContainer)
    _installed = True
