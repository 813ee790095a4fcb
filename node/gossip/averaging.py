"""`GradientGossip`: one peer's side of swarm-wide gradient averaging.

Built on `hivemind.Optimizer` with `use_local_updates=False`: every peer accumulates its
gradients until the swarm together reaches `target_batch_size` rollouts, then the peers
that are ready form a group, all-reduce their (PowerSGD-compressed, error-fed-back)
gradients and apply the same averaged update with identical optimizer state, so their
weights stay equal up to float error. A peer that falls behind by an epoch downloads the
state from others before its next step; a late joiner does so before its first step. A
peer that dies mid-round costs the others that round only: the all-reduce times out after
`averaging_timeout` and they retry at the next swarm step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable

import torch

from node.gossip.config import GossipConfig
from node.gossip.traffic import ALLREDUCE_SECONDS, STATE_SYNC, CountingCompression, install_traffic_counter

log = logging.getLogger(__name__)


@dataclass
class GossipStepReport:
    applied: bool  # a swarm (or solo) optimizer step happened during this call
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
    resynced: bool = False  # downloaded the swarm's state after a solo update (see _resync_if_diverged)
    error: str | None = None


def _grad_averager_factory(cfg: GossipConfig):
    if cfg.compression != "powersgd":
        return None  # hivemind's default dense GradientAverager
    from hivemind.optim.power_sgd_averager import PowerSGDGradientAverager

    return partial(PowerSGDGradientAverager, averager_rank=cfg.rank)


def _codec(cfg: GossipConfig):
    from hivemind.compression import Float16Compression, NoCompression

    fp16 = cfg.compression == "fp16" or (cfg.compression == "powersgd" and cfg.wire_precision == "fp16")
    return CountingCompression(Float16Compression() if fp16 else NoCompression())


class GradientGossip:
    """Wraps `hivemind.Optimizer`; `step` replaces `optimizer.step()` after `loss.backward()`."""

    def __init__(self, dht, params: Iterable[torch.nn.Parameter],
                 optimizer_factory: Callable[[list], torch.optim.Optimizer], cfg: GossipConfig, *, run_id: str,
                 batch_size_per_step: int, private_key=None, expected_peers: int = 1):
        import hivemind
        from hivemind.compression import Float16Compression, NoCompression

        self.cfg = cfg
        self.traffic, self.state_traffic = install_traffic_counter()
        # counters are per process: remember where this optimizer started (tests may build several)
        self._traffic_at_start = self.traffic.snapshot() + self.state_traffic.snapshot()
        self.params = [p for p in params if p.requires_grad]
        self.numel = sum(p.numel() for p in self.params)
        self._suspect_epoch: int | None = None
        # peers known to be in the swarm (gossip.min_peers): hivemind's tracker lists a peer only after
        # its first gradients, so at start-up it may think it is alone while others step too
        self.expected_peers = expected_peers
        tracker_opts = {"metadata_expiration": cfg.peer_expiration_s}
        if private_key is not None:
            # the progress tracker must sign with the key our DHT's RSASignatureValidator holds: the DHT
            # keeps only the first such validator, and records signed by another key are dropped
            tracker_opts["private_key"] = private_key
        self.optimizer = hivemind.Optimizer(
            dht=dht, run_id=f"{run_id}_gossip", target_batch_size=cfg.target_batch_size,
            batch_size_per_step=batch_size_per_step, optimizer=optimizer_factory, params=self.params,
            matchmaking_time=cfg.matchmaking_time, averaging_timeout=cfg.averaging_timeout,
            load_state_timeout=cfg.load_state_timeout, average_state_every=cfg.average_state_every,
            use_local_updates=False, grad_averager_factory=_grad_averager_factory(cfg),
            grad_compression=_codec(cfg), state_averaging_compression=CountingCompression(Float16Compression()),
            # full precision: fp16 flushes Adam's second moments (often < 6e-8) to zero, and the late
            # joiner's first steps then divide by eps
            load_state_compression=CountingCompression(NoCompression(), STATE_SYNC), verbose=cfg.verbose,
            tracker_opts=tracker_opts,
        )

    @property
    def epoch(self) -> int:
        return self.optimizer.local_epoch

    def num_peers(self) -> int:
        return max(1, int(self.optimizer.tracker.global_progress.num_peers))

    def dense_bytes_for(self, num_peers: int) -> int:
        """Bytes one peer sends in a dense fp32 butterfly all-reduce with `num_peers` peers."""
        return int(4 * self.numel * 2 * (num_peers - 1) / num_peers) if num_peers > 1 else 0

    def traffic_totals(self) -> dict[str, int]:
        """Bytes since this object was built, state downloads at start included."""
        now = self.traffic.snapshot() + self.state_traffic.snapshot()
        sent, received, state_sent, state_received = (a - b for a, b in zip(now, self._traffic_at_start))
        return {"bytes_sent_total": sent, "bytes_received_total": received,
                "state_bytes_sent_total": state_sent, "state_bytes_received_total": state_received}

    def _progress_epochs(self) -> dict[bytes, int]:
        """Epoch of every peer with a live progress record, by public key (read from the DHT, not the
        tracker's cache, which refreshes only every few seconds)."""
        tracker = self.optimizer.tracker
        found = tracker.dht.get(tracker.training_progress_key, latest=True)
        entries = found.value if found is not None and isinstance(found.value, dict) else {}
        return {key: int(entry.value.get("epoch", 0)) for key, entry in entries.items()
                if isinstance(getattr(entry, "value", None), dict)}

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
        try:
            self.optimizer.load_state_from_peers()
        except Exception as err:  # network boundary: a late joiner may still start from its own copy
            log.warning("could not download state from peers: %s", err)
            return False
        return force or self.epoch > before

    def _resync_if_diverged(self) -> bool:
        """After a solo update in a swarm, download the swarm's state if another peer updated differently.

        hivemind applies a peer's own gradients when its averaging round fails, while the others
        apply their average: same epoch, different weights, and nothing would reconcile them until
        the next parameter average. One local step later, the others' progress is published: if one
        is past that epoch, or at it with a smaller key (a fixed tie-break, so two peers that both
        stepped alone do not swap states), this peer takes the swarm's state."""
        suspect, self._suspect_epoch = self._suspect_epoch, None
        if suspect is None:
            return False
        mine = getattr(self.optimizer.tracker, "_local_public_key", b"")
        others = {key: epoch for key, epoch in self._progress_epochs().items() if key != mine}
        if not any(epoch > suspect or (epoch == suspect and key < mine) for key, epoch in others.items()):
            return False  # this peer is ahead or the reference: the others catch up with it
        log.info("epoch %d was applied without the swarm's average: downloading the swarm's state", suspect)
        return self.load_state_from_peers(force=True)

    def step(self, batch_size: int) -> GossipStepReport:
        sent0, received0 = self.traffic.snapshot()
        state_sent0, state_received0 = self.state_traffic.snapshot()
        allreduce0 = ALLREDUCE_SECONDS.total()
        resynced = self._resync_if_diverged()
        epoch0 = self.epoch
        peers = self.num_peers()
        started = time.perf_counter()
        error = None
        try:
            self.optimizer.step(batch_size=batch_size)
        except Exception as err:  # an averaging failure must not kill the peer: it retries next swarm step
            error = f"{type(err).__name__}: {err}"
            log.warning("swarm step failed, will retry at the next one: %s", error)
        self.optimizer.zero_grad()
        elapsed = time.perf_counter() - started
        sent, received = self.traffic.snapshot()
        state_sent, state_received = self.state_traffic.snapshot()
        allreduce = min(ALLREDUCE_SECONDS.total() - allreduce0, elapsed)
        applied = self.epoch > epoch0
        averaged = applied and sent > sent0
        if applied and not averaged and max(peers, self.expected_peers) > 1:
            self._suspect_epoch = self.epoch  # checked at the next step, once the others have reported
        return GossipStepReport(
            applied=applied, epoch=self.epoch, num_peers=peers, bytes_sent=sent - sent0,
            bytes_received=received - received0, dense_bytes=self.dense_bytes_for(peers) if averaged else 0,
            state_bytes_sent=state_sent - state_sent0, state_bytes_received=state_received - state_received0,
            averaging_seconds=elapsed, allreduce_seconds=allreduce, waiting_seconds=elapsed - allreduce,
            resynced=resynced, error=error)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def shutdown(self) -> None:
        self.optimizer.shutdown()
