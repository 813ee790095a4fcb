"""`OuterSteps` (gossip.mode = "diloco") against an in-memory swarm of one: the pseudo-gradient it hands
the swarm, the outer Nesterov step, the wait for a round that has not happened yet, and the config."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from node.gossip.averaging import GossipStepReport
from node.gossip.config import GossipConfig
from node.gossip.outer import OuterSteps, build_outer_sgd


class OneGossip:
    """What OuterSteps needs of GradientGossip: it averages with nobody and applies `outer` to the
    pseudo-gradient it finds in `.grad`, after `rounds_late` calls that found no round yet. With `drops`,
    every round is dropped; `catch_up` then brings `swarm_weights` (the others applied the round), or
    nothing when None."""

    def __init__(self, params, outer_lr=1.0, outer_momentum=0.0, rounds_late=0, drops=False, swarm_weights=None):
        self.params = params
        self.cfg = GossipConfig(matchmaking_time=1.0, averaging_timeout=1.0)
        self.outer = build_outer_sgd(params, outer_lr, outer_momentum)
        self.rounds_late, self.drops, self.swarm_weights = rounds_late, drops, swarm_weights
        self.calls: list[int] = []
        self.catch_ups = 0
        self.seen: list[list[torch.Tensor]] = []
        self.epoch = 0

    def step(self, num_samples: int) -> GossipStepReport:
        self.calls.append(num_samples)
        applied = len(self.calls) > self.rounds_late and not self.drops
        if applied:
            self.seen.append([p.grad.clone() for p in self.params])
            self.outer.step()
            self.epoch += 1
        for p in self.params:
            p.grad.zero_()
        return _report(applied, self.epoch, dropped=self.drops)

    @torch.no_grad()
    def catch_up(self) -> GossipStepReport:
        self.catch_ups += 1
        if self.swarm_weights is None:
            return _report(False, self.epoch)
        for param, weights in zip(self.params, self.swarm_weights):
            param.copy_(weights)
        self.epoch += 1
        return _report(False, self.epoch, fingerprint=[float(p.sum()) for p in self.params])


def _report(applied: bool, epoch: int, dropped: bool = False, fingerprint=None) -> GossipStepReport:
    return GossipStepReport(applied=applied, epoch=epoch, num_peers=1, bytes_sent=0, bytes_received=0, dense_bytes=0,
                            state_bytes_sent=0, state_bytes_received=0, averaging_seconds=0.0, allreduce_seconds=0.0,
                            waiting_seconds=0.0, dropped=dropped, fingerprint=fingerprint)


def _inner_steps(param, outer: OuterSteps, num: int) -> list[GossipStepReport | None]:
    reports = []
    for _ in range(num):
        param.grad = torch.ones_like(param)
        reports.append(outer.step(num_samples=8))
    return reports


def test_the_swarm_sees_the_pseudo_gradient_every_h_steps_and_applies_it_from_the_last_sync():
    param = torch.nn.Parameter(torch.zeros(3))
    gossip = OneGossip([param], outer_lr=1.0, outer_momentum=0.0)
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=4)

    reports = _inner_steps(param, outer, 4)

    assert reports[:3] == [None, None, None] and reports[3].applied
    assert gossip.calls == [32]  # one outer step with the samples of its 4 inner steps
    # 4 SGD steps of 0.1 on a gradient of ones moved the weights by -0.4: delta = before - after = +0.4
    torch.testing.assert_close(gossip.seen[0][0], torch.full((3,), 0.4))
    # outer lr 1 without momentum lands on the local weights, and the next delta starts there
    torch.testing.assert_close(param.detach(), torch.full((3,), -0.4))
    torch.testing.assert_close(outer.anchor[0], param.detach())


def test_nesterov_momentum_carries_over_outer_steps():
    param = torch.nn.Parameter(torch.zeros(1))
    gossip = OneGossip([param], outer_lr=0.5, outer_momentum=0.9)
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=2)

    _inner_steps(param, outer, 4)

    # delta 0.2 each round; Nesterov: buf = 0.9 buf + d, step = lr (d + 0.9 buf)
    first = 0.5 * (0.2 + 0.9 * 0.2)
    second = 0.5 * (0.2 + 0.9 * (0.9 * 0.2 + 0.2))
    assert param.item() == pytest.approx(-(first + second), rel=1e-5)


def test_an_early_peer_waits_for_the_round_without_adding_samples():
    param = torch.nn.Parameter(torch.zeros(2))
    gossip = OneGossip([param], rounds_late=3)
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=2, poll_s=0.0)

    report = _inner_steps(param, outer, 2)[-1]

    assert report.applied
    assert gossip.calls == [16, 0, 0, 0]  # its samples once, then zero-sample calls until the round came


def test_without_a_round_the_peer_trains_on_from_the_last_sync():
    param = torch.nn.Parameter(torch.zeros(2))
    gossip = OneGossip([param], rounds_late=10_000)
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=2, poll_s=0.01)

    report = _inner_steps(param, outer, 2)[-1]

    assert not report.applied
    torch.testing.assert_close(param.detach(), torch.zeros(2))  # back at the anchor, the delta left with hivemind


def test_a_peer_that_dropped_a_round_the_others_applied_takes_their_weights_at_once():
    param = torch.nn.Parameter(torch.zeros(2))
    gossip = OneGossip([param], drops=True, swarm_weights=[torch.full((2,), 3.0)])
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=2, poll_s=0.0)

    report = _inner_steps(param, outer, 2)[-1]

    # in the same outer step, not H inner steps later on the weights the swarm left
    assert report.dropped and report.fingerprint is not None and gossip.catch_ups == 1
    torch.testing.assert_close(param.detach(), torch.full((2,), 3.0))
    gossip.drops = False
    _inner_steps(param, outer, 2)
    torch.testing.assert_close(gossip.seen[0][0], torch.full((2,), 0.2))  # the next delta starts there


def test_a_round_nobody_applied_leaves_the_peer_at_the_last_sync():
    param = torch.nn.Parameter(torch.zeros(2))
    gossip = OneGossip([param], drops=True, swarm_weights=None)
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=2, poll_s=0.0)

    report = _inner_steps(param, outer, 2)[-1]

    assert report.dropped and report.fingerprint is None and gossip.catch_ups == 1
    torch.testing.assert_close(param.detach(), torch.zeros(2))
    torch.testing.assert_close(outer.anchor[0], torch.zeros(2))


def test_diloco_settings_are_checked():
    assert GossipConfig().mode == "sync"
    with pytest.raises(ValidationError, match="inner_steps"):
        GossipConfig(mode="diloco", inner_steps=0)
    with pytest.raises(ValidationError, match="outer_momentum"):
        GossipConfig(outer_momentum=1.0)
    with pytest.raises(ValidationError, match="mode"):
        GossipConfig(mode="async")


def test_the_next_delta_starts_from_weights_loaded_after_the_outer_steps_were_built():
    param = torch.nn.Parameter(torch.zeros(2))
    gossip = OneGossip([param])
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=2)
    with torch.no_grad():
        param.fill_(5.0)  # a checkpoint (or a download) loaded before the first step

    _inner_steps(param, outer, 2)

    torch.testing.assert_close(gossip.seen[0][0], torch.full((2,), 0.2))  # not 0 - 4.8


def test_finish_shares_the_last_partial_period_and_nothing_when_there_is_none():
    param = torch.nn.Parameter(torch.zeros(2))
    gossip = OneGossip([param])
    outer = OuterSteps(gossip, torch.optim.SGD([param], lr=0.1), inner_steps=4)

    _inner_steps(param, outer, 6)
    report = outer.finish()

    assert report.applied and gossip.calls == [32, 16]  # the 2 steps after the last sync, with their samples
    assert outer.finish() is None
