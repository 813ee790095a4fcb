"""One process of an emulated-WAN swarm (tests/integration/wan_links.py): the DHT bootstrap, or a
toy-model peer that trains through the real swarm update rule (`GossipUpdate`, sync or diloco).

    python wan_peer.py bootstrap --ip 10.77.0.1 --dir RUN_DIR
    python wan_peer.py peer --ip 10.77.0.2 --dir RUN_DIR --index 0 --num-peers 3 --mode diloco ...

Processes of one run meet through files in RUN_DIR (the namespaces share the file system): the
bootstrap writes its address to `bootstrap.json`; each peer writes `ready-<index>` once its DHT
is up and starts training when all `--num-peers` are there (bounded), so that nobody takes solo
rounds while the others are still starting; it ends with `result-<index>.json`. Every wait is
bounded; a peer that fails writes its error into its result and exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
import traceback
from pathlib import Path

PORT = 31337


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(0.1)


def bootstrap(args) -> int:
    from plumbing.identity import SigningIdentity, build_record_validators
    from plumbing.swarm_dht import DHTConfig, start_dht, visible_addresses

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    dht = start_dht(DHTConfig(host_maddrs=[f"/ip4/{args.ip}/tcp/{PORT}"]),
                    record_validators=build_record_validators(SigningIdentity.generate(), args.run))
    Path(args.dir, "bootstrap.json").write_text(json.dumps(visible_addresses(dht)))
    deadline = time.monotonic() + args.lifetime_s
    while not stop and time.monotonic() < deadline:
        time.sleep(0.2)
    dht.shutdown()
    return 0


class ToyTask:
    """Regression of the first 4 inputs through a 2-layer MLP: each peer its own batches, one held-out set."""

    def __init__(self, hidden: int, seed: int, batch: int):
        import torch

        torch.manual_seed(0)  # every peer starts from the same weights
        self.model = torch.nn.Sequential(torch.nn.Linear(16, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 4))
        self.data = torch.Generator().manual_seed(seed)
        self.batch = batch

    def backward(self) -> None:
        import torch

        inputs = torch.randn(self.batch, 16, generator=self.data)
        (self.model(inputs) - inputs[:, :4]).pow(2).mean().backward()

    def heldout_loss(self) -> float:
        import torch

        inputs = torch.randn(256, 16, generator=torch.Generator().manual_seed(12345))
        with torch.no_grad():
            return float((self.model(inputs) - inputs[:, :4]).pow(2).mean())


def peer(args) -> int:
    from node.gossip.averaging import GradientGossip
    from node.gossip.config import GossipConfig
    from node.gossip.fingerprint import parameter_fingerprint
    from node.gossip.outer import OuterSteps, build_outer_sgd, inner_state_tensors
    from node.swarm.update import GossipUpdate
    from node.training.config import OptimConfig
    from node.training.precision import MasterWeights
    from node.training.seams import build_adamw
    from plumbing.identity import SigningIdentity, build_record_validators
    from plumbing.swarm_dht import DHTConfig, start_dht

    run_dir = Path(args.dir)
    result: dict = {"index": args.index, "fingerprints": {}, "error": None}
    started = time.monotonic()
    dht = update = None
    try:
        _wait_for(lambda: (run_dir / "bootstrap.json").exists(), 60, "the bootstrap's address")
        initial = json.loads((run_dir / "bootstrap.json").read_text())
        identity = SigningIdentity.generate()
        dht = start_dht(DHTConfig(host_maddrs=[f"/ip4/{args.ip}/tcp/{PORT}"], initial_peers=initial),
                        record_validators=build_record_validators(identity, args.run))
        task = ToyTask(args.hidden, seed=args.index + 1, batch=args.batch)
        master = MasterWeights(task.model)
        optim = OptimConfig(lr=args.lr)
        h = args.inner_steps if args.mode == "diloco" else 1
        cfg = GossipConfig(mode=args.mode, inner_steps=args.inner_steps, compression=args.compression,
                           target_batch_size=args.num_peers * h * args.batch, matchmaking_time=4.0,
                           averaging_timeout=30, load_state_timeout=30, peer_expiration_s=10,
                           average_state_every=10_000, outer_lr=args.outer_lr, outer_momentum=args.outer_momentum)
        diloco = args.mode == "diloco"
        factory = ((lambda ps: build_outer_sgd(ps, cfg.outer_lr, cfg.outer_momentum)) if diloco
                   else (lambda ps: build_adamw(ps, optim)))
        inner = build_adamw(master.params, optim)
        gossip = GradientGossip(dht, master.params, factory, cfg, run_id=args.run, batch_size_per_step=args.batch,
                                identity=identity, extra_tensors=inner_state_tensors(inner) if diloco else ())
        outer = OuterSteps(gossip, inner, cfg.inner_steps) if diloco else None
        update = GossipUpdate(gossip, master, grad_clip=1.0, outer=outer)
        (run_dir / f"ready-{args.index}").write_text("")
        _wait_for(lambda: all((run_dir / f"ready-{i}").exists() for i in range(args.num_peers)), 90,
                  "all peers' start")
        result["loss_start"] = task.heldout_loss()
        t0 = time.monotonic()
        while gossip.epoch < args.rounds and time.monotonic() - t0 < args.deadline_s:
            task.backward()
            master.accumulate_grads()
            report = update.apply(args.batch)
            time.sleep(args.step_s)  # a stand-in for generation: real peers do not step back to back
            if report.details.param_fingerprint is not None:
                result["fingerprints"][str(gossip.epoch)] = report.details.param_fingerprint
        result["train_seconds"] = time.monotonic() - t0
        settle = update.settle()
        result |= {"epoch": gossip.epoch, "settled": settle.settled, "final": settle.param_fingerprint,
                   "loss_end": task.heldout_loss(), "traffic": dataclasses.asdict(gossip.traffic_totals()),
                   "rounds_averaged": update.rounds_averaged, "rounds_dropped": update.rounds_dropped,
                   "numel": gossip.numel}
        result["fingerprints"][str(gossip.epoch)] = parameter_fingerprint(master.params)
    except BaseException as err:
        result["error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    finally:
        result["seconds"] = time.monotonic() - started
        (run_dir / f"result-{args.index}.json").write_text(json.dumps(result))
        if update is not None:
            update.shutdown()
        if dht is not None:
            dht.shutdown()
    return 0 if result["error"] is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["bootstrap", "peer"])
    parser.add_argument("--ip", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--run", default="wan")
    parser.add_argument("--lifetime-s", type=float, default=600)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--num-peers", type=int, default=3)
    parser.add_argument("--mode", choices=["sync", "diloco"], default="diloco")
    parser.add_argument("--compression", choices=["powersgd", "fp16", "none"], default="powersgd")
    parser.add_argument("--inner-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="swarm epochs (outer steps in diloco) to reach")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--outer-lr", type=float, default=1.0)
    parser.add_argument("--outer-momentum", type=float, default=0.0)
    parser.add_argument("--step-s", type=float, default=0.05)
    parser.add_argument("--deadline-s", type=float, default=120)
    args = parser.parse_args(argv)
    return bootstrap(args) if args.role == "bootstrap" else peer(args)


if __name__ == "__main__":
    sys.exit(main())
