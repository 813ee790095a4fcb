"""A diloco swarm (real DHTs, p2p daemons and averagers on loopback, in one process): a late joiner
downloads both the outer state (weights, Nesterov momentum) and the inner AdamW state of a peer, then
takes part in the next outer step with equal weights; a peer whose outer round came back partial takes
the swarm's weights in that same outer step, and shares the next round."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from gossip_peers import LOOPBACK, STEP_SECONDS

from node.gossip.averaging import GradientGossip
from node.gossip.config import GossipConfig
from node.gossip.consensus import fingerprints_agree
from node.gossip.fingerprint import parameter_fingerprint
from node.gossip.outer import OuterSteps, build_outer_sgd, inner_state_tensors
from node.swarm.update import GossipUpdate
from node.training.precision import MasterWeights
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.swarm_dht import DHTConfig, start_dht, visible_addresses

pytestmark = pytest.mark.integration

BATCH = 4
INNER = 2
RTOL = 1e-5


class DilocoPeer:
    def __init__(self, run: str, seed: int, initial_peers: list[str], num_peers: int, compression: str = "powersgd"):
        self.identity = SigningIdentity.generate()
        self.dht = start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=initial_peers),
                             record_validators=build_record_validators(self.identity, run))
        torch.manual_seed(seed)  # a late joiner starts from other weights: only a download makes them equal
        self.model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        self.master = MasterWeights(self.model)
        self.data = torch.Generator().manual_seed(seed)
        cfg = GossipConfig(mode="diloco", inner_steps=INNER, target_batch_size=num_peers * INNER * BATCH,
                           compression=compression,
                           matchmaking_time=4.0, averaging_timeout=15, load_state_timeout=20, peer_expiration_s=6,
                           average_state_every=10_000, outer_lr=0.7, outer_momentum=0.9)
        self.inner = torch.optim.AdamW(self.master.params, lr=1e-2)
        self.gossip = GradientGossip(self.dht, self.master.params,
                                     lambda ps: build_outer_sgd(ps, cfg.outer_lr, cfg.outer_momentum), cfg,
                                     run_id=run, batch_size_per_step=BATCH, identity=self.identity,
                                     extra_tensors=inner_state_tensors(self.inner))
        self.update = GossipUpdate(self.gossip, self.master, grad_clip=1.0,
                                   outer=OuterSteps(self.gossip, self.inner, INNER))

    def local_step(self):
        inputs = torch.randn(BATCH, 16, generator=self.data)
        (self.model(inputs) - inputs[:, :4]).pow(2).mean().backward()
        return self.update.apply(BATCH)

    def inner_state(self) -> list[torch.Tensor]:
        return [t.clone() for t in inner_state_tensors(self.inner)]

    def outer_momentum(self) -> list[torch.Tensor]:
        opt = self.gossip.optimizer.state_averager.optimizer
        return [opt.state[p]["momentum_buffer"].clone() for g in opt.param_groups for p in g["params"]]

    def close(self):
        self.update.shutdown()
        self.dht.shutdown()


def outer_rounds(peers, pool, epoch: int, timeout: float = 120.0) -> None:
    """Local steps on all peers together until every one is at `epoch` or beyond."""
    deadline = time.monotonic() + timeout
    while min(p.gossip.epoch for p in peers) < epoch:
        assert time.monotonic() < deadline, f"epochs {[p.gossip.epoch for p in peers]} after {timeout}s"
        list(pool.map(lambda p: p.local_step(), peers))
        time.sleep(STEP_SECONDS / 5)


def test_a_late_joiner_downloads_inner_and_outer_state_then_shares_the_next_outer_step():
    run = "diloco-late"
    a = DilocoPeer(run, seed=0, initial_peers=[], num_peers=2)
    b = DilocoPeer(run, seed=0, initial_peers=visible_addresses(a.dht), num_peers=2)
    late = None
    try:
        with ThreadPoolExecutor(3) as pool:
            outer_rounds([a, b], pool, epoch=2)
            assert fingerprints_agree(parameter_fingerprint(a.master.params), parameter_fingerprint(b.master.params),
                                      RTOL)
            late = DilocoPeer(run, seed=7, initial_peers=visible_addresses(a.dht), num_peers=2)
            assert late.update.load_state_from_peers()

            donor_epoch = a.gossip.epoch
            assert late.gossip.epoch == donor_epoch
            assert fingerprints_agree(parameter_fingerprint(late.master.params),
                                      parameter_fingerprint(a.master.params), RTOL)
            for mine, theirs in zip(late.outer_momentum(), a.outer_momentum()):
                torch.testing.assert_close(mine, theirs)
            # the inner AdamW state came along: moments and step count, not a fresh optimizer's zeros
            donor_inner = a.inner_state()
            assert any(t.abs().sum() > 0 for t in donor_inner)
            for mine, theirs in zip(late.inner_state(), donor_inner):
                torch.testing.assert_close(mine, theirs)
            # its next delta starts from the downloaded weights
            for anchor, param in zip(late.update.outer.anchor, late.master.params):
                torch.testing.assert_close(anchor, param.detach())

            outer_rounds([a, b, late], pool, epoch=donor_epoch + 1)
            settled = list(pool.map(lambda p: p.update.settle(), [a, b, late]))
        assert len({s.epoch for s in settled}) == 1 and all(s.settled for s in settled)
        assert all(fingerprints_agree(settled[0].param_fingerprint, s.param_fingerprint, RTOL) for s in settled[1:])
    finally:
        for peer in (a, b, late):
            if peer is not None:
                peer.close()


def test_a_peer_whose_outer_round_came_back_partial_takes_the_swarms_weights_in_the_same_outer_step(reducer_faults):
    """Without the catch-up it would train H inner steps on the weights the swarm left, download at its next
    outer step, and arrive at that round a download late (docs/benchmarks.md, WAN: out of phase to the end).
    Dense averaging: one all-reduce per round, so the injected fault ends b's round partial, not failed."""
    run = "diloco-partial"
    a = DilocoPeer(run, seed=0, initial_peers=[], num_peers=2, compression="none")
    b = DilocoPeer(run, seed=0, initial_peers=visible_addresses(a.dht), num_peers=2, compression="none")
    try:
        with ThreadPoolExecutor(2) as pool:
            outer_rounds([a, b], pool, epoch=1)
            assert a.gossip.epoch == b.gossip.epoch
            epoch, partials = a.gossip.epoch, b.gossip.optimizer.rounds_partial
            reducer_faults.fail_next(b.dht.peer_id)
            period = [list(pool.map(lambda p: p.local_step(), [a, b])) for _ in range(INNER)]
            assert reducer_faults.remaining.value == 0, "the fault was never injected"
            assert b.gossip.optimizer.rounds_partial > partials, "b's round did not come back partial"
            outer_a, outer_b = period[-1]
            assert outer_a.details.epoch == epoch + 1 and outer_a.details.state_bytes_received_total == 0
            # b dropped the round and, in the same outer step, downloaded the state a's round made
            assert outer_b.weights_replaced and outer_b.details.epoch == epoch + 1
            assert fingerprints_agree(parameter_fingerprint(a.master.params), parameter_fingerprint(b.master.params),
                                      RTOL)
            for anchor, param in zip(b.update.outer.anchor, b.master.params):
                torch.testing.assert_close(anchor, param.detach())  # its next delta starts from the swarm's weights
            # and the next outer round has both: averaged by each, no download
            received = b.gossip.traffic_totals().state_bytes_received_total
            period = [list(pool.map(lambda p: p.local_step(), [a, b])) for _ in range(INNER)]
            assert [r.details.epoch for r in period[-1]] == [epoch + 2] * 2
            assert b.gossip.traffic_totals().state_bytes_received_total == received
        assert fingerprints_agree(parameter_fingerprint(a.master.params), parameter_fingerprint(b.master.params), RTOL)
    finally:
        for peer in (a, b):
            peer.close()
