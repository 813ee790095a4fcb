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
claims check's (node.gossip.consensus). Kept strict, a download made while the others' round is
under way brings the state that round replaces; so the peer waits that round out and downloads
its result (where rounds come at every step, it would never catch up otherwise).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from dataclasses import dataclass
from functools import partial

import hivemind
import torch
from hivemind.optim import optimizer as hivemind_optimizer
from hivemind.optim.progress_tracker import GlobalTrainingProgress, LocalTrainingProgress, ProgressTracker
from hivemind.optim.state_averager import TrainingStateAverager
from hivemind.utils import get_dht_time

from node.gossip.config import RobustConfig
from node.gossip.hivemind_internals.averagers import PeerAverager
from node.gossip.hivemind_internals.touches import Touch
from node.gossip.readings import RoundSize, Steady
from node.gossip.traffic import PeerTraffic
from node.gossip.trust import AllowList, peers_in_round

log = logging.getLogger(__name__)

_OPTIMIZER = "hivemind.optim.optimizer.Optimizer"
_STATE_AVERAGER = "hivemind.optim.state_averager.TrainingStateAverager"
_GRAD_AVERAGER = "hivemind.optim.grad_averager.GradientAverager"
TOUCHES = (
    Touch("hivemind.optim.optimizer", "TrainingStateAverager", "replace",
          "hivemind builds its state averager by this module-level name: swapped while ours is built"),
    Touch(_OPTIMIZER, "_make_state_averager", "override", "build a ConsistentStateAverager", ("self", "kwargs")),
    Touch(_OPTIMIZER, "_make_gradient_averager", "override", "key averaging groups by epoch",
          ("self", "factory", "kwargs")),
    Touch(_GRAD_AVERAGER, "step", "wrap", "set the epoch's group bits before matchmaking", ("self", "control")),
    Touch(_GRAD_AVERAGER, "schedule_step", "wrap", "set the epoch's group bits before matchmaking", ("self",)),
    Touch(_OPTIMIZER, "_average_gradients_and_load_into_optimizer", "override",
          "leave a round that has not begun its all-reduce within two matchmaking times",
          ("self", "maybe_step_control")),
    Touch(_OPTIMIZER, "_tag_along_with_zero_weight", "override", "same, for a round joined with zero weight",
          ("self", "control")),
    Touch(_OPTIMIZER, "_should_load_state_from_peers", "override", "a peer behind downloads before it trains on",
          ("self",)),
    Touch(_OPTIMIZER, "_check_and_accumulate_gradients", "override",
          "a step of zero samples (diloco's wait for the round) accumulates nothing", ("self", "batch_size",
                                                                                    "grad_scaler")),
    Touch(_OPTIMIZER, "_load_local_gradients_into_optimizer", "override",
          "hivemind's solo fallback after a failed round: drop the round instead", ("self",)),
    Touch(_OPTIMIZER, "_begin_averaging_gradients", "override", "a round that could not begin is dropped",
          ("self", "grad_scaler")),
    Touch(_OPTIMIZER, "_update_global_epoch", "override", "drop failed or partial rounds before the epoch moves",
          ("self", "grad_scaler")),
    Touch(_STATE_AVERAGER, "step", "wrap", "hivemind ends a round with step(increment_epoch=True, ...): skipped "
          "for a dropped round, under the update lock otherwise", ("self", "increment_epoch", "averaging_control")),
    Touch(_STATE_AVERAGER, "load_state_from_peers", "wrap", "note the epoch the downloaded state belongs to "
          "and judge it before hivemind reports that epoch as this peer's",
          ("self",)),
    Touch(_STATE_AVERAGER, "get_current_state", "override", "serve state only between updates", ("self",)),
    Touch(_STATE_AVERAGER, "local_epoch", "write", "a download keeps the epoch of the weights it brought"),
    Touch(_STATE_AVERAGER, "optimizer", "read", "snapshot the weights and optimizer state a refused download "
          "is rolled back to"),
    Touch(_STATE_AVERAGER, "main_parameters", "write", "a refused download is rolled back in the model's "
          "weights too (hivemind copies a download there from the optimizer's)"),
    Touch(_STATE_AVERAGER, "offload_optimizer", "read", "whether the optimizer holds a copy of the weights"),
    Touch("hivemind.optim.optimizer", "ProgressTracker", "replace",
          "hivemind builds its progress tracker by this module-level name: swapped while ours is built"),
    Touch(_OPTIMIZER, "_make_progress_tracker", "override", "build a TrustingProgressTracker",
          ("self", "target_batch_size", "kwargs")),
    Touch("hivemind.optim.progress_tracker.ProgressTracker", "_parse_swarm_progress_data", "override",
          "count only trusted progress records (node.gossip.trust); the base one reads a fresh, trusted read",
          ("self", "metadata")),
    Touch("hivemind.optim.progress_tracker.ProgressTracker", "target_batch_size", "write",
          "gossip.target_batch_per_peer: the target sized from the peers in the round at every read"),
    Touch("hivemind.optim.progress_tracker.ProgressTracker", "local_progress", "read",
          "this peer's epoch, counted among the peers in the round"),
    Touch("hivemind.optim.progress_tracker.ProgressTracker", "report_local_progress", "wrap",
          "exact rounds (diloco): a peer that reports its H steps reads the records at once",
          ("self", "local_epoch", "samples_accumulated", "update_global_samples")),
    Touch("hivemind.optim.progress_tracker.ProgressTracker", "global_state_updated", "write",
          "exact rounds (diloco): wakes the fetcher to read the records at once"),
    Touch("hivemind.optim.progress_tracker.ProgressTracker", "min_refresh_period", "read",
          "exact rounds (diloco): a peer waiting for a round re-reads the records this often"),
    Touch("hivemind.optim.progress_tracker.GlobalTrainingProgress", "eta_next_epoch", "write",
          "exact rounds (diloco): due when the samples are there, not when the rates extrapolate there"),
    Touch("hivemind.optim.progress_tracker.GlobalTrainingProgress", "next_fetch_time", "write",
          "exact rounds (diloco): a peer waiting for a round re-reads the records soon"),
    Touch("hivemind.averaging.averager.DecentralizedAverager", "state_sharing_priority", "write",
          "a download keeps its epoch: so does the priority the peer serves its state with"),
    Touch("hivemind.averaging.control.StepControl", "weight", "write", "tag along with zero weight before "
          "the round is triggered, as hivemind does after"),
)


