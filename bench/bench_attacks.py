"""Hostile peers against the embedded model's swarm: what robust aggregation saves, and what it costs.

Each configuration is a real local swarm (coordinator + 3 `rankswarm node` processes on 127.0.0.1,
`rankswarm.demo.DemoSwarm`): peers 0 and 1 are honest; peer 2 is honest in the clean runs and an
attacker (bench/attacker.py) in the others. Every run has the same length and seeds; all run one
after the other in one invocation, so the gains compare like with like. The honest gain is the
mean held-out greedy accuracy gain of peers 0 and 1.

    PYTHONPATH=. python -m bench.bench_attacks                          # about 25 minutes on 2 cores
    PYTHONPATH=. python -m bench.bench_attacks --steps 10 --attacks nan  # a quick look
    PYTHONPATH=. python -m bench.bench_attacks --attacks nan --no-plain-mean  # clean and nan only
    PYTHONPATH=. python -m bench.bench_attacks --reducer-cost            # the reducers alone (seconds)

Outputs <out>/summary.json and <out>/summary.md (pasted into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.attacker import ATTACKS
from rankswarm.config import DemoConfig
from rankswarm.demo import DemoSwarm


@dataclass
class Run:
    name: str  # "clean", an attack, or "clean, plain mean" (robust aggregation off)
    attack: str | None
    robust: bool
    minutes: float
    start_greedy: float  # honest peers' mean
    end_greedy: float
    gain: float
    weights_equal: bool  # the honest peers' fingerprints agree at the epoch the first of them to stop ended at
    finite: bool  # every honest step's loss finite
    rounds_dropped: int  # honest peers, summed
    step_seconds: float  # honest peers' mean wall time per step
    averaging_seconds: float  # of which averaging
    bytes_per_step: float  # all-reduce bytes an honest peer sent per step
    senders_banned: int = 0  # honest peers' reducers banning a sender for a non-finite part (log lines)


def run(name: str, attack: str | None, robust: bool, args: argparse.Namespace) -> Run:
    cfg = DemoConfig(peers=3, steps=args.steps, run_dir=str(args.out / name.replace(" ", "-").replace(",", "")),
                     run_id=f"attack-{name.replace(' ', '-').replace(',', '')}", max_minutes=args.max_minutes,
                     seed=args.seed, node_overrides=[f"eval.num_problems={args.eval_problems}",
                                                     f"gossip.robust.enabled={json.dumps(robust)}"])
    swarm = DemoSwarm(cfg)
    started = time.monotonic()
    try:
        swarm.start_coordinator()
        for index in range(3):
            command = ([sys.executable, "-m", "bench.attacker", "--attack", attack]
                       if attack is not None and index == 2 else None)
            swarm.start_peer(index, command=command)
        deadline = started + args.max_minutes * 60
        while not all(not swarm.peers[i].alive for i in (0, 1)) and time.monotonic() < deadline:
            time.sleep(2)
    finally:
        swarm.stop()
    return summarise(name, attack, robust, swarm, (time.monotonic() - started) / 60)


def summarise(name: str, attack: str | None, robust: bool, swarm: DemoSwarm, minutes: float) -> Run:
    from node.gossip.consensus import fingerprints_agree

    honest = [swarm.peer_rows(i) for i in (0, 1)]
    trains = [[r for r in rows if r.get("kind") == "train"] for rows in honest]
    evals = [[r for r in rows if r.get("kind") == "eval"] for rows in honest]
    prints = [{r["epoch"]: r["param_fingerprint"] for r in rows if r.get("param_fingerprint")} for rows in trains]
    shared = sorted(set(prints[0]) & set(prints[1]))
    steps = [r for rows in trains for r in rows]
    logs = [swarm.peer_dir(i) / "log.txt" for i in (0, 1)]
    banned = sum(text.count("sent a non-finite or misshapen part")
                 for text in (path.read_text(errors="replace") for path in logs if path.is_file()))
    start = statistics.fmean(e[0]["greedy_accuracy"] for e in evals)
    end = statistics.fmean(e[-1]["greedy_accuracy"] for e in evals)
    return Run(name=name, attack=attack, robust=robust, minutes=minutes, start_greedy=start, end_greedy=end,
               gain=end - start,
               # at the epoch the first to stop ended at (the other may round once more without it): two peers
               # that split agree at some early epoch, not there
               weights_equal=bool(shared) and fingerprints_agree(prints[0][shared[-1]], prints[1][shared[-1]], 1e-5)
               and shared[-1] == min(rows[-1]["epoch"] for rows in trains),
               finite=all(r["loss"] == r["loss"] and abs(r["loss"]) != float("inf") for r in steps),
               rounds_dropped=sum(rows[-1].get("rounds_dropped") or 0 for rows in trains),
               step_seconds=statistics.fmean(r["time_step"] for r in steps),
               averaging_seconds=statistics.fmean(r.get("time_averaging") or 0.0 for r in steps),
               bytes_per_step=statistics.fmean(r.get("bytes_sent") or 0 for r in steps), senders_banned=banned)


def table(runs: list[Run]) -> str:
    clean = next(r for r in runs if r.name == "clean")
    lines = ["| run | honest gain | vs clean | honest weights | rounds dropped | sender banned (times) | step s "
             "| averaging s | KB/step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        share = f"{100 * r.gain / clean.gain:.0f} %" if clean.gain > 0 else "-"
        state = ("equal" if r.weights_equal else "DIFFER") + ("" if r.finite else ", NOT finite")
        lines.append(f"| {r.name} | {r.start_greedy:.3f} -> {r.end_greedy:.3f} ({r.gain:+.3f}) | {share} | {state} "
                     f"| {r.rounds_dropped} | {r.senders_banned} | {r.step_seconds:.2f} | {r.averaging_seconds:.2f} "
                     f"| {r.bytes_per_step / 1e3:.0f} |")
    return "\n".join(lines)


def reducer_cost(sizes=(10_000, 100_000, 350_000), senders: int = 3, repeats: int = 21) -> str:
    """CPU time of one reducer's aggregation of one part, robust vs hivemind's weighted mean, measured
    interleaved in one process (median of `repeats`). A 3-peer all-reduce of the embedded model's
    dense fp32 gradients gives each reducer a part of about 350,000 values; PowerSGD's factors are
    parts of a few thousand."""
    import torch

    from node.gossip.config import RobustConfig
    from node.gossip.robust import robust_average

    torch.set_num_threads(1)
    policy, rows = RobustConfig(), ["| part (values) | senders | weighted mean (ms) | robust (ms) | ratio |",
                                    "| --- | --- | --- | --- | --- |"]
    for size in sizes:
        generator = torch.Generator().manual_seed(size)
        parts = [torch.randn(size, generator=generator) for _ in range(senders)]
        weights = [64.0] * senders
        plain, robust = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            total = sum(w * p for w, p in zip(weights, parts)) / sum(weights)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = robust_average(parts, weights, parts[0].shape, policy)
            robust.append(time.perf_counter() - started)
            assert torch.isfinite(total).all() and torch.isfinite(result.average).all()
        p, r = statistics.median(plain) * 1e3, statistics.median(robust) * 1e3
        rows.append(f"| {size:,} | {senders} | {p:.3f} | {r:.3f} | {r / p:.1f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_attacks"))
    parser.add_argument("--reducer-cost", action="store_true", help="only time the reducers' aggregation")
    parser.add_argument("--no-plain-mean", action="store_true", help="skip the clean run with robust aggregation off")
    args = parser.parse_args(argv)
    if args.reducer_cost:
        print(reducer_cost())
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [run("clean", None, True, args)]
    if not args.no_plain_mean:
        runs.append(run("clean, plain mean", None, False, args))
    for attack in args.attacks:
        runs.append(run(attack, attack, True, args))
        print(table(runs), flush=True)
    (args.out / "summary.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    (args.out / "summary.md").write_text(table(runs) + "\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
