"""Swarm training across emulated WAN links: sync vs diloco at 100, 10 and 1 Mbit/s per peer.

    sudo PYTHONPATH=. python -m bench.bench_wan                       # the full grid (40-60 min on 2 cores)
    sudo PYTHONPATH=. python -m bench.bench_wan --rates 10 --modes diloco-h4 --steps 8

Every run is a real swarm: a DHT bootstrap and 3 `rankswarm node` processes (embedded model,
arithmetic task, no coordinator: local baselines), each in its own network namespace behind a
token-bucket link of the given rate in both directions (tests/integration/wan_links.py; no
latency or loss, the kernel has no netem). Needs root.

Measured per run: wall time per 1,000 rollouts (the slowest peer's training time over the
swarm's rollouts), compute share (generate + reward + forward + shaping + backward over step
time), bytes per rollout by kind (payload counted inside hivemind's (de)serialisation:
gradients, state averaging, state served; "other" = what the kernel counted on the peers' links
minus those payloads: DHT records, libp2p and TCP/IP framing, acks), held-out greedy accuracy at
the start and the end (same rollouts for every mode). Computed, not measured: the bytes per
rollout a Qwen2.5-0.5B-shaped model would send with the same settings (node/gossip/sizing.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from node.gossip.sizing import compression_ratio_for_shapes, qwen2_shapes
from plumbing.metrics import read_jsonl
from plumbing.processes import rankswarm_argv

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))  # the WAN harness lives with the tests that use it
from wan_links import WanNetwork, unavailable_reason  # noqa: E402

PEERS = 3
COMPUTE = ("time_generate", "time_reward", "time_forward", "time_shaping", "time_backward")
WAN_PEER = REPO / "tests" / "integration" / "wan_peer.py"


@dataclass(frozen=True)
class Mode:
    name: str
    overrides: tuple[str, ...]
    steps_per_round: int  # local steps of every peer per swarm round
    compression: str


def parse_mode(name: str) -> Mode:
    """sync-dense, sync-powersgd, diloco-h<H>[-lr<outer lr>][-m<outer momentum>][-dense|-fp16], each with an
    optional -g<N> (gossip.group_size = N: a round starts once N peers joined it, not after matchmaking_time)
    and an optional -overlap (sampling.max_staleness = 1: the next batch is sampled while the update runs)."""
    overlap = name.endswith("-overlap")
    parts = name.removesuffix("-overlap").split("-")
    staleness = ("sampling.max_staleness=1",) if overlap else ()
    group = ()
    if len(parts) > 1 and parts[-1].startswith("g") and parts[-1][1:].isdigit():
        group = (f"gossip.group_size={int(parts.pop()[1:])}",)
    base = "-".join(parts)
    if base in ("sync-dense", "sync-powersgd"):
        compression = "none" if base == "sync-dense" else "powersgd"
        return Mode(name, ('gossip.mode="sync"', f'gossip.compression="{compression}"', *group, *staleness), 1,
                    compression)
    if parts[0] != "diloco" or len(parts) < 2 or not parts[1].startswith("h"):
        raise ValueError(f"unknown mode {name!r}: sync-dense, sync-powersgd or diloco-h<H>[-lr<x>][-m<x>][-dense], "
                         f"then [-g<n>][-overlap]")
    inner = int(parts[1][1:])
    overrides = ['gossip.mode="diloco"', f"gossip.inner_steps={inner}"]
    compression = "powersgd"
    for part in parts[2:]:
        if part.startswith("lr"):
            overrides.append(f"gossip.outer_lr={float(part[2:])}")
        elif part.startswith("m"):
            overrides.append(f"gossip.outer_momentum={float(part[1:])}")
        elif part == "dense":
            compression = "none"
        elif part == "fp16":
            compression = "fp16"
        else:
            raise ValueError(f"unknown part {part!r} of mode {name!r}")
    overrides.append(f'gossip.compression="{compression}"')
    return Mode(name, (*overrides, *group, *staleness), inner, compression)


@dataclass
class Result:
    mode: str
    rate_mbit: float
    seed: int
    rollouts: int  # the swarm's, all peers
    wall_s_per_1k: float
    compute_share: float
    bytes_per_rollout: dict[str, float]  # by kind, sent, all peers over all rollouts
    link_bytes_per_rollout: float  # what the kernel counted leaving the peers' links
    bootstrap_bytes_per_rollout: float | None  # leaving the DHT bootstrap's link: DHT traffic only
    rounds: float  # averaged rounds, mean over peers
    greedy_start: float
    greedy_end: float  # mean over peers
    final_reward: float  # mean training reward over each peer's last 8 steps, averaged over peers
    minutes: float


def run_one(mode: Mode, rate: float, seed: int, args: argparse.Namespace) -> Result:
    out = args.out / f"{mode.name}-{rate:g}mbit-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*"):
        if stale.is_file():
            stale.unlink()
    rollouts_per_step = args.prompts * args.group
    target = PEERS * mode.steps_per_round * rollouts_per_step
    started = time.monotonic()
    with WanNetwork(num_hosts=PEERS + 1, rate_mbit=rate) as net:
        net.popen(0, [sys.executable, str(WAN_PEER), "bootstrap", "--ip", net.hosts[0].ip, "--dir", str(out),
                      "--run", f"wan-{seed}"], log_path=out / "bootstrap.log")
        deadline = time.monotonic() + 60
        while not (out / "bootstrap.json").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bootstrap did not start: {out / 'bootstrap.log'}")
            time.sleep(0.2)
        initial = json.loads((out / "bootstrap.json").read_text())
        procs = []
        for i in range(PEERS):
            host = net.hosts[i + 1]
            overrides = [
                f"run_dir={json.dumps(str(out / f'peer{i}'))}", f"seed={100 * seed + i}", f"steps={args.steps}",
                f'run_id="wan-{seed}"', f"algo.prompts_per_step={args.prompts}", f"sampling.group_size={args.group}",
                "checkpoint.every=0", "eval.every=0", f"eval.num_problems={args.eval_problems}",
                f"gossip.target_batch_size={target}", f"gossip.min_peers={PEERS}", "gossip.matchmaking_time=4.0",
                f"dht.initial_peers={json.dumps(initial)}", f'dht.host_maddrs=["/ip4/{host.ip}/tcp/31337"]',
                "torch_threads=1", "progress=false", *mode.overrides, *args.set]
            argv = [*rankswarm_argv("node"), *[a for o in overrides for a in ("--set", o)]]
            procs.append(net.popen(i + 1, argv, log_path=out / f"peer{i}.log"))
        deadline = time.monotonic() + args.max_minutes * 60
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        link = [net.interface_bytes(i) for i in range(PEERS + 1)]
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"{mode.name} at {rate} Mbit/s: peers {failed} failed; logs in {out}")
    return summarise(mode, rate, seed, out, link, (time.monotonic() - started) / 60, args)


def summarise(mode: Mode, rate: float, seed: int, out: Path, link: list[tuple[int, int]], minutes: float,
              args: argparse.Namespace) -> Result:
    rows = [read_jsonl(out / f"peer{i}" / "metrics.jsonl") for i in range(PEERS)]
    trains = [[r for r in peer if r.get("kind") == "train"] for peer in rows]
    evals = [[r for r in peer if r.get("kind") == "eval"] for peer in rows]
    final = [next((r for r in reversed(peer) if r.get("kind") == "settle"), t[-1]) for peer, t in zip(rows, trains)]
    rollouts = sum(len(t) for t in trains) * args.prompts * args.group
    wall = max(sum(r["time_step"] for r in t) for t in trains)
    steps = [r for t in trains for r in t]
    compute = sum(sum(r.get(k) or 0.0 for k in COMPUTE) for r in steps) / sum(r["time_step"] for r in steps)
    kinds = {"gradients": "gradient_bytes_sent_total", "state averaging": "state_averaging_bytes_sent_total",
             "state served": "state_bytes_sent_total"}
    counted = {kind: sum(f.get(key) or 0 for f in final) for kind, key in kinds.items()}
    bootstrap_sent, link = link[0][0], link[1:]
    link_sent = sum(sent for sent, _ in link)
    by_kind = {kind: value / rollouts for kind, value in counted.items()}
    by_kind["other (link - payload)"] = (link_sent - sum(counted.values())) / rollouts
    return Result(mode=mode.name, rate_mbit=rate, seed=seed, rollouts=rollouts, wall_s_per_1k=wall / rollouts * 1000,
                  compute_share=compute, bytes_per_rollout=by_kind, link_bytes_per_rollout=link_sent / rollouts,
                  bootstrap_bytes_per_rollout=bootstrap_sent / rollouts,
                  rounds=statistics.fmean(t[-1].get("rounds_averaged") or 0 for t in trains),
                  greedy_start=statistics.fmean(e[0]["greedy_accuracy"] for e in evals),
                  greedy_end=statistics.fmean(e[-1]["greedy_accuracy"] for e in evals),
                  final_reward=statistics.fmean(statistics.fmean(r["reward"] for r in t[-8:]) for t in trains),
                  minutes=minutes)


def qwen_bytes_per_round(mode: Mode, rank: int = 4) -> float:
    """Computed: gradient bytes one peer sends per round for a Qwen2.5-0.5B-shaped model (3 peers,
    butterfly all-reduce, fp32 parts: dense or PowerSGD rank `rank` with fp32 factors)."""
    shapes = qwen2_shapes(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936)
    numel = sum(math.prod(s) for s in shapes)
    dense = 2 * (PEERS - 1) / PEERS * 4 * numel
    if mode.compression == "powersgd":
        return dense / compression_ratio_for_shapes(shapes, rank, bytes_per_number=4)
    return dense / 2 if mode.compression == "fp16" else dense


def qwen_bytes_per_rollout(mode: Mode, rollouts_per_step: int, rank: int = 4) -> float:
    """`qwen_bytes_per_round`, spread over the rollouts of the swarm's round."""
    return qwen_bytes_per_round(mode, rank) / (mode.steps_per_round * rollouts_per_step)