class ConsistentStateAverager(PeerAverager, TrainingStateAverager):
    """A `TrainingStateAverager` that serves its state (to late joiners and peers that fell behind)
    only while no update is half done: `update_lock` is held by whoever changes the epoch or the
    weights, and by `get_current_state`. One peer's (`PeerAverager`)."""

    ALLREDUCE_KIND = "state_averaging"

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

    def __init__(self, *args, hooks: PeerHooks, **kwargs):
        self.hooks = hooks
        self.others_alive = hooks.others_alive
        self.traffic, self.robust = hooks.traffic, hooks.robust
        self.drop_round = False
        self.nothing_accumulated = False  # this round's own samples: none (see _update_global_epoch)
        self.downloads_refused = 0  # state downloads that the weights claims did not back, rolled back
        self.rounds_dropped = 0
        self.rounds_partial = 0  # of those, rounds whose all-reduce came back with parts missing
        self._dropped_here = (-1, 0)  # (epoch, rounds dropped at it in a row): see rounds_dropped_here
        self._unserved = (-1, None)  # (epoch downloaded from, the epoch the swarm claimed): see unserved_epoch
        super().__init__(*args, **kwargs)

    def unserved_epoch(self) -> int | None:
        """The epoch the swarm's progress claimed when a download from this peer's current epoch brought
        nothing newer: nobody served it (a lone record ahead that no state backs; node.gossip.trust)."""
        epoch, claimed = self._unserved
        return claimed if epoch == self.local_epoch else None

    def rounds_dropped_here(self) -> int:
        """How many rounds in a row failed at this peer's current epoch (0 after a download): a group
        that cannot complete a round with this peer (node.gossip.trust, group patience)."""
        epoch, count = self._dropped_here
        return count if epoch == self.local_epoch else 0

    def _make_state_averager(self, **kwargs) -> ConsistentStateAverager:
        # hivemind builds the averager by its module-level name, with its own settings: have it build
        # ours (peers are built one at a time, so the swap cannot leak into another construction)
        original = hivemind_optimizer.TrainingStateAverager
        hivemind_optimizer.TrainingStateAverager = partial(ConsistentStateAverager, traffic=self.traffic,
                                                               robust=self.robust, allow=self.hooks.allow)
        try:
            return super()._make_state_averager(**kwargs)
        finally:
            hivemind_optimizer.TrainingStateAverager = original

    def _make_progress_tracker(self, target_batch_size: int, **kwargs) -> ProgressTracker:
        # built by its module-level name, like the state averager: ours believes only trusted progress records
        original = hivemind_optimizer.ProgressTracker
        hivemind_optimizer.ProgressTracker = partial(TrustingProgressTracker, trusted=self.hooks.trusted_progress,
                                                     per_peer=self.hooks.target_batch_per_peer,
                                                     expected_peers=self.hooks.expected_peers,
                                                     straggler_wait_s=self.hooks.straggler_wait_s)
        try:
            return super()._make_progress_tracker(target_batch_size, **kwargs)
        finally:
            hivemind_optimizer.ProgressTracker = original

    def _make_gradient_averager(self, factory, **kwargs):
        averager = super()._make_gradient_averager(factory, **kwargs)
        # matchmaking starts in one of these two (a pre-scheduled round is later triggered through step)
        averager.schedule_step = self.match_this_epoch_only(averager.schedule_step)
        averager.step = self.match_this_epoch_only(averager.step)
        return averager

    def match_this_epoch_only(self, start_round: Callable) -> Callable:
        """hivemind matches any peers looking for a group under the same key, whatever their epochs: a
        peer still finishing epoch E can average with peers in round E+1 and apply their update to its
        older weights. Keyed by epoch, a round only ever groups peers that hold the same weights."""
        def start_round_at_this_epoch(*args, **kwargs):
            if kwargs.get("control") is None:  # a new group is looked for, not a pre-scheduled one triggered
                self.grad_averager.set_group_bits(epoch_group_bits(self.local_epoch))
            return start_round(*args, **kwargs)

        return start_round_at_this_epoch

    def leave_unless_grouped(self, control) -> None:
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
            self.leave_unless_grouped(maybe_step_control)
        super()._average_gradients_and_load_into_optimizer(maybe_step_control)

    def _tag_along_with_zero_weight(self, control) -> None:
        # hivemind joins a round it has no gradients for with zero weight, so that its group need not
        # re-form; the round is often at an epoch the others have left (this peer is about to download)
        if not control.triggered:
            control.weight = 0
            control.allow_allreduce()
        self.leave_unless_grouped(control)
        super()._tag_along_with_zero_weight(control)

    def _should_load_state_from_peers(self) -> bool:
        # hivemind lets a peer one epoch behind go on and join the swarm's next round: it then applies
        # the swarm's averaged update to its older weights, and they leave the swarm's for good (seen
        # after a download raced the others' next round). Here a peer behind downloads first.
        return super()._should_load_state_from_peers() or self.local_epoch < self.tracker.global_epoch

    def _check_and_accumulate_gradients(self, batch_size: int, grad_scaler) -> bool:
        if batch_size == 0:
            # a step of zero samples only waits for the swarm's round (node.gossip.outer): hivemind would
            # count it as one more accumulation and divide the accumulated gradients by one more
            self.tracker.report_local_progress(self.local_epoch, self.grad_averager.local_samples_accumulated)
            return True
        return super()._check_and_accumulate_gradients(batch_size, grad_scaler)

    def _load_local_gradients_into_optimizer(self):
        # hivemind's fallback after a failed round (or a pre-scheduled round with nobody in it)
        if self.nothing_accumulated or self.others_alive():
            self.drop_round = True
        super()._load_local_gradients_into_optimizer()

    def _begin_averaging_gradients(self, grad_scaler) -> bool:
        began = super()._begin_averaging_gradients(grad_scaler)
        if not began and (self.nothing_accumulated or self.others_alive()):
            self.drop_round = True  # hivemind would step with this peer's gradients alone
        return began

    def _update_global_epoch(self, grad_scaler) -> None:
        self.drop_round = False
        # without samples of its own, a round that does not average has nothing to apply, alone or not:
        # decided once here, as two DHT reads during one round may see different swarms (ci: the first
        # still saw a peer that had just left, the fallback's did not, and zero gradients were applied)
        self.nothing_accumulated = self.grad_averager.local_samples_accumulated == 0
        if self.nothing_accumulated and not self.others_alive():
            # alone with nothing accumulated (diloco waiting for a round whose peers left): hivemind would
            # "update" with zero gradients, labelling the same weights with the next epoch (seen in a WAN
            # run: the peer then ended one epoch ahead of the weights it held)
            return
        # the round's all-reduce is triggered below; a delayed state average of this peer that ends
        # partial in this window drops the round as well: its parameters are off too
        partials = self.traffic.partial_allreduces
        partials_before = partials.count()
        came_back_partial = False
        averager = self.state_averager
        step = averager.step

        def step_unless_dropped(*args, **kwargs):
            nonlocal came_back_partial
            # hivemind ends a round with one state_averager.step(increment_epoch=True, optimizer_step=...)
            if (kwargs.get("increment_epoch") and not self.drop_round
                    and partials.count() > partials_before and self.others_alive()):
                self.drop_round = came_back_partial = True
                self.rounds_partial += 1
            if kwargs.get("increment_epoch") and not self.drop_round and not self.averaged_gradients_finite():
                # reducers never return a non-finite part, and a peer refuses one: a last line of defence
                log.error("the averaged gradients are not finite: dropping the round")
                self.drop_round = True
            if not (self.drop_round and kwargs.get("increment_epoch")):
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
        if self.drop_round:
            self.rounds_dropped += 1
            epoch, count = self._dropped_here
            self._dropped_here = (self.local_epoch, count + 1 if epoch == self.local_epoch else 1)
            log.info("averaging round at epoch %d %s: applied nothing", self.local_epoch,
                     "came back with parts missing" if came_back_partial else "failed")

    def shutdown(self):
        """hivemind's shutdown, except that a scheduled round finishing while it is cancelled does not stop it
        halfway: hivemind checks the round's stage, then cancels, and a round that finished in between raises
        InvalidStateError before the averagers (child processes) are shut down."""
        try:
            super().shutdown()
        except InvalidStateError as err:
            log.info("a scheduled round finished while shutting down (%s): shutting the averagers down", err)
            self.state_averager.shutdown()
            if self.use_gradient_averaging:
                self.grad_averager.shutdown()

    def averaged_gradients_finite(self) -> bool:
        """The gradients hivemind loaded into the optimizer for this round's step are all finite."""
        return all(bool(torch.isfinite(param.grad).all()) for group in self.state_averager.optimizer.param_groups
                   for param in group["params"] if param.grad is not None)

    def load_state_from_peers(self, **kwargs):
        """Download the swarm's state (`download_state`); if the swarm was just replacing that state, wait
        for the replacement and download it instead.

        A download serves the donors' current epoch, and while a round of other peers is under way
        that epoch is about to end: the peer would train on it, find itself behind at its next step
        and download again, during the next round. Where a round comes at every step that never
        ends (seen in ci: an honest peer downloaded the round before, step after step, while the
        other honest peer and a liar claiming a thousand batches rounded). A pair is left alone:
        its round needs this peer, which joins it at its next step."""
        before = self.local_epoch
        newest = self.download_state(**kwargs)
        if self.swarm_moved_past(self.local_epoch):
            log.info("the swarm's round at epoch %d ended while this peer downloaded it: downloading again",
                     self.local_epoch)
            newest = max(newest, self.download_state(**kwargs))
        claimed = self.tracker.global_epoch
        # a newer state that came and was refused (the claims did not back it) was served all the same. One
        # that nobody answered counts as unserved: a pair that follows a liar downloads from each other at
        # once, and neither serves while it downloads (ci50). A peer alone at its epoch follows whatever the
        # mark says (trust.follow_ceiling): its partner ahead may just have been downloading itself (stop 24)
        if newest <= before < claimed:
            log.info("no peer served the state of epoch %d (downloaded %d): a lone record there is not followed "
                     "from this epoch", claimed, self.local_epoch)
            self._unserved = (self.local_epoch, claimed)

    def swarm_moved_past(self, epoch: int) -> bool:
        """Whether the swarm is past `epoch` now, or moves past it in a round that is under way among at
        least two other peers at `epoch` (waited for, at most as long as a round may take).

        "No round" is believed after reads that say so for a second: under load a DHT read can come back
        with records missing (ci33: with two CIs beside, the newcomer's reading found no round after its
        download, though both others were held in one for it, and it kept the replaced state)."""
        def reading() -> tuple[bool, bool]:
            progress, others_here = self.swarm_progress_now(epoch)
            if progress is None:
                return False, False
            # a round that needs this peer, or one dropped (its samples are gone), is not under way
            return progress.epoch > epoch, others_here >= 2 and (
                progress.samples_accumulated >= self.tracker.target_batch_size or
                get_dht_time() >= progress.eta_next_epoch)

        return watch_round(reading, 2 * self.matchmaking_time + self.averaging_timeout, "after a download")

    def swarm_applied(self, epoch: int, wait_s: float) -> bool:
        """After this peer dropped its round at `epoch`: whether the other peers applied it (a trusted record
        of theirs is above `epoch`). Read until one shows, or until, for a second, no other peer at `epoch`
        holds samples (a record's samples go to zero when its round ends: they all left it without moving
        on), and at most `wait_s`."""
        def reading() -> tuple[bool, bool]:
            _, others = self.trusted_records_now()
            return (any(record.epoch > epoch for record in others),
                    any(record.epoch == epoch and record.samples_accumulated > 0 for record in others))

        return watch_round(reading, wait_s, "after a dropped round")

    def swarm_progress_now(self, epoch: int) -> tuple[GlobalTrainingProgress | None, int]:
        """The tracker's view of the swarm from a fresh read of the DHT (its cache refreshes every few seconds),
        and how many other peers' trusted records are at `epoch`; None without any trusted record."""
        trusted, others = self.trusted_records_now()
        if not trusted:
            return None, 0
        # the base class's reading: the records are already the trusted ones
        return (ProgressTracker._parse_swarm_progress_data(self.tracker, trusted),
                sum(1 for record in others if record.epoch == epoch))

    def trusted_records_now(self) -> tuple[dict, list[LocalTrainingProgress]]:
        """The trusted progress entries from a fresh read of the DHT, and the other training peers' records
        among them, parsed."""
        tracker = self.tracker
        found = tracker.dht.get(tracker.training_progress_key, latest=True)
        trusted = self.hooks.trusted_progress(found.value if found is not None and isinstance(found.value, dict)
                                              else {})
        me = self.dht.peer_id.to_bytes()
        return trusted, [record for record in TrustingProgressTracker.records(trusted) if bytes(record.peer_id) != me]

    def download_state(self, **kwargs) -> int:
        """hivemind's download, except that the state keeps the epoch it was downloaded at; the epoch of
        the state it brought (-1 if it replaced nothing: nobody served, or only an older state).

        When the swarm has just moved to epoch E, hivemind labels a download of epoch E-1 as E
        ("catching up"), yet the weights are the donor's E-1 ones; the peer then claims weights
        for an epoch they do not belong to and its next update diverges from the swarm's. Kept
        at E-1, the peer is plainly behind and downloads again at its next step
        (`_should_load_state_from_peers`). It comes only from donors this peer follows (`hooks.donors`),
        and a state that the weights claims do not back, or labelled with an epoch no followed record
        reports, is rolled back (it still counts as brought)."""
        averager = self.state_averager
        load = averager.load_state_from_peers
        loaded_epochs, refused = [], []
        before = self.snapshot_state()

        def load_and_check(*args, **kw):
            result = load(*args, **kw)
            epoch = averager.local_epoch
            loaded_epochs.append(epoch)
            # judged before hivemind reports the epoch as this peer's: a refused state's epoch is never reported
            # (it would pair this peer with the liar that served it, and others would follow the two).
            # hivemind returns the same way whether or not a state came: only a replaced one is judged
            if self.state_replaced(before, epoch) and not self.hooks.download_agrees(epoch, before[0]):
                self.restore_state(before)
                refused.append(epoch)
            return result

        averager.load_state_from_peers = load_and_check
        self._dropped_here = (-1, 0)  # after a download (or a try) the peer counts on its group again
        self.hooks.allow.set_donors(self.hooks.donors())
        try:
            # weights, then epoch, then hivemind's relabel, then ours: nobody may copy what lies between
            with averager.update_lock:
                super().load_state_from_peers(**kwargs)
                if refused:
                    brought, true_epoch = refused[-1], before[0]
                    self.downloads_refused += 1
                    log.warning("the state downloaded for epoch %d is not one the swarm's claims and progress back: "
                                "rolled back to this peer's own", brought)
                else:
                    replaced = loaded_epochs and self.state_replaced(before, loaded_epochs[-1])
                    brought = loaded_epochs[-1] if replaced else -1
                    if not loaded_epochs or self.local_epoch == loaded_epochs[-1]:
                        return brought
                    true_epoch = loaded_epochs[-1]
                    log.info("downloaded the state of epoch %d (the swarm is at %d)", true_epoch,
                             self.tracker.global_epoch)
                averager.local_epoch = true_epoch
        finally:
            self.hooks.allow.set_donors(None)
            del averager.load_state_from_peers  # back to the class's method
        self.tracker.report_local_progress(local_epoch=true_epoch, samples_accumulated=0)
        if not self.client_mode:
            averager.state_sharing_priority = true_epoch
            if self.use_gradient_averaging:
                self.grad_averager.state_sharing_priority = true_epoch
        return brought

    def snapshot_state(self) -> tuple[int, list[torch.Tensor], dict]:
        """This peer's epoch, weights (and extra tensors: diloco's inner optimizer state) and optimizer
        state, to roll a download back to."""
        averager = self.state_averager
        return (averager.local_epoch, [tensor.detach().clone() for tensor in self.state_tensors()],
                copy.deepcopy(averager.optimizer.state_dict()))

    def state_replaced(self, snapshot: tuple[int, list[torch.Tensor], dict], loaded_epoch: int) -> bool:
        """Whether a download replaced the state `snapshot` holds: another epoch, or other weights."""
        return loaded_epoch != snapshot[0] or any(not torch.equal(tensor, saved) for tensor, saved
                                                  in zip(self.state_tensors(), snapshot[1], strict=True))

    def state_tensors(self) -> list[torch.Tensor]:
        """The weights the optimizer steps (and extra tensors: diloco's inner optimizer state)."""
        averager = self.state_averager
        return [param for group in averager.optimizer.param_groups for param in group["params"]] + list(
            averager.extra_tensors)

    def restore_state(self, snapshot: tuple[int, list[torch.Tensor], dict]) -> None:
        """Back to `snapshot`: the optimizer's copy of the weights and, as hivemind copies a download into
        the model's weights too, those (a refused download was otherwise left in the model, trained on and
        claimed)."""
        epoch, params, optimizer_state = snapshot
        averager = self.state_averager
        with torch.no_grad():
            for tensor, saved in zip(self.state_tensors(), params, strict=True):
                tensor.copy_(saved)
            if averager.offload_optimizer:
                for main, saved in zip(averager.main_parameters, params, strict=False):  # extras have no main
                    main.copy_(saved)
        averager.optimizer.load_state_dict(optimizer_state)
        averager.local_epoch = epoch


