"""Small fakes for coordinator tests: real IndicatorStats built from per-response values, and records."""

from __future__ import annotations

import random

import torch

from protos import records, swarm_pb2
from shaping import IndicatorStats, RankIndicators

RUN = "test-run"


def _column(values: list[float | None], size: int) -> torch.Tensor:
    """[B] float64, NaN where an indicator is missing (shaping's convention)."""
    padded = values + [None] * (size - len(values))
    return torch.tensor([float("nan") if v is None else v for v in padded], dtype=torch.float64)


def batch_stats(values: dict[str, list[float | None]], gates: list[float]) -> IndicatorStats:
    """IndicatorStats of one batch from its per-response values (None = indicator missing), via shaping."""
    size = max(len(v) for v in values.values())
    indicators = RankIndicators(*(_column(values.get(name, []), size) for name in ("er", "erv", "era")))
    return IndicatorStats.from_batch(indicators, _column(values.get("score", []), size),
                                     torch.tensor(gates, dtype=torch.float64))


def random_batch(rng: random.Random, size: int) -> tuple[dict[str, list[float | None]], list[float]]:
    """Per-response values of a random batch (some ERA/ERV missing, as for short responses)."""
    values = {"er": [rng.uniform(1, 40) for _ in range(size)],
              "erv": [rng.uniform(-2, 2) if rng.random() > 0.2 else None for _ in range(size)],
              "era": [rng.uniform(-1, 1) if rng.random() > 0.3 else None for _ in range(size)],
              "score": [rng.choice([-1.0, -0.5, 0.5, 1.0]) for _ in range(size)]}
    gates = [rng.random() for v in values["era"] if v is not None]
    return values, gates


def peer_status(peer: str, reported_at: float, *, run: str = RUN, **fields) -> swarm_pb2.PeerStatus:
    """A validated status report (the latest schema unless `schema_version` says otherwise)."""
    return records.build(swarm_pb2.PeerStatus, run_id=run, peer_id=peer, reported_at=reported_at, **fields)


DECILES = swarm_pb2.Deciles(count=5, values=[float(i) for i in range(11)])


TRAFFIC = dict(gradient_bytes_sent=9, gradient_bytes_received=18, state_averaging_bytes_sent=1,
               state_averaging_bytes_received=2, state_bytes_served=0, state_bytes_downloaded=40)
SCHEMA_3_FIELDS = ("staleness", *TRAFFIC)


def full_peer_status(peer: str, reported_at: float, **changes) -> swarm_pb2.PeerStatus:
    """A schema-3 report with every field set (zeros included: they must stay zeros, not become unset);
    `changes` replace fields (None unsets one)."""
    fields = dict(version="0.1.0", address="/ip4/1.2.3.4/tcp/5", reachability=swarm_pb2.REACHABILITY_RELAYED, step=9,
                  throughput=1.5, bytes_sent=10, bytes_received=20, tokens_per_s=812.5, step_seconds=1.25,
                  compression_ratio=19.3, reward=-0.25, accuracy=0.5, heldout_accuracy=0.39, kl=0.0, er=21.5,
                  erv=-0.5, era=0.0, gate=1.0, aux=-0.01, epoch=0, num_peers_seen=3, averaging_rounds=4,
                  averaging_failures=1, last_averaging_error="TimeoutError: x", publish_failures=2,
                  baselines_source="global", balance_round=12, er_deciles=DECILES, era_deciles=DECILES, staleness=0,
                  **TRAFFIC)
    return peer_status(peer, reported_at, **(fields | changes))


def meta_record(peer: str, step: int, stats: IndicatorStats, *, published_at: float = 1000.0,
                run: str = RUN) -> swarm_pb2.MetaSignal:
    return records.build(swarm_pb2.MetaSignal, run_id=run, peer_id=peer, step=step, stats=records.stats_message(stats),
                         mean_gate=stats.gate_mean, num_rollouts=8, num_tokens=640, published_at=published_at)
