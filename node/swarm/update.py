"""`GossipUpdate`: the swarm's `UpdateRule`, averaging compressed gradients before each step.

Gradients are clipped locally first, so one peer's outlier batch cannot dominate the
average. hivemind sees only the float32 master weights (node/training/precision.py): the
gradients it averages (dense, fp16 on the wire or PowerSGD with its error feedback), the
optimizer state and the state it serves or downloads are float32 whatever the model computes
in; the model is refreshed from the masters after every call that can change them. Every step
reports `GossipCounters` (traffic, rounds, weights checks), which the peer logs, publishes in its
status record and shows on the dashboard.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from node.gossip.averaging import GossipStepReport, GradientGossip, TrafficTotals
from node.gossip.outer import OuterSteps, build_outer_sgd, inner_state_tensors
from node.training.precision import MasterWeights
from node.training.seams import UpdateReport, build_adamw, clip_gradients


@dataclass(frozen=True)
class GossipCounters:
    """What the swarm side of one step did, and the peer's running totals (metrics.jsonl columns)."""

    epoch: int  # swarm updates this peer's weights have seen
    num_peers: int  # training peers it sees, itself included
    bytes_sent: int  # all-reduce payload bytes of this step
    bytes_received: int
    bytes_sent_total: int  # since start: all-reduce payload bytes
    bytes_received_total: int
    state_bytes_sent_total: int  # since start: full state served to peers that joined late or fell behind
    state_bytes_received_total: int  # since start: full state downloaded
    gradient_bytes_sent_total: int  # since start, of bytes_sent_total: (pseudo-)gradient all-reduces
    gradient_bytes_received_total: int
    state_averaging_bytes_sent_total: int  # since start, of bytes_sent_total: parameter averaging
    state_averaging_bytes_received_total: int
    dense_bytes_total: int  # what dense fp32 all-reduces would have sent for the rounds averaged so far
    compression_ratio: float | None  # dense fp32 bytes / bytes sent in this step's round (None: no round)
    time_averaging: float  # seconds in the swarm step: waiting for peers, all-reduce, optimizer step
    time_allreduce: float  # part of it inside formed groups' all-reduces
    time_waiting: float  # the rest
    averaging_error: str | None  # the swarm step's error, if it failed
    rounds_averaged: int  # since start, per kind of outcome
    rounds_failed: int
    rounds_dropped: int  # failed to average: applied nothing (node.gossip.hivemind_internals.optimizer)
    rounds_partial: int  # of those, rounds whose all-reduce came back with parts missing
    resyncs: int  # downloads of the swarm's state after the weights claims outvoted this peer
    weights_disagreements: int | None  # times its claim was outvoted (None: weights not verified)
    param_fingerprint: list[float] | None  # of the weights, when they changed in this step

    def metrics_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        if row["param_fingerprint"] is None:
            del row["param_fingerprint"]
        return row


@dataclass(frozen=True)
class SettleOutcome:
    """How the peer's last swarm step ended (the metrics row of kind "settle")."""

    settled: bool  # every other live peer claimed the same weights at its final epoch (or none was left)
    epoch: int
    num_peers: int
    settle_downloads: int
    time_settling: float
    param_fingerprint: list[float]
    traffic: TrafficTotals

    def metrics_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        traffic = row.pop("traffic")
        return row | traffic