class TrustingProgressTracker(ProgressTracker):
    """hivemind's progress tracker, counting only trusted progress records (node.gossip.trust): refused
    identities and lone records above the epoch a peer follows change neither the swarm's epoch, its size
    nor its batch. With `per_peer`, the target batch is that many samples per peer in the round
    (`trust.peers_in_round`), re-sized at every read of the records, and never above the fixed target
    (`gossip.target_batch_size`): identities are free in an open swarm, and records of extra ones
    would otherwise raise the target and slow every honest peer's rounds.

    With `straggler_wait_s` (diloco: exact rounds), a round is due when the records' samples reach the
    target, never because the peers' rates extrapolate there, and a peer that waits for it re-reads the
    records every `min_refresh_period`. A diloco peer reports its samples once per H inner steps, in
    one burst: rates extrapolated between bursts made rounds due before the last peer arrived (in a
    WAN run two peers averaged without the third, whose H steps were then lost), and hivemind's
    refresh, sized by that estimate, saw the last arrival up to 10 s late (docs/benchmarks.md, WAN).
    Once this peer has waited `straggler_wait_s`, the round is due with the peers that reported (two
    or more): a peer that dropped the last round, or downloaded, reports only after H more steps."""

    ROUND_SIZE_MEMORY_S = 5.0

    def __init__(self, dht, prefix: str, target_batch_size: int, *, trusted: Callable[[dict], dict],
                 per_peer: int | None = None, expected_peers: int = 1, straggler_wait_s: float | None = None,
                 **kwargs):
        self.trusted, self.per_peer = trusted, per_peer  # before the base class starts fetching
        self.straggler_wait_s = straggler_wait_s
        self.arrived_at: float | None = None  # exact rounds: when this peer reported samples for its round
        self.round_size = RoundSize(expected_peers, self.ROUND_SIZE_MEMORY_S)
        self.most = target_batch_size
        super().__init__(dht, prefix, target_batch_size, **kwargs)
        if per_peer is not None:
            self.target_batch_size = self.sized(max(1, expected_peers))  # until the first read

    @property
    def exact_rounds(self) -> bool:
        return self.straggler_wait_s is not None

    def report_local_progress(self, local_epoch: int, samples_accumulated: int, update_global_samples: bool = True):
        super().report_local_progress(local_epoch, samples_accumulated, update_global_samples)
        if not self.exact_rounds:
            return
        if samples_accumulated == 0:  # a new period: the next report with samples is the next arrival
            self.arrived_at = None
            return
        now = get_dht_time()
        if self.arrived_at is None:
            self.arrived_at = now
        # this peer arrived at its round: read the records now rather than at the refresh planned while it
        # trained (up to max_refresh_period away); once read, they are re-read every min_refresh_period
        if self.global_progress.next_fetch_time > now + self.min_refresh_period:
            self.global_progress.next_fetch_time = now
            self.global_state_updated.set()  # wakes the fetcher, which then waits until next_fetch_time

    def sized(self, peers: int) -> int:
        """The target for a round of `peers` peers."""
        return min(self.most, self.per_peer * peers)

    def _parse_swarm_progress_data(self, metadata):
        if isinstance(metadata, dict):
            metadata = self.trusted(metadata)
        records = self.records(metadata) if self.per_peer is not None or self.exact_rounds else []
        if self.per_peer is not None and isinstance(metadata, dict):
            peers = peers_in_round(self.other_epochs(records), self.local_progress.epoch)
            self.target_batch_size = self.sized(self.round_size.note(peers))
        progress = super()._parse_swarm_progress_data(metadata)
        if self.exact_rounds:
            now = get_dht_time()
            reported = sum(1 for record in records if record.epoch == progress.epoch and record.samples_accumulated > 0)
            waited = now - self.arrived_at if self.arrived_at is not None else 0.0
            due = progress.samples_accumulated >= self.target_batch_size or (
                waited >= self.straggler_wait_s and reported >= 2)
            progress.eta_next_epoch = now if due else float("inf")
            if self.local_progress.samples_accumulated > 0:  # this peer waits for the others: look again soon
                progress.next_fetch_time = min(progress.next_fetch_time, now + self.min_refresh_period)
        return progress

    def other_epochs(self, records: list[LocalTrainingProgress]) -> list[int]:
        """The epochs of the other peers' records among `records`."""
        me = self.dht.peer_id.to_bytes()
        return [record.epoch for record in records if bytes(record.peer_id) != me]

    @staticmethod
    def records(metadata) -> list[LocalTrainingProgress]:
        """The well-formed progress records of training (not client-mode) peers, this one's included."""
        found = []
        for entry in metadata.values() if isinstance(metadata, dict) else ():
            try:
                record = LocalTrainingProgress.parse_obj(entry.value)
            except Exception:  # network boundary: a malformed record counts for nothing
                continue
            if not record.client_mode:
                found.append(record)
        return found


