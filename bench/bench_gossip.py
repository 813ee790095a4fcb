"""Swarm gossip on this machine: bytes on the wire against dense fp32, the step time split, and
the learning curve with compressed vs uncompressed averaging.

Every configuration is a real local swarm (a coordinator and N `rankswarm node` processes on
127.0.0.1, started by `rankswarm.demo.DemoSwarm`) running the same number of local steps;
everything is read back from the peers' metrics.jsonl. All configurations run one after the
other in one invocation, so their ratios compare like with like.

    PYTHONPATH=. python -m bench.bench_gossip                      # about 12 minutes on 2 cores
    PYTHONPATH=. python -m bench.bench_gossip --steps 10 --seeds 0  # a quick look

Outputs <out>/summary.json and <out>/summary.md (pasted into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from node.gossip.sizing import compression_ratio_for_shapes, qwen2_shapes
from rankswarm.config import DemoConfig
from rankswarm.demo import DemoSwarm

REPO = Path(__file__).resolve().parent.parent
COMPUTE = ("time_generate", "time_reward", "time_forward", "time_shaping", "time_backward")
SPLIT = (*COMPUTE, "time_allreduce", "time_waiting")


@dataclass(frozen=True)
class Setup:
    name: str
    peers: int
    compression: str  # GossipConfig.compression
    seed: int


@dataclass
class Result:
    setup: Setup
    minutes: float
    rounds: int  # averaging rounds that moved bytes, mean over peers
    bytes_per_round: float  # all-reduce bytes one peer sent per round (mean)
    dense_per_round: float  # what dense fp32 would have sent for those rounds
    state_bytes: float  # state downloads, mean per peer
    split: dict[str, float]  # mean seconds per local step
    compute_share: float  # compute / step time
    start_greedy: float
    end_greedy: float  # mean over peers
    final_reward: float  # mean reward over each peer's last 10 steps, averaged over peers
    reward_curve: list[float] = field(default_factory=list)  # per step, mean over peers


def run_setup(setup: Setup, args: argparse.Namespace) -> Result:
    cfg = DemoConfig(peers=setup.peers, steps=args.steps, run_dir=str(args.out / f"{setup.name}-s{setup.seed}"),
                     run_id=f"bench-{setup.name}-{setup.seed}", max_minutes=args.max_minutes, seed=setup.seed,
                     node_overrides=[f"gossip.compression={json.dumps(setup.compression)}",
                                     f"eval.num_problems={args.eval_problems}"])
    swarm = DemoSwarm(cfg)
    started = time.monotonic()
    try:
        swarm.start()
        if not swarm.wait_finished(args.max_minutes * 60, poll_s=2.0):
            raise RuntimeError(f"{setup} did not finish within {args.max_minutes} min")
    finally:
        swarm.stop()
    failed = [p.name for p in swarm.peers.values() if p.proc.returncode != 0]
    if failed:
        raise RuntimeError(f"{setup}: {failed} failed; logs under {cfg.run_dir}")
    return summarise_run(setup, swarm, (time.monotonic() - started) / 60)


def summarise_run(setup: Setup, swarm: DemoSwarm, minutes: float) -> Result:
    per_peer = swarm.peers_rows()
    trains = [[r for r in rows if r.get("kind") == "train"] for rows in per_peer]
    evals = [[r for r in rows if r.get("kind") == "eval"] for rows in per_peer]
    rounds = [[r for r in rows if r.get("bytes_sent")] for rows in trains]
    all_steps = [r for rows in trains for r in rows]
    all_rounds = [r for rows in rounds for r in rows]
    split = {k: statistics.fmean(r.get(k) or 0.0 for r in all_steps) for k in SPLIT}
    step_s = statistics.fmean(r["time_step"] for r in all_steps)
    steps = min(len(rows) for rows in trains)
    return Result(
        setup=setup, minutes=minutes, rounds=round(statistics.fmean(len(r) for r in rounds)),
        bytes_per_round=statistics.fmean(r["bytes_sent"] for r in all_rounds) if all_rounds else 0.0,
        dense_per_round=sum(rows[-1]["dense_bytes_total"] for rows in trains) / max(1, len(all_rounds)),
        state_bytes=statistics.fmean(rows[-1]["state_bytes_received_total"] for rows in trains),
        split=split, compute_share=sum(split[k] for k in COMPUTE) / step_s,
        start_greedy=statistics.fmean(e[0]["greedy_accuracy"] for e in evals),
        end_greedy=statistics.fmean(e[-1]["greedy_accuracy"] for e in evals),
        final_reward=statistics.fmean(statistics.fmean(r["reward"] for r in rows[-10:]) for rows in trains),
        reward_curve=[statistics.fmean(rows[i]["reward"] for rows in trains) for i in range(steps)])


def embedded_shapes() -> list[tuple[int, ...]]:
    from node.model.loading import load_policy

    model = load_policy(None, "cpu", "float32")
    model = model[0] if isinstance(model, tuple) else model
    return [tuple(p.shape) for p in model.parameters() if p.requires_grad]


def computed_ratios(rank: int) -> dict[str, float]:
    """fp32-dense / PowerSGD bytes from shapes alone (fp32 factors, as `wire_precision` defaults)."""
    qwen05 = qwen2_shapes(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936)
    return {"embedded": compression_ratio_for_shapes(embedded_shapes(), rank, bytes_per_number=4),
            "qwen2-0.5b": compression_ratio_for_shapes(qwen05, rank, bytes_per_number=4),
            "qwen2-0.5b-fp16-factors": compression_ratio_for_shapes(qwen05, rank, bytes_per_number=2)}


def render(results: list[Result], ratios: dict[str, float], args: argparse.Namespace) -> str:
    lines = [f"{args.steps} local steps per peer, 8 prompts x 8 rollouts per step, 2 local steps per averaging "
             f"round, seeds {args.seeds}; {args.eval_problems} held-out problems.", "",
             "| setup | seed | rounds | KB sent / round / peer | dense fp32 KB | ratio | state MB | "
             "s/step | compute share | greedy start → end | reward (last 10) | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = r.dense_per_round / r.bytes_per_round if r.bytes_per_round else float("nan")
        step_s = sum(r.split.values())
        lines.append(f"| {r.setup.name} | {r.setup.seed} | {r.rounds} | {r.bytes_per_round / 1e3:.1f} | "
                     f"{r.dense_per_round / 1e3:.1f} | {ratio:.1f}x | {r.state_bytes / 1e6:.1f} | {step_s:.2f} | "
                     f"{r.compute_share:.0%} | {r.start_greedy:.3f} → {r.end_greedy:.3f} | "
                     f"{r.final_reward:+.3f} | {r.minutes:.1f} |")
    lines += ["", "Mean seconds per local step (all-reduce = inside formed groups; waiting = the rest of the "
              "update: progress tracking, matchmaking, slower peers and the optimizer step itself):", "",
              "| setup | seed | generate | reward | forward | shaping | backward | all-reduce | waiting |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.setup.name} | {r.setup.seed} | " + " | ".join(f"{r.split[k]:.3f}" for k in SPLIT) + " |")
    lines += ["", "Computed from parameter shapes (PowerSGD rank "
              f"{args.rank}, what one peer sends per round vs dense fp32): "
              + ", ".join(f"{k} {v:.0f}x" for k, v in ratios.items()) + "."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--setups", nargs="+", default=["1peer", "2peers", "2peers-dense", "3peers"],
                        choices=["1peer", "2peers", "2peers-dense", "3peers", "3peers-dense"])
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--rank", type=int, default=4, help="PowerSGD rank for the computed ratios")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="per configuration")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_gossip")
    return parser.parse_args(argv)


SETUPS = {"1peer": (1, "powersgd"), "2peers": (2, "powersgd"), "2peers-dense": (2, "none"),
          "3peers": (3, "powersgd"), "3peers-dense": (3, "none")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    results = []
    for seed in args.seeds:
        for name in args.setups:
            peers, compression = SETUPS[name]
            setup = Setup(name, peers, compression, seed)
            print(f"running {setup} ...", flush=True)
            results.append(run_setup(setup, args))
    ratios = computed_ratios(args.rank)
    markdown = render(results, ratios, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "computed_ratios": ratios,
         "results": [asdict(r) for r in results]}, indent=2))
    (args.out / "summary.md").write_text(markdown + "\n")
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
