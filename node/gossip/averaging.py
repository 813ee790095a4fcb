"""`GradientGossip`: one peer's side of swarm-wide gradient averaging.

Built on `hivemind.Optimizer` with `use_local_updates=False`: every peer accumulates its
gradients until the swarm together reaches `target_batch_size` rollouts, then the peers
that are ready form a group, all-reduce their (PowerSGD-compressed, error-fed-back)
gradients and apply the same averaged update with identical optimizer state, so their
weights stay equal up to float error. A round that fails to average applies nothing
(`AllOrNothingOptimizer`, node.gossip.hivemind_internals.optimizer): the peers that did average move to the
next epoch and the others download their state before the next step, labelled with the
epoch its weights belong to; a late joiner does so before its first step. A peer that dies
mid-round costs the others that round: the all-reduce times out after
`averaging_timeout` and they retry at the next swarm step (a lone survivor steps alone once the
dead peer's progress record has expired, `gossip.peer_expiration_s`). After every update the peer
claims its weights in the DHT, and a peer outvoted by the others' claims takes the swarm's
state (node.gossip.consensus): what hivemind cannot promise, the claims check. After its last
step a peer settles (`settle`), so that a split in the last round is repaired as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from hivemind.utils import get_dht_time

from node.gossip import hivemind_internals
from node.gossip.config import GossipConfig, RobustConfig
from node.gossip.consensus import WeightsConsensus
from node.gossip.fingerprint import parameter_fingerprint
from node.gossip.hivemind_internals import AllOrNothingOptimizer, PeerGradientAverager, PeerPowerSGDAverager
from node.gossip.hivemind_internals.optimizer import PeerHooks
from node.gossip.readings import Steady
from node.gossip.traffic import CountingCompression, PeerTraffic
from node.gossip.trust import (
    Admission,
    AllowList,
    OpenSwarm,
    Progress,
    admitted,
    group_epoch,
    read_progress,
    trusted_progress,
)
from plumbing.dht_keys import owner_subkey
from plumbing.identity import SigningIdentity

log = logging.getLogger(__name__)


@dataclass
class GossipStepReport:
    applied: bool  # a swarm (or solo) optimizer update happened during this call (not a state download)
    epoch: int  # the swarm step count after this call
    num_peers: int  # peers the tracker currently sees (including this one)
    bytes_sent: int  # all-reduce payload bytes sent during this call
    bytes_received: int
    dense_bytes: int  # what a dense fp32 all-reduce would have sent for the same rounds
    state_bytes_sent: int  # full state served to peers that joined late or fell behind
    state_bytes_received: int  # full state this peer downloaded (it was behind)
    averaging_seconds: float  # wall time of this call: waiting for peers, all-reduce, optimizer step
    allreduce_seconds: float  # part of it inside formed groups' all-reduce rounds
    waiting_seconds: float  # the rest: progress tracking, matchmaking, waiting for slower peers
    dropped: bool = False  # a round failed to average and applied nothing (see hivemind_internals.optimizer)
    resynced: bool = False  # downloaded the swarm's state because the others' weights claims outvoted ours
    fingerprint: list[float] | None = None  # of the weights, when they changed during this call
    error: str | None = None


@dataclass
class TrafficTotals:
    """Bytes since the peer's gossip started, state downloads at start included."""

    bytes_sent_total: int  # all-reduce payload bytes: gradients every round, parameters every average_state_every
    bytes_received_total: int
    state_bytes_sent_total: int  # full state served to peers that joined late or fell behind
    state_bytes_received_total: int  # full state this peer downloaded
    gradient_bytes_sent_total: int  # of bytes_sent_total: the gradient (diloco: pseudo-gradient) all-reduces
    gradient_bytes_received_total: int
    state_averaging_bytes_sent_total: int  # of bytes_sent_total: parameter averaging (average_state_every)
    state_averaging_bytes_received_total: int


@dataclass
class SettleReport:
    settled: bool  # every other live peer at this peer's final epoch claimed the same weights there (or none is left)
    epoch: int
    peers: int  # live peers at the end, this one included
    downloads: int  # state downloads while settling (behind, or outvoted in the last round)
    seconds: float
    fingerprint: list[float]


def _grad_averager_factory(cfg: GossipConfig, traffic: PeerTraffic, robust: RobustConfig, allow: AllowList):
    peer = {"traffic": traffic, "robust": robust, "allow": allow, "target_group_size": cfg.group_size}
    if cfg.compression != "powersgd":
        return partial(PeerGradientAverager, **peer)  # dense, as hivemind's default
    return partial(PeerPowerSGDAverager, averager_rank=cfg.rank, **peer)


