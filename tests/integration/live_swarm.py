"""A live coordinator (real DHT, gRPC, HTTP, SQLite) fed by fake peers that publish real, signed DHT
records: per-step meta-signals built through shaping and schema-2 status reports with deciles.
The test drives the rounds (`LiveSwarm.round()`), so what the dashboard shows is known exactly.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hivemind.utils import get_dht_time

from coordinator.config import CoordinatorConfig
from coordinator.server import Coordinator
from plumbing.dht_records import expires_in, fetch, fetch_meta_signals, poll, publish
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.swarm_dht import DHTConfig, start_dht
from protos import records, swarm_pb2
from shaping import IndicatorStats, RankIndicators

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
VERSION = "0.1.0"


def deciles(values: torch.Tensor) -> swarm_pb2.Deciles | None:
    finite = values[torch.isfinite(values)]
    if not finite.numel():
        return None
    quantiles = torch.quantile(finite, torch.linspace(0, 1, 11, dtype=torch.float64))
    return swarm_pb2.Deciles(count=int(finite.numel()), values=[float(q) for q in quantiles])


@dataclass
class LivePeer:
    index: int
    identity: SigningIdentity
    dht: object
    step: int = 0
    epoch: int = 0
    failures: int = 0
    version: str = VERSION
    published: list[swarm_pb2.MetaSignal] = field(default_factory=list)
    statuses: list[swarm_pb2.PeerStatus] = field(default_factory=list)

    @property
    def peer_id(self) -> str:
        return self.identity.fingerprint


class LiveSwarm:
    """A coordinator whose rounds the test drives, and `num_peers` fake peers on their own DHT nodes."""

    def __init__(self, tmp: Path, num_peers: int, *, run: str = "dashboard-live", seed: int = 0,
                 health: dict | None = None):
        self.run, self.rng = run, random.Random(seed)
        cfg = CoordinatorConfig(run=run, listen="127.0.0.1:0", http_listen="127.0.0.1:0", db_path=str(tmp / "h.db"),
                                round_interval=3600, balance_ttl=7200, dht=DHTConfig(host_maddrs=LOOPBACK),
                                health=health or {})
        self.coordinator = Coordinator(cfg).start()
        self.peers: list[LivePeer] = []
        self.results = []
        self.failing: set[int] = set()   # peers whose averaging fails every step
        self.lagging: set[int] = set()   # peers whose optimizer epoch stops advancing
        self.measures_kl = True          # False: peers train without a reference policy (KL not measured)
        try:
            for index in range(num_peers):
                identity = SigningIdentity.generate()
                dht = start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=self.coordinator.visible_maddrs()),
                                record_validators=build_record_validators(identity, run))
                self.peers.append(LivePeer(index, identity, dht))
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return f"http://{self.coordinator.http_address}"

    def batch(self, peer: LivePeer, size: int = 16) -> tuple[RankIndicators, torch.Tensor, torch.Tensor]:
        rng, progress = self.rng, len(self.results)
        level = 0.25 + 0.5 * progress / (progress + 12) + 0.04 * peer.index
        er = torch.tensor([rng.gauss(18 + 1.5 * peer.index - 0.05 * progress, 2.5) for _ in range(size)],
                          dtype=torch.float64)
        erv = torch.tensor([rng.gauss(0.8, 0.6) if rng.random() > 0.15 else float("nan") for _ in range(size)],
                           dtype=torch.float64)
        era = torch.tensor([rng.gauss(0.15, 0.35) if rng.random() > 0.3 else float("nan") for _ in range(size)],
                           dtype=torch.float64)
        scores = torch.tensor([1.0 if rng.random() < level else -0.5 for _ in range(size)], dtype=torch.float64)
        gates = torch.tensor([rng.betavariate(4, 4) for _ in range(int(torch.isfinite(era).sum()))],
                             dtype=torch.float64)
        return RankIndicators(er, erv, era), scores, gates

    def publish(self, peer: LivePeer) -> None:
        """One training step of `peer`: its signed meta-signal and status report, stored in the DHT."""
        indicators, scores, gates = self.batch(peer)
        stats = IndicatorStats.from_batch(indicators, scores, gates)
        peer.step += 1
        peer.epoch += peer.index not in self.lagging
        peer.failures += peer.index in self.failing
        now = get_dht_time()
        record = records.build(swarm_pb2.MetaSignal, run_id=self.run, peer_id=peer.peer_id, step=peer.step,
                               stats=records.stats_message(stats), mean_gate=stats.gate_mean, num_rollouts=len(scores),
                               num_tokens=700 + 40 * peer.index, published_at=now)
        assert publish(peer.dht, record, expires_in(600), identity=peer.identity)
        means = stats.means()
        latest = self.results[-1].record if self.results else None
        status = records.build(
            swarm_pb2.PeerStatus, run_id=self.run, peer_id=peer.peer_id, version=peer.version,
            address=f"/ip4/127.0.0.1/tcp/{4000 + peer.index}",
            reachability=swarm_pb2.REACHABILITY_RELAYED if peer.index == 1 else swarm_pb2.REACHABILITY_DIRECT,
            step=peer.step, throughput=6.0 + peer.index,
            bytes_sent=250_000 * peer.step, bytes_received=250_000 * peer.step + 1234, reported_at=now,
            tokens_per_s=350.0 + 20 * peer.index, step_seconds=1.2, compression_ratio=19.3, reward=means["score"],
            accuracy=float((scores > 0).double().mean()), heldout_accuracy=0.3 + 0.01 * peer.step + 0.01 * peer.index,
            kl=0.002 * peer.step if self.measures_kl else None, er=means["er"], erv=means["erv"], era=means["era"],
            gate=stats.gate_mean,
            aux=0.03 + 0.002 * peer.step, epoch=peer.epoch, num_peers_seen=len(self.peers),
            averaging_rounds=peer.step - peer.failures, averaging_failures=peer.failures,
            last_averaging_error="TimeoutError: averaging group did not assemble" if peer.index in self.failing else "",
            baselines_source="global" if latest else "local", balance_round=latest.round if latest else None,
            er_deciles=deciles(indicators.er), erv_deciles=deciles(indicators.erv), era_deciles=deciles(indicators.era),
            staleness=peer.index % 2, gradient_bytes_sent=200_000 * peer.step,
            state_averaging_bytes_sent=50_000 * peer.step, gradient_bytes_received=200_000 * peer.step + 1234,
            state_averaging_bytes_received=50_000 * peer.step,
            state_bytes_served=0, state_bytes_downloaded=4_000_000 if peer.index == 3 else 0)
        assert publish(peer.dht, status, expires_in(600), identity=peer.identity)
        peer.published.append(record)
        peer.statuses.append(status)

    def wait_visible(self, timeout: float = 20.0) -> None:
        """Until the coordinator's DHT node sees every peer's latest meta-signal and status."""
        dht = self.coordinator.dht
        wanted = {(p.peer_id, p.step) for p in self.peers if p.published}
        reports = {(p.peer_id, p.statuses[-1].reported_at) for p in self.peers if p.statuses}
        polled = poll(lambda: fetch_meta_signals(dht, self.run),
                      lambda r: wanted <= {(x.peer_id, x.step) for x in r.records}, deadline=time.monotonic() + timeout)
        assert polled.complete, "meta-signals did not reach the coordinator's DHT node"
        polled = poll(lambda: fetch(dht, self.run, swarm_pb2.PeerStatus),
                      lambda r: reports <= {(x.peer_id, x.reported_at) for x in r.records},
                      deadline=time.monotonic() + timeout)
        assert polled.complete, "status reports did not reach the coordinator's DHT node"

    def round(self, peers: list[LivePeer] | None = None):
        """Every peer (or those given) takes a step; then the coordinator runs a round and re-evaluates health."""
        for peer in self.peers if peers is None else peers:
            self.publish(peer)
        self.wait_visible()
        result = self.coordinator.run_round()
        assert result is not None
        self.results.append(result)
        self.coordinator.monitor.refresh(get_dht_time())
        return result

    def stop(self) -> None:
        for peer in self.peers:
            peer.dht.shutdown()
        self.coordinator.stop()