def watch_round(reading: Callable[[], tuple[bool, bool]], wait_s: float, when: str) -> bool:
    """Read the swarm (`reading`: whether it moved past the epoch, whether a round is under way there)
    until it moved (True), or until reads have said for a second that no round is under way (False), at
    most `wait_s`. A read that fails answers False: the next step looks again."""
    deadline, quiet = time.monotonic() + wait_s, Steady()
    while time.monotonic() < deadline:
        try:
            moved, under_way = reading()
        except Exception as err:  # network boundary
            log.warning("could not read the swarm's progress %s: %s", when, err)
            return False
        if moved:
            return True
        if quiet.holds(not under_way):
            return False
        time.sleep(0.25)
    return False


@dataclass(frozen=True)
class PeerHooks:
    """What the optimizer needs from the peer it serves (node.gossip.averaging.GradientGossip)."""

    others_alive: Callable[[], bool]  # another peer trains now (a round it cannot average is dropped)
    trusted_progress: Callable[[dict], dict]  # the progress records to believe (node.gossip.trust)
    # the weights just downloaded for an epoch (from a peer at the second) are those the claims back
    download_agrees: Callable[[int, int], bool]
    donors: Callable[[], set[bytes] | None]  # the libp2p peers a download may come from now (None: any allowed)
    traffic: PeerTraffic
    robust: RobustConfig
    allow: AllowList
    target_batch_per_peer: int | None = None  # the target per peer in the round (None: hivemind's fixed one)
    expected_peers: int = 1  # the swarm's size at startup (gossip.min_peers): the round's size until reads show it
    straggler_wait_s: float | None = None  # diloco's exact rounds (TrustingProgressTracker); None: hivemind's
