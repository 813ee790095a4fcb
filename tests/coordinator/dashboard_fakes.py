"""A synthetic swarm history for dashboard tests: a real Ledger, HistoryStore and Monitor fed with
real records (meta-signals built through shaping, schema-2 status reports with deciles) on a
simulated clock, so every number the API serves can be checked against what was fed in.

Also serves it for front-end work (no DHT, no peers):

    PYTHONPATH=. python tests/coordinator/dashboard_fakes.py --peers 40 --rounds 120 --port 8080
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from coordinator_fakes import RUN, batch_stats, meta_record, peer_status

from coordinator.config import HealthConfig
from coordinator.events import EventLog
from coordinator.ledger import Ledger
from coordinator.monitor import Monitor
from coordinator.store import HistoryStore
from protos import records, swarm_pb2
from shaping import ShapingConfig

VERSION = "0.1.0"
START = 1_800_000_000.0  # simulated DHT time of round 1
ROUND_S = 10.0
PEER_TIMEOUT = 120.0


def deciles(values: list[float]) -> swarm_pb2.Deciles | None:
    finite = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
    if finite.numel() == 0:
        return None
    quantiles = torch.quantile(finite, torch.linspace(0, 1, 11, dtype=torch.float64))
    return swarm_pb2.Deciles(count=int(finite.numel()), values=[float(q) for q in quantiles])


def peer_name(index: int) -> str:
    return f"{index:02d}{random.Random(index).getrandbits(120):030x}"


@dataclass
class FakePeer:
    peer_id: str
    index: int
    step: int = 0
    epoch: int = 0
    failures: int = 0
    rounds_ok: int = 0
    sent: int = 0
    version: str = VERSION
    published: list[swarm_pb2.MetaSignal] = field(default_factory=list)
    statuses: list[swarm_pb2.PeerStatus] = field(default_factory=list)


class FakeSwarm:
    """Drives a ledger round by round; `peers[i]` behave as their `role` says (online by default)."""

    def __init__(self, tmp: Path, num_peers: int = 4, seed: int = 0, health: HealthConfig | None = None):
        self.rng = random.Random(seed)
        self.store = HistoryStore(tmp / "history.db", RUN)
        self.events = EventLog()
        self.ledger = Ledger(self.store, self.events, run=RUN, coordinator_key="c0ffee" * 5,
                             shaping=ShapingConfig(), peer_timeout=PEER_TIMEOUT)
        self.health = health or HealthConfig()
        self.monitor = Monitor(self.ledger, self.events, self.health, version=VERSION, round_interval=ROUND_S,
                               peer_timeout=PEER_TIMEOUT,
                               visible_maddrs=lambda: ["/ip4/127.0.0.1/tcp/31337/p2p/QmFake"],
                               http_address=lambda: "127.0.0.1:0", max_age_s=0.0)
        self.peers = [FakePeer(peer_name(i), i) for i in range(num_peers)]
        self.now = START - ROUND_S
        self.results = []
        self.silent: set[int] = set()      # peers that publish nothing any more
        self.lagging: set[int] = set()     # peers whose epoch stops advancing
        self.failing: set[int] = set()     # peers whose averaging fails
        self.announcing: set[int] = set()  # peers that only announce themselves (status at step 0)
        self.status_every = 1              # rounds between status reports
        self.measures_kl = True            # False: peers train without a reference policy (KL not measured)

    def batch(self, peer: FakePeer) -> tuple[dict, list[float]]:
        rng, size = self.rng, 8
        level = 0.6 * (len(self.results) / (len(self.results) + 20)) + 0.05 * peer.index % 3
        values = {"er": [rng.gauss(20 + peer.index % 5, 3) for _ in range(size)],
                  "erv": [rng.gauss(1.0, 0.8) if rng.random() > 0.15 else None for _ in range(size)],
                  "era": [rng.gauss(0.2, 0.5) if rng.random() > 0.3 else None for _ in range(size)],
                  "score": [1.0 if rng.random() < level else -0.5 for _ in range(size)]}
        gates = [rng.random() for v in values["era"] if v is not None]
        return values, gates

    def step_peer(self, peer: FakePeer, round_index: int) -> None:
        values, gates = self.batch(peer)
        peer.step += 1
        if peer.index not in self.lagging:
            peer.epoch += 1
        peer.sent += 40_000
        if peer.index in self.failing:
            peer.failures += 1
        else:
            peer.rounds_ok += 1
        stats = batch_stats(values, gates)
        record = records.replace(meta_record(peer.peer_id, peer.step, stats, published_at=self.now - 1.0),
                                 num_tokens=400 + 10 * peer.index + 30 * (round_index % 4))
        peer.published.append(record)
        if round_index % self.status_every == 0:
            scores = values["score"]
            status = peer_status(
                peer.peer_id, self.now - 0.5, version=peer.version, address=f"/ip4/10.0.0.{peer.index}/tcp/31337",
                reachability=swarm_pb2.REACHABILITY_RELAYED if peer.index % 4 == 3 else swarm_pb2.REACHABILITY_DIRECT,
                step=peer.step, throughput=3.0 + peer.index / 10, bytes_sent=peer.sent,
                bytes_received=peer.sent + 1000, tokens_per_s=record.num_tokens / ROUND_S, step_seconds=ROUND_S,
                compression_ratio=19.0, reward=sum(scores) / len(scores), accuracy=sum(s > 0 for s in scores) / 8,
                heldout_accuracy=min(0.95, 0.3 + 0.005 * round_index),
                kl=0.001 * round_index if self.measures_kl else None, er=stats.means()["er"],
                erv=stats.means()["erv"], era=stats.means()["era"], gate=stats.gate_mean, aux=0.05,
                epoch=peer.epoch, num_peers_seen=len(self.peers), averaging_rounds=peer.rounds_ok,
                averaging_failures=peer.failures,
                last_averaging_error="TimeoutError: no group" if peer.index in self.failing else "",
                baselines_source="global" if self.results else "local",
                balance_round=self.results[-1].record.round if self.results else None,
                **{f"{k}_deciles": deciles(values[k]) for k in ("er", "erv", "era")})
            peer.statuses.append(status)

    def round(self) -> None:
        """Every peer not silenced steps once and reports; then the coordinator merges and evaluates."""
        self.now += ROUND_S
        index = len(self.results)
        for peer in self.peers:
            if peer.index in self.announcing:
                peer.statuses.append(peer_status(peer.peer_id, self.now - 0.5, version=peer.version,
                                                 reachability=swarm_pb2.REACHABILITY_DIRECT))
            elif peer.index not in self.silent:
                self.step_peer(peer, index)
        live = [p for p in self.peers if p.index not in self.silent]
        self.ledger.note_statuses([p.statuses[-1] for p in live if p.statuses], self.now)
        result = self.ledger.ingest([r for p in live if p.index not in self.announcing for r in p.published[-1:]],
                                    self.now)
        if result is not None:
            self.results.append(result)
        self.ledger.sweep(self.now)
        self.monitor.refresh(self.now)

    def run(self, rounds: int) -> FakeSwarm:
        for _ in range(rounds):
            self.round()
        return self


def main() -> None:
    import argparse
    import tempfile
    import time

    from coordinator.dashboard.web import DashboardApp, DashboardServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--live", type=float, default=5.0, help="seconds between new rounds (0 = frozen)")
    args = parser.parse_args()
    swarm = FakeSwarm(Path(tempfile.mkdtemp()), args.peers)
    swarm.announcing.add(args.peers - 1)
    swarm.run(args.rounds // 2)
    swarm.silent.add(1)       # gone by the end
    swarm.lagging.add(2)      # behind
    swarm.failing.add(3)      # averaging failures
    swarm.peers[4].version = "0.0.9"
    swarm.run(args.rounds - args.rounds // 2 - 4)
    swarm.silent.add(5)       # unreachable: silent for 4 rounds
    swarm.run(4)
    app = DashboardApp(swarm.monitor, swarm.store, peer_timeout=PEER_TIMEOUT, clock=lambda: swarm.now)
    server = DashboardServer(f"127.0.0.1:{args.port}", app).start()
    print(f"serving a synthetic swarm at {server.url}", flush=True)
    while True:
        time.sleep(args.live or 3600)
        if args.live:
            swarm.round()


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