def render(results: list[Result], modes: dict[str, Mode], args: argparse.Namespace) -> str:
    kinds = list(results[0].bytes_per_rollout) if results else []
    lines = [f"3 peers, {args.steps} local steps each, {args.prompts} prompts x {args.group} rollouts per step, "
             f"{args.eval_problems} held-out problems; seeds {args.seeds}.", "",
             "| mode | Mbit/s | seed | rounds | s / 1k rollouts | compute share | "
             + " | ".join(f"B/rollout {k}" for k in kinds)
             + " | link B/rollout | bootstrap B/rollout | greedy start → end | reward (last 8) | minutes |",
             "|---|---|---|---|---|---|" + "---|" * len(kinds) + "---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.mode} | {r.rate_mbit:g} | {r.seed} | {r.rounds:.1f} | {r.wall_s_per_1k:.0f} | "
                     f"{r.compute_share:.0%} | " + " | ".join(f"{r.bytes_per_rollout[k]:,.0f}" for k in kinds)
                     + f" | {r.link_bytes_per_rollout:,.0f} | "
                     + ("-" if r.bootstrap_bytes_per_rollout is None else f"{r.bootstrap_bytes_per_rollout:,.0f}")
                     + f" | {r.greedy_start:.3f} → {r.greedy_end:.3f} | "
                     f"{r.final_reward:+.3f} | {r.minutes:.1f} |")
    lines += ["", "Computed (not measured): gradient bytes one peer sends per rollout for a Qwen2.5-0.5B-shaped "
              f"model, same rounds per rollout ({args.prompts * args.group} rollouts per local step):", ""]
    # a butterfly all-reduce sends and receives as much at once, so a full-duplex link's rate bounds it
    lines += [f"- {name}: {qwen_bytes_per_rollout(m, args.prompts * args.group) / 1e3:,.1f} KB; a round sends "
              f"{qwen_bytes_per_round(m) / 1e6:,.1f} MB per peer, {qwen_bytes_per_round(m) * 8 / 100e6:,.1f} s "
              "at 100 Mbit/s (payload only)" for name, m in modes.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 10.0, 1.0], help="Mbit/s per peer")
    parser.add_argument("--modes", nargs="+", default=["sync-dense", "sync-powersgd", "diloco-h4", "diloco-h16",
                                                         "diloco-h16-overlap"])
    parser.add_argument("--skip", nargs="*", default=["sync-dense@1"],
                        help="mode@rate pairs not to run (dense sync at 1 Mbit/s takes ~40 s a round)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-problems", type=int, default=100)
    parser.add_argument("--max-minutes", type=float, default=12.0, help="per run")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_wan")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra `rankswarm node --set` for every peer of every run (e.g. gossip.verbose=true)")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render summary.md from --out's summary.json (and its runs' metrics) without running")
    return parser.parse_args(argv)