class GossipUpdate:
    """Clip, then hand the gradients to `GradientGossip` (which averages and steps)."""

    def __init__(self, gossip: GradientGossip, master: MasterWeights, grad_clip: float,
                 outer: OuterSteps | None = None):
        """`outer`: diloco mode (inner steps here, every H-th an outer step); None: sync mode."""
        self.gossip = gossip
        self.outer = outer
        self.master = master
        self.params = master.params
        self.grad_clip = grad_clip
        self.dense_bytes_total = 0
        self.rounds_averaged = 0
        self.rounds_failed = 0
        self.resyncs = 0
        self.rounds_dropped = 0

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.gossip.optimizer

    def load_state_from_peers(self) -> bool:
        loaded = self.gossip.load_state_from_peers()
        if loaded and self.outer is not None:
            self.outer.resync_anchor()
        self.master.push_to_model()
        return loaded

    def settle(self) -> SettleOutcome:
        """After the last step: end with the swarm's weights (`GradientGossip.settle`)."""
        if self.outer is not None:
            self.outer.finish()
        report = self.gossip.settle()
        if self.outer is not None and report.downloads:
            self.outer.resync_anchor()
        self.master.push_to_model()  # it may have downloaded them
        return SettleOutcome(settled=report.settled, epoch=report.epoch, num_peers=report.peers,
                             settle_downloads=report.downloads, time_settling=report.seconds,
                             param_fingerprint=report.fingerprint, traffic=self.gossip.traffic_totals())

    def shutdown(self) -> None:
        self.gossip.shutdown()

    def apply(self, num_samples: int) -> UpdateReport:
        norm, finite = clip_gradients(self.params, self.grad_clip)
        self.master.after_update(finite)
        if not finite:
            self.gossip.zero_grad()
            return UpdateReport(False, norm, skipped="non-finite gradient")
        if self.outer is not None:
            report = self.outer.step(num_samples)
            report = self._inner_report() if report is None else report  # None: the swarm was not asked
        else:
            report = self.gossip.step(num_samples)
        # an update, a download or a resync; diloco moves the weights at every call (an inner step, or
        # back to the last sync's weights)
        if self.outer is not None or report.applied or report.fingerprint is not None:
            self.master.push_to_model()
        self.dense_bytes_total += report.dense_bytes
        self.rounds_failed += int(report.error is not None)
        self.rounds_averaged += int(report.error is None and report.dense_bytes > 0)
        self.resyncs += int(report.resynced)
        self.rounds_dropped += int(report.dropped)
        consensus = self.gossip.consensus
        counters = GossipCounters(
            epoch=report.epoch, num_peers=report.num_peers, bytes_sent=report.bytes_sent,
            bytes_received=report.bytes_received, **dataclasses.asdict(self.gossip.traffic_totals()),
            dense_bytes_total=self.dense_bytes_total,
            compression_ratio=report.dense_bytes / report.bytes_sent if report.bytes_sent else None,
            time_averaging=report.averaging_seconds, time_allreduce=report.allreduce_seconds,
            time_waiting=report.waiting_seconds, averaging_error=report.error,
            rounds_averaged=self.rounds_averaged, rounds_failed=self.rounds_failed,
            rounds_dropped=self.rounds_dropped, rounds_partial=self.gossip.optimizer.rounds_partial,
            resyncs=self.resyncs,
            weights_disagreements=consensus.disagreements if consensus is not None else None,
            # lets anyone check that peers at the same epoch hold the same weights
            param_fingerprint=report.fingerprint)
        return UpdateReport(report.applied or self.outer is not None, norm, details=counters,
                            weights_replaced=report.resynced or report.state_bytes_received > 0)

    def _inner_report(self) -> GossipStepReport:
        return GossipStepReport(applied=False, epoch=self.gossip.epoch, num_peers=self.gossip.num_peers(),
                                bytes_sent=0, bytes_received=0, dense_bytes=0, state_bytes_sent=0,
                                state_bytes_received=0, averaging_seconds=0.0, allreduce_seconds=0.0,
                                waiting_seconds=0.0)


def build_gossip_update(dht, master: MasterWeights, cfg, identity, admission=None) -> GossipUpdate:
    """The swarm's update rule for a `NodeConfig`: AdamW on the float32 masters behind compressed
    gradient averaging; `admission` (an AdmissionView) says who may take part."""
    diloco = cfg.gossip.mode == "diloco"
    inner = build_adamw(master.params, cfg.optim) if diloco else None
    if diloco:  # the swarm's optimizer is the outer one; AdamW steps locally between syncs
        factory = lambda ps: build_outer_sgd(ps, cfg.gossip.outer_lr, cfg.gossip.outer_momentum)  # noqa: E731
    else:
        factory = lambda ps: build_adamw(ps, cfg.optim)  # noqa: E731
    gossip = GradientGossip(
        dht, master.params, factory, cfg.gossip, run_id=cfg.run_id,
        batch_size_per_step=cfg.algo.prompts_per_step * cfg.sampling.group_size, identity=identity,
        admission=admission, extra_tensors=inner_state_tensors(inner) if diloco else ())
    outer = OuterSteps(gossip, inner, cfg.gossip.inner_steps) if diloco else None
    return GossipUpdate(gossip, master, cfg.optim.grad_clip, outer)
