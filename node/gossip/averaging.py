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
from node.gossip.traffic import CountingCompression, install_traffic_counter

log = logging.getLogger(__name__)


@dataclass
class GossipStepReport:
    applied: bool  # a swarm (or solo) optimizer step happened during this call
    epoch: int  # the swarm step count after this call
    num_peers: int  # peers the tracker currently sees (including this one)
    bytes_sent: int  # averaging payload bytes sent during this call
    bytes_received: int
    dense_bytes: int  # what dense fp32 all-reduce would have sent for the same rounds
    averaging_seconds: float  # wall time of this call (accumulation, matchmaking, all-reduce, step)
    waiting_seconds: float  # part of it spent waiting for peers (matchmaking)
    error: str | None = None


def _grad_averager_factory(cfg: GossipConfig):
    if cfg.compression != "powersgd":
        return None  # hivemind's default dense GradientAverager
    from hivemind.optim.power_sgd_averager import PowerSGDGradientAverager

    return partial(PowerSGDGradientAverager, averager_rank=cfg.rank)


def _codec(cfg: GossipConfig):
    from hivemind.compression import Float16Compression, NoCompression

    return CountingCompression(NoCompression() if cfg.compression == "none" else Float16Compression())


class GradientGossip:
    """Wraps `hivemind.Optimizer`; `step` replaces `optimizer.step()` after `loss.backward()`."""

    def __init__(self, dht, params: Iterable[torch.nn.Parameter],
                 optimizer_factory: Callable[[list], torch.optim.Optimizer], cfg: GossipConfig, *, run_id: str,
                 batch_size_per_step: int):
        import hivemind
        from hivemind.compression import Float16Compression

        self.cfg = cfg
        self.traffic = install_traffic_counter()
        self.params = [p for p in params if p.requires_grad]
        self.numel = sum(p.numel() for p in self.params)
        self.optimizer = hivemind.Optimizer(
            dht=dht, run_id=f"{run_id}.gossip", target_batch_size=cfg.target_batch_size,
            batch_size_per_step=batch_size_per_step, optimizer=optimizer_factory, params=self.params,
            matchmaking_time=cfg.matchmaking_time, averaging_timeout=cfg.averaging_timeout,
            load_state_timeout=cfg.load_state_timeout, average_state_every=cfg.average_state_every,
            use_local_updates=False, grad_averager_factory=_grad_averager_factory(cfg),
            grad_compression=_codec(cfg), state_averaging_compression=CountingCompression(Float16Compression()),
            load_state_compression=CountingCompression(Float16Compression()), verbose=cfg.verbose,
        )

    @property
    def epoch(self) -> int:
        return self.optimizer.local_epoch

    def num_peers(self) -> int:
        return max(1, int(self.optimizer.tracker.global_progress.num_peers))

    def dense_bytes_for(self, num_peers: int) -> int:
        """Bytes one peer sends in a dense fp32 butterfly all-reduce with `num_peers` peers."""
        return int(4 * self.numel * 2 * (num_peers - 1) / num_peers) if num_peers > 1 else 0

    def load_state_from_peers(self) -> bool:
        """Download parameters and optimizer state from a live peer; False if none answered."""
        before = self.epoch
        try:
            self.optimizer.load_state_from_peers()
        except Exception as err:  # network boundary: a late joiner may still start from its own copy
            log.warning("could not download state from peers: %s", err)
            return False
        return self.epoch >= before

    def step(self, batch_size: int) -> GossipStepReport:
        sent0, received0 = self.traffic.snapshot()
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
        applied = self.epoch > epoch0
        averaged = applied and sent > sent0
        return GossipStepReport(
            applied=applied, epoch=self.epoch, num_peers=peers, bytes_sent=sent - sent0,
            bytes_received=received - received0, dense_bytes=self.dense_bytes_for(peers) if averaged else 0,
            averaging_seconds=elapsed, waiting_seconds=elapsed if applied else 0.0, error=error)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def shutdown(self) -> None:
        self.optimizer.shutdown()
