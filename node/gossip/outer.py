"""`OuterSteps`: DiLoCo-style rounds on top of `GradientGossip` (`gossip.mode = "diloco"`).

Each peer takes `gossip.inner_steps` (H) steps of its own inner optimizer (AdamW) on its own
rollouts, then hands the swarm its pseudo-gradient

    delta = params_at_last_sync - params_now

as if it were a gradient: `GradientGossip` all-reduces it through the same path as sync mode's
gradients (PowerSGD with error feedback, fp16 or dense; robust reducers; all-or-nothing rounds;
weights claims) and its optimizer, here SGD with Nesterov momentum (`gossip.outer_lr`,
`gossip.outer_momentum`), applies the average to the weights of the last sync. All peers of a
round therefore hold equal weights after it, exactly as after a sync-mode step, and a late joiner
downloads them with the outer momentum (hivemind's state) and the inner AdamW state, which
hivemind carries as extra tensors (`inner_state_tensors`): those are also averaged with the
parameters every `average_state_every` rounds, and otherwise each peer's own.

A round needs every peer in `step()` at about the same time, but a peer calls it only once per H
inner steps: a peer that arrives before the swarm has reported its pseudo-gradients would return
and train H more steps, missing the round. So at an outer step the peer keeps asking (a step of
zero samples, `AllOrNothingOptimizer` adds nothing for it) until the round happened, it downloaded
the swarm's state, or `matchmaking_time + averaging_timeout` passed. If no round took place, the
pseudo-gradient stays accumulated in hivemind for the next attempt and the peer trains on from
the last sync's weights. If it dropped a round that the others applied (its all-reduce came back
partial), it downloads their state at once (`GradientGossip.catch_up`) rather than H steps later.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from node.gossip.averaging import GossipStepReport, GradientGossip


def inner_state_tensors(inner: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The inner optimizer's per-parameter state, created now as its first step would (zeros, step 0),
    so that hivemind can share these very tensors with late joiners (it copies downloads into them)."""
    tensors = []
    for group in inner.param_groups:
        on_device = bool(group.get("fused") or group.get("capturable"))  # where torch's AdamW keeps `step`
        for param in group["params"]:
            state = inner.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=param.device if on_device else "cpu")
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                if group.get("amsgrad"):
                    state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            tensors += [state[key] for key in sorted(state)]
    return tensors


def build_outer_sgd(params, lr: float, momentum: float) -> torch.optim.Optimizer:
    """The outer optimizer: SGD with Nesterov momentum over hivemind's parameter groups."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0)


class OuterSteps:
    """Inner optimizer steps, and every `inner_steps`-th one an outer step through `gossip`."""

    def __init__(self, gossip: GradientGossip, inner: torch.optim.Optimizer, inner_steps: int,
                 poll_s: float = 0.2, clock: Callable[[], float] = time.monotonic):
        if inner_steps < 1:
            raise ValueError(f"gossip.inner_steps must be at least 1, got {inner_steps}")
        self.gossip = gossip
        self.inner = inner
        self.inner_steps = inner_steps
        self.poll_s = poll_s
        self.clock = clock
        self.params = gossip.params
        # the weights of the last sync; taken again at the first inner step of every period, so that
        # weights loaded after this was built (a checkpoint, a download) are where the next delta starts
        self.anchor = [p.detach().clone() for p in self.params]
        self.steps_since_sync = 0
        self.samples_since_sync = 0

    def step(self, num_samples: int) -> GossipStepReport | None:
        """One inner step with the parameters' current `.grad`; then, if it was the H-th since the
        last sync, the outer step (its report). None: an inner step only."""
        if self.steps_since_sync == 0:
            self.resync_anchor()
        self.inner.step()
        self.inner.zero_grad(set_to_none=False)
        self.steps_since_sync += 1
        self.samples_since_sync += num_samples
        if self.steps_since_sync < self.inner_steps:
            return None
        return self.outer_step()

    @torch.no_grad()
    def outer_step(self) -> GossipStepReport:
        for param, anchor in zip(self.params, self.anchor):
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            torch.sub(anchor, param, out=param.grad)  # the pseudo-gradient, in .grad where hivemind reads it
            param.copy_(anchor)
        report = self.gossip.step(self.samples_since_sync)
        deadline = self.clock() + self.gossip.cfg.matchmaking_time + self.gossip.cfg.averaging_timeout
        while not _moved(report) and not report.dropped and report.error is None and self.clock() < deadline:
            time.sleep(self.poll_s)
            report = _merged(report, self.gossip.step(0))  # zero samples: wait for the round, add nothing
        if report.dropped and not _moved(report):
            report = _merged(report, self.gossip.catch_up())  # the others may have applied it without us
        self.steps_since_sync = 0
        self.samples_since_sync = 0
        if _moved(report):  # a round applied, or the swarm's state was downloaded
            self.resync_anchor()
        return report

    def finish(self) -> GossipStepReport | None:
        """After the last inner step: an outer step for the steps since the last sync, if any. Every peer
        runs as many steps with the same H, so they all end with the same partial period and share this
        round; without it a peer would leave holding weights nobody else has."""
        return self.outer_step() if self.steps_since_sync else None

    @torch.no_grad()
    def resync_anchor(self) -> None:
        """The current weights are the swarm's (after a round or a download): the next delta starts here."""
        for param, anchor in zip(self.params, self.anchor):
            anchor.copy_(param)


def _moved(report: GossipStepReport) -> bool:
    return report.applied or report.fingerprint is not None


def _merged(first: GossipStepReport, last: GossipStepReport) -> GossipStepReport:
    """One report for an outer step's calls: the last call's outcome, the traffic and time of all."""
    return GossipStepReport(
        applied=last.applied, epoch=last.epoch, num_peers=last.num_peers,
        bytes_sent=first.bytes_sent + last.bytes_sent, bytes_received=first.bytes_received + last.bytes_received,
        dense_bytes=first.dense_bytes + last.dense_bytes,
        state_bytes_sent=first.state_bytes_sent + last.state_bytes_sent,
        state_bytes_received=first.state_bytes_received + last.state_bytes_received,
        averaging_seconds=first.averaging_seconds + last.averaging_seconds,
        allreduce_seconds=first.allreduce_seconds + last.allreduce_seconds,
        waiting_seconds=first.waiting_seconds + last.waiting_seconds,
        dropped=first.dropped or last.dropped, resynced=first.resynced or last.resynced,
        fingerprint=last.fingerprint, error=last.error)
