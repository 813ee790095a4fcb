"""`AllOrNothingOptimizer`: `hivemind.Optimizer` for peers whose weights must stay equal.

hivemind.Optimizer keeps peers in step in the common case; these are the cases where, left
alone, it lets one peer's weights leave the swarm's, each seen in real runs here:
- a round whose all-reduce failed, or found nobody, is applied with the peer's own gradients;
- a round whose all-reduce lost a reducer is applied with the peer's own values for that
  reducer's parts ("received X% results"), and reported as a success;
- a download made while the swarm moves on is labelled with the next epoch, though its
  weights are the previous one's (hivemind's catch-up rule);
- a donor serves its state between raising its epoch and finishing its optimizer step, so the
  download carries the new epoch's label and the old epoch's weights;
- a peer one epoch behind joins the swarm's next round and applies its update to older weights,
  either because its tracker lets it or because matchmaking groups peers whatever their epochs.
Here a round of the first two kinds applies nothing, a download keeps the epoch of the weights
it brought, a peer serves its state only between updates, a peer behind downloads before it
trains on, and only peers at the same epoch are grouped. What is left is the weights
claims check's (node.gossip.consensus).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import hivemind
from hivemind.optim import optimizer as hivemind_optimizer
from hivemind.optim.state_averager import TrainingStateAverager

from node.gossip.traffic import PARTIAL_ALLREDUCES

log = logging.getLogger(__name__)


class ConsistentStateAverager(TrainingStateAverager):
    """A `TrainingStateAverager` that serves its state (to late joiners and peers that fell behind)
    only while no update is half done: `update_lock` is held by whoever changes the epoch or the
    weights, and by `get_current_state`."""

    def __init__(self, *args, **kwargs):
        self.update_lock = threading.RLock()  # before the base class starts serving
        super().__init__(*args, **kwargs)

    def get_current_state(self):
        with self.update_lock:
            return super().get_current_state()


EPOCH_GROUP_BITS = 16


def epoch_group_bits(epoch: int) -> str:
    """The group-key bits of an averaging round at `epoch` (peers 2**16 epochs apart never meet)."""
    return format(epoch % 2**EPOCH_GROUP_BITS, f"0{EPOCH_GROUP_BITS}b")


class AllOrNothingOptimizer(hivemind.Optimizer):
    """`hivemind.Optimizer`, except that a round that fails to average applies nothing.

    hivemind falls back to a peer's own gradients when its all-reduce fails or its tracker sees
    nobody to average with, and it reports success when a reducer failed and some parts of the
    average are this peer's own values; either way the peer's weights would leave the swarm's.
    Here such a round is dropped while other peers are alive: no optimizer step, no new epoch,
    its gradients discarded.
    If the others did average, this peer is now an epoch behind and hivemind downloads their state
    at its next step; if nobody did, everyone retries with fresh gradients. A peer with no other
    live progress record in the DHT is alone and still steps alone. Updates and downloads hold the
    state averager's `update_lock`, so the state this peer serves is always one epoch's.
    """

    def __init__(self, *args, others_alive: Callable[[], bool], **kwargs):
        self._others_alive = others_alive
        self._drop_round = False
        self.rounds_dropped = 0
        self.rounds_partial = 0  # of those, rounds whose all-reduce came back with parts missing
        super().__init__(*args, **kwargs)

    def _make_state_averager(self, **kwargs) -> ConsistentStateAverager:
        # hivemind builds the averager by its module-level name, with its own settings: have it build
        # ours (peers are built one at a time, so the swap cannot leak into another construction)
        original = hivemind_optimizer.TrainingStateAverager
        hivemind_optimizer.TrainingStateAverager = ConsistentStateAverager
        try:
            return super()._make_state_averager(**kwargs)
        finally:
            hivemind_optimizer.TrainingStateAverager = original

    def _make_gradient_averager(self, factory, **kwargs):
        averager = super()._make_gradient_averager(factory, **kwargs)
        # matchmaking starts in one of these two (a pre-scheduled round is later triggered through step)
        for name in ("schedule_step", "step"):
            setattr(averager, name, self._matching_this_epoch_only(getattr(averager, name)))
        return averager

    def _matching_this_epoch_only(self, start_round: Callable) -> Callable:
        """hivemind matches any peers looking for a group under the same key, whatever their epochs: a
        peer still finishing epoch E can average with peers in round E+1 and apply their update to its
        older weights. Keyed by epoch, a round only ever groups peers that hold the same weights."""
        def start_round_at_this_epoch(*args, **kwargs):
            if kwargs.get("control") is None:  # a new group is looked for, not a pre-scheduled one triggered
                self.grad_averager.set_group_bits(epoch_group_bits(self.local_epoch))
            return start_round(*args, **kwargs)

        return start_round_at_this_epoch

    def _leave_unless_grouped(self, control) -> None:
        """Cancel a triggered round that has not begun its all-reduce within two matchmaking times.

        Rounds are keyed by epoch, and a peer that has not yet seen the swarm move on looks for a
        group at an epoch nobody else is at: hivemind would wait averaging_timeout for it (60 s in
        a demo, while the others trained on). Cancelled, the round counts as failed: the peer
        applies nothing and downloads the swarm's state at its next step."""
        give_up = time.monotonic() + 2 * self.matchmaking_time
        while not control.done() and not control.began_allreduce:
            if time.monotonic() > give_up:
                control.cancel()
                return
            time.sleep(0.05)

    def _average_gradients_and_load_into_optimizer(self, maybe_step_control) -> None:
        if maybe_step_control is not None:
            self._leave_unless_grouped(maybe_step_control)
        super()._average_gradients_and_load_into_optimizer(maybe_step_control)

    def _tag_along_with_zero_weight(self, control) -> None:
        # hivemind joins a round it has no gradients for with zero weight, so that its group need not
        # re-form; the round is often at an epoch the others have left (this peer is about to download)
        if not control.triggered:
            control.weight = 0
            control.allow_allreduce()
        self._leave_unless_grouped(control)
        super()._tag_along_with_zero_weight(control)

    def _should_load_state_from_peers(self) -> bool:
        # hivemind lets a peer one epoch behind go on and join the swarm's next round: it then applies
        # the swarm's averaged update to its older weights, and they leave the swarm's for good (seen
        # after a download raced the others' next round). Here a peer behind downloads first.
        return super()._should_load_state_from_peers() or self.local_epoch < self.tracker.global_epoch

    def _load_local_gradients_into_optimizer(self):
        # hivemind's fallback after a failed round (or a pre-scheduled round with nobody in it)
        if self._others_alive():
            self._drop_round = True
        super()._load_local_gradients_into_optimizer()

    def _begin_averaging_gradients(self, grad_scaler) -> bool:
        began = super()._begin_averaging_gradients(grad_scaler)
        if not began and self._others_alive():
            self._drop_round = True  # hivemind would step with this peer's gradients alone
        return began

    def _update_global_epoch(self, grad_scaler) -> None:
        self._drop_round = False
        # the round's all-reduce is triggered below. The count is per process (one peer per process in
        # `rankswarm node`; peers sharing a process, as in tests, also drop each other's partial rounds,
        # which costs a download, never a split), and a delayed state average that ends partial in this
        # window drops the round as well: its parameters are off too.
        partials_before = PARTIAL_ALLREDUCES.count()
        partial = False
        averager = self.state_averager
        step = averager.step

        def step_unless_dropped(*args, **kwargs):
            nonlocal partial
            # hivemind ends a round with one state_averager.step(increment_epoch=True, optimizer_step=...)
            if (kwargs.get("increment_epoch") and not self._drop_round
                    and PARTIAL_ALLREDUCES.count() > partials_before and self._others_alive()):
                self._drop_round = partial = True
                self.rounds_partial += 1
            if not (self._drop_round and kwargs.get("increment_epoch")):
                with averager.update_lock:  # raises the epoch, then waits for the optimizer step
                    return step(*args, **kwargs)
            control = kwargs.get("averaging_control")
            if control is not None and not control.done():
                control.cancel()
            return None

        averager.step = step_unless_dropped
        try:
            super()._update_global_epoch(grad_scaler)
        finally:
            del averager.step  # back to the class's method
        if self._drop_round:
            self.rounds_dropped += 1
            log.info("averaging round at epoch %d %s: applied nothing", self.local_epoch,
                     "came back with parts missing" if partial else "failed")

    def load_state_from_peers(self, **kwargs):
        """hivemind's download, except that the state keeps the epoch it was downloaded at.

        When the swarm has just moved to epoch E, hivemind labels a download of epoch E-1 as E
        ("catching up"), yet the weights are the donor's E-1 ones; the peer then claims weights
        for an epoch they do not belong to and its next update diverges from the swarm's. Kept
        at E-1, the peer is plainly behind and downloads again at its next step
        (`_should_load_state_from_peers`)."""
        averager = self.state_averager
        load = averager.load_state_from_peers
        loaded_epochs = []

        def load_and_note_epoch(*args, **kw):
            result = load(*args, **kw)
            loaded_epochs.append(averager.local_epoch)
            return result

        averager.load_state_from_peers = load_and_note_epoch
        try:
            # weights, then epoch, then hivemind's relabel, then ours: nobody may copy what lies between
            with averager.update_lock:
                super().load_state_from_peers(**kwargs)
                if not loaded_epochs or self.local_epoch == loaded_epochs[-1]:
                    return
                true_epoch = loaded_epochs[-1]
                averager.local_epoch = true_epoch
        finally:
            del averager.load_state_from_peers  # back to the class's method
        log.info("downloaded the state of epoch %d (the swarm is at %d)", true_epoch, self.tracker.global_epoch)
        self.tracker.report_local_progress(local_epoch=true_epoch, samples_accumulated=0)
        if not self.client_mode:
            averager.state_sharing_priority = true_epoch
            if self.use_gradient_averaging:
                self.grad_averager.state_sharing_priority = true_epoch