def _codec(cfg: GossipConfig, traffic: PeerTraffic):
    from hivemind.compression import Float16Compression, NoCompression

    fp16 = cfg.compression == "fp16" or (cfg.compression == "powersgd" and cfg.wire_precision == "fp16")
    return CountingCompression(Float16Compression() if fp16 else NoCompression(), traffic.gradients)


class GradientGossip:
    """Wraps `hivemind.Optimizer`; `step` replaces `optimizer.step()` after `loss.backward()`."""

    def __init__(self, dht, params: Iterable[torch.nn.Parameter],
                 optimizer_factory: Callable[[list], torch.optim.Optimizer], cfg: GossipConfig, *, run_id: str,
                 batch_size_per_step: int, identity: SigningIdentity, admission: Admission | None = None,
                 extra_tensors: Sequence[torch.Tensor] = ()):
        """`admission`: who may take part (node.swarm.admission.AdmissionView); None: an open swarm.
        `extra_tensors`: more state that late joiners download with the weights, updated in place (and
        averaged with the parameters every `average_state_every` rounds): diloco's inner AdamW state."""
        from hivemind.compression import Float16Compression, NoCompression

        self.cfg = cfg
        self.identity = identity
        self.admission = admission or OpenSwarm()
        self.allow = AllowList()  # filled from trusted progress records once the admission list restricts
        self.trusted_owners: set[str] = set()  # identities with a trusted progress record at the last read
        hivemind_internals.install()  # before the averagers below fork their processes
        self.traffic = PeerTraffic()
        self.params = [p for p in params if p.requires_grad]
        low = sorted({str(p.dtype) for p in self.params if p.dtype != torch.float32})
        if low:
            # hivemind keeps PowerSGD's error feedback in the parameters' dtype against float32 factors, and
            # its fp16 codec refuses bfloat16: it averages float32 master weights (node.training.precision)
            raise ValueError(f"GradientGossip averages float32 parameters, got {', '.join(low)}: hand it the "
                             f"float32 masters of a low-precision model (node.training.precision.MasterWeights)")
        self.numel = sum(p.numel() for p in self.params)
        # the progress tracker must sign with the key our DHT's RSASignatureValidator holds: the DHT keeps
        # only the first such validator, and records signed by another key are dropped. Its records are
        # then under this peer's owner subkey.
        tracker_opts = {"metadata_expiration": cfg.peer_expiration_s, "private_key": identity.private_key}
        self.progress_subkey = owner_subkey(identity.public_key)
        self.consensus = (WeightsConsensus(dht, run_id, identity, rtol=cfg.weights_rtol, ttl_s=cfg.weights_claim_ttl_s,
                                           counts=self._claim_counts) if cfg.verify_weights else None)
        self.dht = dht
        self.optimizer = AllOrNothingOptimizer(
            dht=dht, run_id=f"{run_id}_gossip", target_batch_size=cfg.target_batch_size,
            batch_size_per_step=batch_size_per_step, optimizer=optimizer_factory, params=self.params,
            matchmaking_time=cfg.matchmaking_time, averaging_timeout=cfg.averaging_timeout,
            next_chunk_timeout=cfg.next_chunk_timeout,
            load_state_timeout=cfg.load_state_timeout, average_state_every=cfg.average_state_every,
            use_local_updates=False, extra_tensors=tuple(extra_tensors),
            grad_averager_factory=_grad_averager_factory(cfg, self.traffic, cfg.robust, self.allow),
            grad_compression=_codec(cfg, self.traffic),
            state_averaging_compression=CountingCompression(Float16Compression(), self.traffic.state_averaging),
            # full precision: fp16 flushes Adam's second moments (often < 6e-8) to zero, and the late
            # joiner's first steps then divide by eps
            load_state_compression=CountingCompression(NoCompression(), self.traffic.state_sync), verbose=cfg.verbose,
            tracker_opts=tracker_opts, averager_opts={"target_group_size": cfg.group_size},
            hooks=PeerHooks(others_alive=self._others_alive, trusted_progress=self._trusted_metadata,
                            download_agrees=self._download_agrees, donors=self._donors, traffic=self.traffic,
                            robust=cfg.robust, allow=self.allow, target_batch_per_peer=cfg.target_batch_per_peer,
                            expected_peers=cfg.min_peers,
                            straggler_wait_s=cfg.straggler_wait_s if cfg.mode == "diloco" else None),
        )

    @property
    def epoch(self) -> int:
        return self.optimizer.local_epoch

    def num_peers(self) -> int:
        return max(1, int(self.optimizer.tracker.global_progress.num_peers))

    def dense_bytes_for(self, num_peers: int) -> int:
        """Bytes one peer sends in a dense fp32 butterfly all-reduce with `num_peers` peers."""
        return int(4 * self.numel * 2 * (num_peers - 1) / num_peers) if num_peers > 1 else 0

    def traffic_totals(self) -> TrafficTotals:
        gradients, state_averaging = self.traffic.gradients.snapshot(), self.traffic.state_averaging.snapshot()
        return TrafficTotals(gradients[0] + state_averaging[0], gradients[1] + state_averaging[1],
                             *self.traffic.state_sync.snapshot(), *gradients, *state_averaging)

    def _allreduce_snapshot(self) -> tuple[int, int]:
        """All-reduce bytes (sent, received) so far: gradients and state averaging."""
        (gs, gr), (ss, sr) = self.traffic.gradients.snapshot(), self.traffic.state_averaging.snapshot()
        return gs + ss, gr + sr

    def _trusted(self, entries: dict) -> dict[object, Progress]:
        """The progress records to believe (node.gossip.trust), and what follows from them: which identities'
        weights claims count, and, once the admission list restricts anyone, which peers the averagers may
        talk to."""
        optimizer = getattr(self, "optimizer", None)  # the tracker reads before the optimizer is built
        epoch = optimizer.local_epoch if optimizer is not None else 0
        stuck = optimizer is not None and optimizer.rounds_dropped_here() >= self.cfg.group_patience_rounds
        unserved = optimizer.unserved_epoch() if optimizer is not None else None
        trusted = trusted_progress(self._uncaught(entries), self.identity.fingerprint, epoch, self.admission.refused,
                                   self.cfg.max_epoch_lead, group_stuck=stuck, unserved=unserved)
        self.trusted_owners = {p.owner for p in trusted.values()}
        if self.admission.restricts:
            self.allow.set({p.libp2p_id for p in trusted.values()} | {self.dht.peer_id.to_bytes()})
        else:
            self.allow.set(None)
        return trusted

    def _uncaught(self, entries: dict) -> dict[object, Progress]:
        """The well-formed progress records, less those of peers this one's reducers caught sending what no
        honest peer sends (AllowList.deny): refused like a banned key, such a peer counts as no peer, its epoch
        is not followed and its claims do not vote. This peer's own record always stays."""
        denied, me = self.allow.denied(), self.identity.fingerprint
        return {key: p for key, p in read_progress(entries).items() if p.owner == me or p.libp2p_id not in denied}

    def _trusted_metadata(self, metadata: dict) -> dict:
        """The progress tracker's records, less those not to believe."""
        return {subkey: metadata[subkey] for subkey in self._trusted(metadata)}

    def _claim_counts(self, fingerprint: str) -> bool:
        """A weights claim counts if its identity may take part and trains in the swarm (has a trusted progress
        record): identities made up only to vote count for nothing."""
        return self.admission.refused(fingerprint) is None and fingerprint in self.trusted_owners

    def _download_ceiling(self, from_epoch: int) -> tuple[int | None, dict[object, Progress]]:
        """The highest epoch a download made from `from_epoch` may bring: the group this peer has there (the
        highest epoch at or above it that two identities report, itself included; node.gossip.trust), and the
        live records read. None without a group: a newcomer far behind, or a peer whose partner left, takes
        whatever the weights claims back."""
        me = self.identity.fingerprint
        live = admitted(self._uncaught(self._progress_entries()), me, self.admission.refused)
        epochs = {p.owner: p.epoch for p in live.values() if p.owner != me} | {me: from_epoch}
        return group_epoch(epochs, from_epoch), live

    def _donors(self) -> set[bytes] | None:
        """The peers a state download may come from: where this peer has a group, those at or below its epoch (a
        liar's lone record above is not one); None (any allowed peer) without a group, or when the read fails or
        shows no such peer (a read cut short: the label and claims checks still judge what comes)."""
        try:
            ceiling, live = self._download_ceiling(self.epoch)
        except Exception as err:  # network boundary
            log.warning("could not read the swarm's progress before a download: %s", err)
            return None
        if ceiling is None:
            return None
        me = self.dht.peer_id.to_bytes()
        return {p.libp2p_id for p in live.values() if p.libp2p_id != me and p.epoch <= ceiling} or None

    def _download_agrees(self, epoch: int, from_epoch: int) -> bool:
        """The weights just downloaded are the version the counting identities claim for `epoch`, and `epoch` is
        not above the group this peer had at `from_epoch` (`_download_ceiling`).

        Read from `from_epoch`, not from the downloaded one: a peer holding the state of epoch E+1 counts
        itself at E+1, and a liar's lone record there would then make a pair. A donor's record comes a moment
        after its state: "above the group" is believed after reads that say so for a second."""
        above = Steady()
        while True:
            try:
                ceiling, _ = self._download_ceiling(from_epoch)
            except Exception as err:  # network boundary: the claims below still judge
                log.warning("could not read the swarm's progress after a download: %s", err)
                break
            if ceiling is None or epoch <= ceiling:
                break
            if above.holds(True):
                log.warning("the state downloaded is labelled epoch %d, above this peer's group (%d): refused",
                            epoch, ceiling)
                return False
            time.sleep(0.2)
        if self.consensus is None:
            return True
        try:
            return self.consensus.backed(epoch, parameter_fingerprint(self.params))
        except Exception as err:  # network boundary: without the claims, keep what was downloaded
            log.warning("could not compare the downloaded state with the swarm's claims: %s", err)
            return True

    def _progress_entries(self) -> dict:
        """The progress records in the DHT now (not the tracker's cache, which refreshes only every few seconds)."""
        tracker = self.optimizer.tracker
        found = tracker.dht.get(tracker.training_progress_key, latest=True)
        return found.value if found is not None and isinstance(found.value, dict) else {}

    def _live_progress(self) -> dict[object, Progress]:
        """Every trusted progress record (one this peer follows), by its owner subkey."""
        return self._trusted(self._progress_entries())

    def _progress_epochs(self) -> dict[bytes, int]:
        """Epoch of every peer with a trusted progress record, by the record's owner subkey."""
        return {subkey: progress.epoch for subkey, progress in self._live_progress().items()}

    def _others_alive(self) -> bool:
        """True if a peer other than this one has a live progress record in the DHT (any that may take part and
        is within `max_epoch_lead` of this peer, followed or not: were a lone leader's solo round and this
        peer's both applied, the two would hold different weights at one epoch), or if the reads cannot tell.

        A round is applied alone only on evidence, and one read is none: a lookup cut short under load
        comes back with records missing (ci39: the read showed only this peer's own record while the
        other peer was alive, and a round it could not average was applied). Alone is believed after
        reads that say so for a second; a peer really alone pays that second only in a round that failed."""
        alone = Steady()
        while True:
            seen = self._read_others_alive()
            if seen is not False:
                return True
            if alone.holds(True):
                return False
            time.sleep(0.2)

    def _read_others_alive(self) -> bool | None:
        """One read of `_others_alive`: None when it cannot tell (the read failed, or it lacks this peer's own
        record, as a lookup cut short or a lapsed record of its own does)."""
        try:
            me, reach = self.identity.fingerprint, self.epoch + self.cfg.max_epoch_lead
            live = admitted(read_progress(self._progress_entries()), me, self.admission.refused)
        except Exception as err:  # network boundary
            log.warning("could not read the swarm's progress: %s", err)
            return None
        if self.progress_subkey not in live:
            log.info("the swarm's progress as read lacks this peer's own record: counting the others as alive")
            return None
        return any(p.owner != me and p.epoch <= reach for p in live.values())

    def swarm_epoch(self) -> int:
        """The highest epoch any training peer reports now."""
        return max(self._progress_epochs().values(), default=0)

    def load_state_from_peers(self, force: bool = False) -> bool:
        """If the swarm is ahead (or `force`), download parameters and optimizer state from a live peer.

        False when there was nothing to catch up on or no peer answered. (Peers that start
        together all hold the same initial weights and skip this.)"""
        if not force and self.swarm_epoch() <= self.epoch:
            return False
        before = self.epoch
        received = self.traffic.state_sync.snapshot()[1]
        try:
            self.optimizer.load_state_from_peers()
        except Exception as err:  # network boundary: a late joiner may still start from its own copy
            log.warning("could not download state from peers: %s", err)
            return False
        loaded = self.epoch > before or self.traffic.state_sync.snapshot()[1] > received
        if loaded:
            self._claim_weights(downloaded=True)
        return loaded

    def catch_up(self) -> GossipStepReport:
        """After a round this peer dropped: if the others applied it, download their state now.

        In sync mode the next step, a moment later, would download it. A diloco peer steps the swarm only
        every H inner steps (node.gossip.outer): it would train those H steps on the weights the swarm
        left, throw them away at its next outer step to download, and arrive at that round a download
        late, when the others had waited `gossip.straggler_wait_s` for it and rounded without it: out of
        phase from then on, a download at every round (docs/benchmarks.md, WAN, seed 2). Downloaded now,
        its next H steps count, and it arrives at the next round a download late, within that wait. The
        others may still be in the round (a reducer that lost this peer's part waits `next_chunk_timeout`
        for it): their outcome is waited for, at most `averaging_timeout`."""
        state0 = self.traffic.state_sync.snapshot()
        started = time.perf_counter()
        loaded = (self.optimizer.swarm_applied(self.epoch, wait_s=self.cfg.averaging_timeout)
                  and self.load_state_from_peers(force=True))
        elapsed = time.perf_counter() - started
        state1 = self.traffic.state_sync.snapshot()
        return GossipStepReport(
            applied=False, epoch=self.epoch, num_peers=self.num_peers(), bytes_sent=0, bytes_received=0,
            dense_bytes=0, state_bytes_sent=state1[0] - state0[0], state_bytes_received=state1[1] - state0[1],
            averaging_seconds=elapsed, allreduce_seconds=0.0, waiting_seconds=elapsed,
            fingerprint=parameter_fingerprint(self.params) if loaded else None)

    def _claim_weights(self, downloaded: bool) -> list[float]:
        """Fingerprint the weights this peer holds now and, if weights are verified, claim them.

        After a state download the earlier claims described weights this peer no longer holds."""
        fingerprint = parameter_fingerprint(self.params)
        if self.consensus is not None:
            if downloaded:
                self.consensus.forget()
            self.consensus.claim(self.epoch, fingerprint)
        return fingerprint

    def resync_if_outvoted(self) -> bool:
        """If the other peers' weights claims outvote this peer's, download the swarm's state.

        While it waits for the download the peer stops offering its own state, so that nobody
        (a late joiner, another outvoted peer) copies the weights that lost."""
        if self.consensus is None:
            return False
        try:
            epoch = self.consensus.check()
        except Exception as err:  # network boundary: check again at the next step
            log.warning("could not compare weights with the swarm: %s", err)
            return False
        if epoch is None:
            return False
        return self._take_swarm_state(epoch)

    def _take_swarm_state(self, epoch: int) -> bool:
        log.warning("at epoch %d this peer's weights differ from the swarm's: downloading the swarm's state", epoch)
        sharers = [self.optimizer.state_averager, self.optimizer.grad_averager]
        for averager in sharers:
            averager.allow_state_sharing = False
        try:
            return self.load_state_from_peers(force=True)
        finally:
            for averager in sharers:
                averager.allow_state_sharing = True

    def step(self, batch_size: int) -> GossipStepReport:
        state_sync = self.traffic.state_sync
        sent0, received0 = self._allreduce_snapshot()
        state_sent0, state_received0 = state_sync.snapshot()
        allreduce0 = self.traffic.allreduce_seconds.total()
        dropped0 = self.optimizer.rounds_dropped
        resynced = self.resync_if_outvoted()
        epoch0 = self.epoch
        state_received1 = state_sync.snapshot()[1]
        peers = self.num_peers()
        started = time.perf_counter()
        error = None
        try:
            if not resynced:  # after a download these gradients belong to weights this peer no longer has
                self.optimizer.step(batch_size=batch_size)
        except Exception as err:  # an averaging failure must not kill the peer: it retries next swarm step
            error = f"{type(err).__name__}: {err}"
            log.warning("swarm step failed, will retry at the next one: %s", error)
        self.optimizer.zero_grad()
        elapsed = time.perf_counter() - started
        sent, received = self._allreduce_snapshot()
        state_sent, state_received = state_sync.snapshot()
        allreduce = min(self.traffic.allreduce_seconds.total() - allreduce0, elapsed)
        # hivemind's step either updates or, when this peer is behind, downloads the swarm's state
        downloaded = state_received > state_received1
        applied = self.epoch > epoch0 and not downloaded
        averaged = applied and sent > sent0
        fingerprint = None
        if applied or downloaded:
            fingerprint = self._claim_weights(downloaded=downloaded)
        elif resynced:
            fingerprint = parameter_fingerprint(self.params)
        return GossipStepReport(
            applied=applied, epoch=self.epoch, num_peers=peers, bytes_sent=sent - sent0,
            bytes_received=received - received0, dense_bytes=self.dense_bytes_for(peers) if averaged else 0,
            state_bytes_sent=state_sent - state_sent0, state_bytes_received=state_received - state_received0,
            averaging_seconds=elapsed, allreduce_seconds=allreduce, waiting_seconds=elapsed - allreduce,
            dropped=self.optimizer.rounds_dropped > dropped0, resynced=resynced, fingerprint=fingerprint,
            error=error)

    def settle(self, timeout_s: float | None = None, poll_s: float = 0.5) -> SettleReport:
        """After this peer's last step: leave with the swarm's weights.

        Nobody steps after the last round, so a split there would never reach the claims check.
        Until every other live peer at this peer's epoch claims the same weights there (or
        `timeout_s`, default `gossip.settle_timeout_s`), the peer downloads the swarm's state when
        another peer is ahead or the claims outvote it, and otherwise waits, still serving its
        state, for the peers of its last round to claim theirs (an outvoted one re-claims after
        its download). A live peer behind (its last round dropped) is waited for as well, still
        serving: at its next step it downloads this peer's state, and had we left, it would end on
        older weights with nobody to download from (unless this peer refuses it). A dead one is
        waited for until its progress record expires (`gossip.peer_expiration_s`), never past
        `timeout_s`; it does not make this peer unsettled."""
        timeout_s = self.cfg.settle_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        deadline = started + timeout_s
        downloads, others, tried_epoch, unserved_epoch = 0, {}, None, None
        self._claim_weights(downloaded=False)  # the last round may have been dropped: claim what we hold
        settled = behind = False
        alone = Steady()
        while True:
            try:
                live = {key: p for key, p in self._live_progress().items() if key != self.progress_subkey}
                others = {key: p.epoch for key, p in live.items()}
                # one that this peer's averagers refuse (caught sending NaN, banned) could not download anyway
                behind = any(p.epoch < self.epoch and self.allow.allows(p.libp2p_id) for p in live.values())
                newest = max(others.values(), default=self.epoch)
                # alone is believed after reads that say so for a second (ci38: a peer behind read nobody once,
                # called itself settled and left on the epoch before, while the peer ahead was alive). Its own
                # record is no test: hivemind publishes none for a peer that never reported samples
                steadily_alone = alone.holds(not others)
                if not others:
                    settled = steadily_alone
                elif newest > self.epoch:
                    if newest != tried_epoch:  # once per epoch: a dead peer's record can name one nobody serves
                        tried_epoch = newest
                        downloads += int(self.load_state_from_peers(force=True))
                elif self.consensus is None:
                    settled = True  # nobody is ahead, and without claims there is nothing to compare
                elif (lost := self.consensus.check()) is not None:
                    if lost != unserved_epoch:  # once per epoch: the peers that won may have left already
                        if self._take_swarm_state(lost):
                            downloads += 1
                        else:
                            unserved_epoch = lost
                else:
                    # the peers that shared this last round are the ones that can have split from us
                    level = sum(epoch == self.epoch for epoch in others.values())
                    settled = self.consensus.agreeing_peers(self.epoch) >= level
            except Exception as err:  # network boundary: try again until the deadline
                log.warning("could not compare weights with the swarm: %s", err)
            if (settled and not behind) or time.monotonic() + poll_s > deadline:
                break
            time.sleep(poll_s)
        if not settled:
            log.warning("could not confirm within %.0fs that this peer holds the swarm's weights (%d other peers)",
                        timeout_s, len(others))
        return SettleReport(settled=settled, epoch=self.epoch, peers=len(others) + 1, downloads=downloads,
                            seconds=time.monotonic() - started, fingerprint=parameter_fingerprint(self.params))

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def shutdown(self) -> None:
        """Stop averaging, and withdraw this peer's progress record before returning: hivemind sends the
        withdrawal without waiting, and a process that exits right after would leave the others counting
        it (and dropping their rounds) until the record expires, `gossip.peer_expiration_s` later."""
        tracker = self.optimizer.tracker
        self.optimizer.shutdown()
        try:
            tracker.dht.store(tracker.training_progress_key, None, get_dht_time() + self.cfg.peer_expiration_s,
                              subkey=self.progress_subkey, return_future=True).result(timeout=5)
        except Exception as err:  # network boundary: the record then expires on its own
            log.warning("could not withdraw this peer's progress record: %s", err)