def _final_reward(out: Path, result: dict) -> float:
    run = out / f"{result['mode']}-{result['rate_mbit']:g}mbit-s{result['seed']}"
    trains = [[r for r in read_jsonl(run / f"peer{i}" / "metrics.jsonl") if r.get("kind") == "train"]
              for i in range(PEERS)]
    return statistics.fmean(statistics.fmean(r["reward"] for r in t[-8:]) for t in trains)


def render_only(args: argparse.Namespace) -> int:
    stored = json.loads((args.out / "summary.json").read_text())["results"]
    results = [Result(**{"final_reward": _final_reward(args.out, r), "bootstrap_bytes_per_rollout": None} | r)
               for r in stored]
    modes = {r.mode: parse_mode(r.mode) for r in results}
    markdown = render(results, modes, args)
    (args.out / "summary.md").write_text(markdown + "\n")
    print(markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (reason := unavailable_reason()) is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    args.out = args.out.resolve()
    if args.render_only:
        return render_only(args)
    modes = {name: parse_mode(name) for name in args.modes}
    results = []
    for seed in args.seeds:
        for rate in args.rates:
            for name, mode in modes.items():
                if f"{name}@{rate:g}" in args.skip:
                    continue
                print(f"running {name} at {rate:g} Mbit/s, seed {seed} ...", flush=True)
                try:
                    results.append(run_one(mode, rate, seed, args))
                except Exception as err:  # one failed run must not lose the others' numbers
                    print(f"  failed: {err}", flush=True)
                    continue
                print(f"  {asdict(results[-1])}", flush=True)
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "summary.json").write_text(json.dumps(
                    {"args": {k: str(v) for k, v in vars(args).items()}, "results": [asdict(r) for r in results]},
                    indent=2))
    markdown = render(results, modes, args)
    (args.out / "summary.md").write_text(markdown + "\n")
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
