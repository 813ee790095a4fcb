"""Robust aggregation inside hivemind's all-reduce, and a guard on what remote reducers send back.

hivemind's `TensorPartReducer` adds each sender's part with the weight the sender claims and
divides; `RobustTensorPartReducer` keeps the parts of the current part index instead and, once
every remaining sender has sent, returns `node.gossip.robust.robust_average` of them: non-finite
parts (or weights) get their sender banned for the rest of the round, weights are capped,
outliers clipped. It stands in for hivemind's class in `hivemind.averaging.allreduce` (where
`AllReduceRunner` builds its reducer), so it serves both plain and PowerSGD averaging.

On the receiving side, `TensorPartContainer.register_processed_part` is wrapped so that a
non-finite result from a remote reducer counts as a failed reducer: the peer keeps its own values
for those parts, the round comes back partial and applies nothing (AllOrNothingOptimizer), and no
NaN reaches the weights, the optimizer state or PowerSGD's error-feedback buffers.

Both kinds of data convict whoever sent them (libp2p authenticates every stream, and an honest
peer zeroes a non-finite gradient before any round), so the peer is also reported (`use_policy`'s
`on_caught`): its averagers then refuse that peer for `robust.caught_ban_s`. Without that, a NaN
sender stays in every group, and every round it is in comes back partial: its own part of the
result is what it reduces.

The policy each averager's child process aggregates with is set when that process starts
(`averagers.PeerAverager.run` calls `use_policy`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable

import torch
from hivemind.averaging.partition import AllreduceException, BannedException, TensorPartReducer

from node.gossip.config import RobustConfig
from node.gossip.hivemind_internals.touches import Touch
from node.gossip.robust import robust_average, sanitize

log = logging.getLogger(__name__)

_REDUCER = "hivemind.averaging.partition.TensorPartReducer"
TOUCHES = (
    Touch("hivemind.averaging.allreduce", "TensorPartReducer", "replace",
          "AllReduceRunner builds its reducer by this module-level name: ours aggregates robustly"),
    Touch(_REDUCER, "accumulate_part", "override", "keep each sender's part instead of summing it",
          ("self", "sender_index", "part_index", "tensor_part", "weight")),
    Touch(_REDUCER, "check_current_part_finished", "override", "aggregate robustly once every sender has sent",
          ("self",)),
    Touch(_REDUCER, "reset_accumulators", "override", "a new part index starts with no parts kept", ("self",)),
    Touch(_REDUCER, "on_sender_failed", "read", "ban a sender whose part is not finite", ("self", "sender_index")),
    Touch(_REDUCER, "current_part_index", "read", "which part the reducer is on"),
    Touch(_REDUCER, "current_part_accumulated_from", "write", "how many senders' parts are in"),
    Touch(_REDUCER, "num_current_senders", "read", "how many senders' parts are expected"),
    Touch(_REDUCER, "current_part_future", "read", "where the aggregate goes"),
    Touch(_REDUCER, "sender_failed_after", "read", "a banned sender's parts are not waited for"),
    Touch(_REDUCER, "num_parts_received", "write", "hivemind counts received parts here"),
    Touch(_REDUCER, "part_shapes", "read", "the shape each part must have"),
    Touch("hivemind.averaging.partition.TensorPartContainer", "register_processed_part", "wrap",
          "a non-finite result from a remote reducer counts as a failed reducer",
          ("self", "peer_index", "part_index", "part")),
    Touch("hivemind.averaging.partition.TensorPartContainer", "register_failed_reducer", "read",
          "fall back to this peer's own values for that reducer's parts", ("self", "peer_index")),
    Touch("hivemind.averaging.allreduce.AllReduceRunner", "__init__", "wrap",
          "tell the reducer and the container whose parts they hold, to report a peer caught lying",
          ("self",)),
    Touch("hivemind.averaging.allreduce.AllReduceRunner", "sender_peer_ids", "read",
          "the reducer's sender indices, in order"),
    Touch("hivemind.averaging.allreduce.AllReduceRunner", "ordered_peer_ids", "read",
          "the container's reducer indices, in order"),
    Touch("hivemind.averaging.allreduce.AllReduceRunner", "tensor_part_reducer", "read", "its reducer"),
    Touch("hivemind.averaging.allreduce.AllReduceRunner", "tensor_part_container", "read", "its container"),
)

_policy = RobustConfig()  # the policy of the averager this child process runs
_on_caught: Callable[[bytes, str], None] | None = None  # told of a peer caught sending what no honest peer sends
# an all-reduce's reducer and container -> the libp2p ids their indices stand for (set as the all-reduce is built)
_peer_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def use_policy(policy: RobustConfig, on_caught: Callable[[bytes, str], None] | None = None) -> None:
    """Set the aggregation policy of this process (an averager's child process, once, at its start), and
    whom to tell of a peer caught sending non-finite data (its libp2p id, and what it sent)."""
    global _policy, _on_caught
    _policy, _on_caught = policy, on_caught


def _report_caught(peer_ids, index: int, what: str) -> None:
    if _on_caught is None or peer_ids is None or not 0 <= index < len(peer_ids):
        return
    peer = peer_ids[index]
    log.warning("all-reduce: %s %s: refusing it for %.0f s", peer, what, _policy.caught_ban_s)
    _on_caught(peer.to_bytes(), what)


class RobustTensorPartReducer(TensorPartReducer):
    """hivemind's reducer with `robust_average` in place of the weighted mean (see the module docstring)."""

    def reset_accumulators(self):
        self.kept_parts: dict[int, tuple[torch.Tensor, float]] = {}  # sender index -> (part, weight)
        super().reset_accumulators()

    async def accumulate_part(self, sender_index: int, part_index: int, tensor_part: torch.Tensor,
                              weight: float = 1.0) -> torch.Tensor:
        if not _policy.enabled:
            return await super().accumulate_part(sender_index, part_index, tensor_part, weight)
        if not 0 <= sender_index < self.num_senders or not 0 <= part_index < self.num_parts:
            raise AllreduceException(f"sender {sender_index} sent part {part_index} of {self.num_parts}")
        self.num_parts_received[sender_index] += 1
        while part_index > self.current_part_index:
            await _first_of(self.current_part_future, self.finished)
            if self.finished.is_set():
                raise AllreduceException(f"attempted to aggregate part in a finalized {type(self).__name__}")
        if self.sender_failed_after[sender_index] != float("inf"):
            raise BannedException(f"sender {sender_index} was banned in background")
        if part_index != self.current_part_index:  # a sender that repeats a part it already sent
            raise AllreduceException(f"sender {sender_index} sent part {part_index} again")
        future = self.current_part_future
        # weight 0 is honest: hivemind tags a peer with no gradients of its own along that way, so that its
        # group need not re-form. Its part must still be a finite one of the right shape; it adds nothing.
        tagging_along = weight == 0
        kept, _, _ = sanitize([tensor_part], [1.0 if tagging_along else weight], self.part_shapes[part_index])
        if not kept:
            log.warning("reducer: sender %d sent a non-finite or misshapen part %d (or weight %r): banned for "
                        "the round", sender_index, part_index, weight)
            self.num_parts_received[sender_index] -= 1  # not received: the part is not waited for
            self.on_sender_failed(sender_index)
            _report_caught(_peer_ids.get(self), sender_index, "sent a non-finite or misshapen part")
            raise BannedException(f"sender {sender_index} sent an invalid part")
        if not tagging_along:
            self.kept_parts[sender_index] = (tensor_part, weight)
        self.current_part_accumulated_from += 1
        self.check_current_part_finished()
        return await future

    def check_current_part_finished(self):
        if not _policy.enabled:
            return super().check_current_part_finished()
        if self.current_part_accumulated_from < self.num_current_senders:
            return
        senders = [index for index in self.kept_parts if self.sender_failed_after[index] > self.current_part_index]
        result = robust_average([self.kept_parts[i][0] for i in senders], [self.kept_parts[i][1] for i in senders],
                                self.part_shapes[self.current_part_index], _policy)
        self.current_part_future.set_result(result.average)
        self.reset_accumulators()


async def _first_of(future, event) -> None:
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({future, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _refuse_non_finite_results(cls) -> None:
    inner = cls.__dict__["register_processed_part"]

    @functools.wraps(inner)
    def register_processed_part(self, peer_index: int, part_index: int, part: torch.Tensor):
        if _policy.enabled and not bool(torch.isfinite(part).all()):
            log.warning("all-reduce: reducer %d returned a non-finite part %d: using this peer's own values",
                        peer_index, part_index)
            self.register_failed_reducer(peer_index)
            _report_caught(_peer_ids.get(self), peer_index, "returned a non-finite result")
            raise AllreduceException(f"reducer {peer_index} returned a non-finite part")
        return inner(self, peer_index, part_index, part)

    cls.register_processed_part = register_processed_part


def install() -> None:
    """Swap in the robust reducer and the result guard (wire_taps.install calls this, before any fork)."""
    import hivemind.averaging.allreduce as allreduce
    from hivemind.averaging.partition import TensorPartContainer

    allreduce.TensorPartReducer = RobustTensorPartReducer
    _refuse_non_finite_results(TensorPartContainer)
    _name_the_peers(allreduce.AllReduceRunner)


def _name_the_peers(cls) -> None:
    inner = cls.__dict__["__init__"]

    @functools.wraps(inner)
    def __init__(self, *args, **kwargs):
        inner(self, *args, **kwargs)
        _peer_ids[self.tensor_part_reducer] = tuple(self.sender_peer_ids)  # by sender index
        _peer_ids[self.tensor_part_container] = tuple(self.ordered_peer_ids)  # by reducer index

    cls.__init__ = __init__
