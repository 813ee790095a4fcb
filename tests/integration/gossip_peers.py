"""Real `GradientGossip` peers for tests, several in one process (real DHTs, p2p daemons and averagers
on loopback), on a toy model that keeps every round under a second; and how to step them together."""

from __future__ import annotations

import random
import threading
import time

import torch

from node.gossip.averaging import GradientGossip
from node.gossip.config import GossipConfig, RobustConfig
from node.gossip.fingerprint import parameter_fingerprint
from node.swarm.admission import AdmissionView
from node.training.precision import MasterWeights
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.swarm_dht import DHTConfig, start_dht

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
BATCH = 4
RTOL = 1e-5
STEP_SECONDS = 0.5


class Peer:
    def __init__(self, run: str, seed: int, initial_peers: list[str], compression: str = "powersgd",
                 dtype: torch.dtype = torch.float32, robust: RobustConfig | None = None, batch: int = BATCH,
                 trusted_key: str | None = None, target_batches: int = 2, gossip: dict | None = None):
        """`trusted_key`: a coordinator key whose admission list the peer follows (polled every 0.5 s);
        `target_batches`: the swarm's target batch, in batches of this peer's size; `gossip`: settings
        that replace these tests' `GossipConfig` ones."""
        self.identity = SigningIdentity.generate()
        self.dht = start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=initial_peers),
                             record_validators=build_record_validators(self.identity, run))
        torch.manual_seed(0)  # every peer starts from the same weights, as the embedded model does
        self.model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).to(dtype)
        # a low-precision model trains through float32 masters, as the trainer's does (node.training.precision)
        self.master = MasterWeights(self.model)
        self.data = torch.Generator().manual_seed(seed)  # but sees its own batches
        self.batch = batch
        # matchmaking_time above hivemind's 3 s request timeout, as its matchmaking asks; shorter ones
        # kept failing to form groups on a loaded 2-core machine
        settings = dict(target_batch_size=target_batches * batch, compression=compression, matchmaking_time=4.0,
                        averaging_timeout=15, load_state_timeout=20, peer_expiration_s=6,
                        average_state_every=10_000, robust=robust or RobustConfig())
        cfg = GossipConfig(**settings | (gossip or {}))
        self.admission = (AdmissionView(self.dht, run, trusted_key, poll_interval_s=0.5,
                                        dht_lock=threading.Lock()).start() if trusted_key else None)
        self.gossip = GradientGossip(self.dht, self.master.params,
                                     lambda params: torch.optim.AdamW(params, lr=1e-2), cfg, run_id=run,
                                     batch_size_per_step=batch, identity=self.identity, admission=self.admission)

    def backward(self) -> None:
        """This peer's gradients of its next batch, in its float32 masters."""
        inputs = torch.randn(self.batch, 16, generator=self.data).to(self.master.model_dtype)
        loss = (self.model(inputs) - inputs[:, :4]).float().pow(2).mean()
        self.master.scale(loss).backward()  # float16 models back-propagate a scaled loss
        self.master.accumulate_grads()

    def swarm_step(self, claimed_batch: int):
        report = self.gossip.step(claimed_batch)
        if report.applied or report.fingerprint is not None:
            self.master.push_to_model()
        return report

    def local_step(self):
        self.backward()
        return self.swarm_step(self.batch)

    def loss(self) -> float:
        """The task loss on a fixed batch no peer trains on."""
        inputs = torch.randn(256, 16, generator=torch.Generator().manual_seed(12345)).to(self.master.model_dtype)
        with torch.no_grad():
            return float((self.model(inputs) - inputs[:, :4]).float().pow(2).mean())

    def fingerprint(self) -> list[float]:
        return parameter_fingerprint(self.master.params)

    def close(self):
        if self.dht is None:
            return
        if self.admission is not None:
            self.admission.stop()
        self.gossip.shutdown()
        self.dht.shutdown()
        self.dht = None


JITTER = random.Random(0)


def step_together(peers, pool):
    """One local step on every peer at about the same time. Real peers never step in lockstep: each
    start is shifted by up to STEP_SECONDS, so that a peer downloading state and one applying an
    update do not meet at the same moment round after round."""
    def step_later(peer, delay):
        time.sleep(delay)
        return peer.local_step()
    futures = [pool.submit(step_later, p, JITTER.uniform(0, STEP_SECONDS)) for p in peers]
    return [future.result(timeout=60) for future in futures]


def rounds_until(peers, pool, epoch: int, timeout: float = 150.0):
    """Step all peers together, a local step every STEP_SECONDS or so, until all are at the same epoch,
    at least `epoch`. (One can be a step behind for a while: its side of an all-reduce failed, it
    applied nothing, and it downloads the others' state at its next step.)"""
    reports, deadline = [], time.monotonic() + timeout
    while min(p.gossip.epoch for p in peers) < epoch or len({p.gossip.epoch for p in peers}) > 1:
        assert time.monotonic() < deadline, f"epochs {[p.gossip.epoch for p in peers]} after {timeout}s, wanted {epoch}"
        reports.append(step_together(peers, pool))
        time.sleep(STEP_SECONDS)  # a real local step takes seconds; the progress tracker reports at its pace
    return reports
