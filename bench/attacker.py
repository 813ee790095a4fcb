"""A swarm peer that lies about its gradients, for the attack benchmarks (bench/bench_attacks.py).

It trains like any peer, then, just before averaging (after its own clipping, as a real attacker
would skip it), replaces its gradients or its claimed batch:

    nan         every gradient NaN
    amplified   gradients x -1000
    noise       gradients replaced by N(0, 100^2) noise
    weight      sign-flipped gradients of ordinary size, claiming 1000x its batch

    PYTHONPATH=. python -m bench.attacker --attack amplified --set run_id='"r"' --set ...   # like `rankswarm node`
"""

from __future__ import annotations

import argparse
import sys

import torch

from node.swarm.config import NodeConfig
from node.swarm.peer import Node
from node.swarm.update import build_gossip_update
from plumbing.config_loading import load_config

ATTACKS = ("nan", "amplified", "noise", "weight")


def corrupt(params: list[torch.Tensor], attack: str, noise: torch.Generator) -> int:
    """Replace the gradients of `params` in place; the factor the attacker multiplies its batch by."""
    with torch.no_grad():
        for param in params:
            if param.grad is None:
                continue
            if attack == "nan":
                param.grad.fill_(float("nan"))
            elif attack == "amplified":
                param.grad.mul_(-1000)
            elif attack == "noise":
                param.grad.copy_(100 * torch.randn(param.grad.shape, generator=noise))
            elif attack == "weight":
                param.grad.neg_()
    return 1000 if attack == "weight" else 1


def attacking_node(cfg: NodeConfig, attack: str) -> Node:
    node = Node(cfg)
    noise = torch.Generator().manual_seed(cfg.seed)

    def build(master, node_cfg):
        update = build_gossip_update(node.dht, master, node_cfg, node.identity, node.admission)
        gossip, honest_step = update.gossip, update.gossip.step

        def lying_step(batch_size: int):
            return honest_step(batch_size * corrupt(gossip.params, attack, noise))

        gossip.step = lying_step
        return update

    node.update_factory = build
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attack", choices=ATTACKS, required=True)
    parser.add_argument("--set", "-s", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    node = attacking_node(load_config(NodeConfig, [], args.overrides), args.attack)
    try:
        node.start()
        node.run()
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
