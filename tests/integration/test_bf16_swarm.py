"""Two bfloat16 peers train together (`rankswarm node` processes on 127.0.0.1, about 70 s on 2 cores).

A bfloat16 peer used to die at its first swarm step (hivemind averaged the parameters' bf16
gradients against float32 PowerSGD factors). Now the model generates and runs its forward in
bfloat16 while hivemind averages and steps float32 master weights: the swarm's epoch advances
with rounds that formed over both peers, the peers end with the same finite weights (their final
checkpoints, which hold the masters), and held-out accuracy rises on an easy task.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from rankswarm.config import DemoConfig
from rankswarm.demo import DemoSwarm, weights_agreement

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODE_OVERRIDES = [
    'model.dtype="bfloat16"', "task.digits=1", "task.min_digits=1", "task.eval_size=20", "eval.num_problems=20",
    "optim.lr=1e-4", "gossip.averaging_timeout=15", "gossip.peer_expiration_s=10",
]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16-swarm")
    cfg = DemoConfig(peers=2, steps=20, local_steps_per_round=1, run_dir=str(root), run_id="bf16-it",
                     round_interval=2.0, node_overrides=NODE_OVERRIDES)
    demo = DemoSwarm(cfg)
    try:
        demo.start()
        assert demo.wait_finished(300), "\n".join(p.tail(20) for p in demo.processes)
        yield demo
    finally:
        demo.stop()


def test_bfloat16_peers_finish_their_steps(swarm):
    for index, process in swarm.peers.items():
        assert process.proc.returncode == 0, process.tail(30)
        rows = [r for r in swarm.peer_rows(index) if r.get("kind") == "train"]
        assert rows[-1]["step"] == 20
        # bfloat16 did compute: the training forward and the sampler differ by its rounding
        assert all(r["logprob_gap"] > 1e-5 for r in rows)


def test_the_swarm_epoch_advances_with_rounds_that_formed(swarm):
    for index in swarm.peers:
        last = [r for r in swarm.peer_rows(index) if r.get("kind") == "train"][-1]
        assert last["epoch"] >= 5, last
        assert last["rounds_averaged"] >= 3 and last["bytes_sent_total"] > 0
        averaged = [r for r in swarm.peer_rows(index) if r.get("bytes_sent") and r.get("num_peers", 1) >= 2]
        assert averaged, f"peer{index} never averaged with the other peer"


def test_the_peers_end_with_equal_finite_weights(swarm):
    """Equal at the last epoch both reached (the peer that finishes last may step alone after the
    other left: then their final checkpoints are an epoch apart, and only then)."""
    agreement = weights_agreement(swarm.peers_rows())
    assert agreement is not None and agreement[0] >= 5 and agreement[1] <= 1e-6, agreement
    settled = [[r for r in swarm.peer_rows(i) if r.get("kind") == "settle"][-1] for i in (0, 1)]
    assert all(r["settled"] for r in settled), settled
    final = [load_file(str(sorted((swarm.peer_dir(i) / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))
             for i in (0, 1)]
    for name, value in final[0].items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), name  # the float32 masters
        assert torch.isfinite(final[1][name]).all(), name
        if settled[0]["epoch"] == settled[1]["epoch"]:
            # equal as the swarm defines it (gossip.weights_rtol): the all-reduce leaves float noise that AdamW's
            # normalisation can lift to ~1e-7 on single near-zero elements, so compare each tensor's gap to its size
            size = torch.linalg.vector_norm(value).clamp_min(1e-12)
            gap = float(torch.linalg.vector_norm(value - final[1][name]) / size)
            assert gap <= 1e-5, f"{name}: the peers' final weights differ by {gap:.2e} of their size"


def test_held_out_accuracy_rises(swarm):
    for index in swarm.peers:
        evals = [r for r in swarm.peer_rows(index) if r.get("kind") == "eval"]
        assert evals[-1]["greedy_accuracy"] > evals[0]["greedy_accuracy"], evals
