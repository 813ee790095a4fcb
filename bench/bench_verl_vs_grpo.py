"""VERL-shaped GRPO vs plain GRPO from the embedded checkpoint, at equal steps over several seeds.

Every (arm, seed) pair is one `rankswarm train` subprocess with its own run directory; the
arms differ only in their shaping overrides, the seed changes the training prompts and the
sampling, and the starting model is always the embedded checkpoint. Held-out greedy accuracy,
sampled pass@1 and pass@k are evaluated at the start and at the end of each run; the summary
gives mean, sample std, min and max per arm and the per-seed paired difference of each arm
to plain GRPO (same seed = same first batch of prompts, so the pairing removes part of the
prompt-order noise).

Run (about 14 minutes on the shared 2-core box with the defaults below):

    PYTHONPATH=. python -m bench.bench_verl_vs_grpo --seeds 0 1 2 --steps 100 --parallel 2

Outputs: <out>/<arm>-s<seed>/ (metrics.jsonl, train.log, ...), <out>/summary.json and
<out>/summary.md (the markdown printed at the end, pasted into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Overrides per arm on top of the shared ones. "compat" turns on every reference-compatibility
# switch but keeps our stride 4: the reference stride 40 would leave responses of 17-43 tokens
# with no velocity checkpoint at all, so ERV/ERA would be constant and the gate fixed.
ARMS: dict[str, list[str]] = {
    "grpo": ["shaping.enabled=false"],
    "verl": ["shaping.enabled=true"],
    "compat": ["shaping.enabled=true", "shaping.compat.zero_short_dynamics=true",
               "shaping.compat.zero_start_baselines=true", "shaping.compat.last_token_bonus=true"],
}
EVAL_KEYS = ("greedy_accuracy", "pass_at_1", "pass_at_k")


@dataclass(frozen=True)
class RunResult:
    arm: str
    seed: int
    steps: int
    minutes: float  # wall clock of the whole subprocess, evaluations included
    start: dict[str, float]  # EVAL_KEYS at step 0
    end: dict[str, float]  # EVAL_KEYS after the last step
    mean_bonus: float  # mean shaping bonus per response over all steps
    mean_step_s: float
    shaping_share: float  # time_shaping / (time_forward + time_backward), summed over steps


def shared_overrides(args: argparse.Namespace) -> list[str]:
    """Settings every arm shares: equal steps, one torch thread, the same evaluation."""
    return [f"steps={args.steps}", "torch_threads=1", "progress=true", "eval.every=0",
            f"eval.num_problems={args.eval_problems}", f"eval.pass_k={args.pass_k}",
            f"eval.num_samples={args.num_samples}", "checkpoint.every=0", "checkpoint.resume=false",
            *args.set]


def train_command(run_dir: Path, arm: str, seed: int, shared: list[str]) -> list[str]:
    overrides = [f'run_dir="{run_dir}"', f"seed={seed}", *shared, *ARMS[arm]]
    command = [sys.executable, "-m", "rankswarm.cli", "train"]
    for item in overrides:
        command += ["--set", item]
    return command


def run_one(out: Path, arm: str, seed: int, shared: list[str], timeout_s: float) -> RunResult:
    """Train one (arm, seed) from scratch in a fresh run directory and read its metrics back."""
    run_dir = out / f"{arm}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover checkpoint would be resumed otherwise
    run_dir.mkdir(parents=True)
    command = train_command(run_dir, arm, seed, shared)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    with (run_dir / "train.log").open("w") as log_file:
        log_file.write(" ".join(command) + "\n")
        log_file.flush()
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                              timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} exited with {proc.returncode}; see {run_dir / 'train.log'}")
    return read_run(run_dir, arm, seed, (time.monotonic() - started) / 60)


def read_run(run_dir: Path, arm: str, seed: int, minutes: float) -> RunResult:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    evals = [r for r in rows if r["kind"] == "eval"]
    train = [r for r in rows if r["kind"] == "train"]
    if len(evals) < 2 or not train:
        raise RuntimeError(f"{run_dir}: expected a start and an end evaluation and some steps")
    model_s = sum(r["time_forward"] + r["time_backward"] for r in train)
    return RunResult(
        arm=arm, seed=seed, steps=train[-1]["step"], minutes=minutes,
        start={k: evals[0][k] for k in EVAL_KEYS}, end={k: evals[-1][k] for k in EVAL_KEYS},
        mean_bonus=statistics.fmean(r["bonus"] for r in train),
        mean_step_s=statistics.fmean(r["time_step"] for r in train),
        shaping_share=sum(r["time_shaping"] for r in train) / model_s)


def spread(values: list[float]) -> dict[str, float]:
    """mean, sample std (0 for one value), min and max."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def summarise(results: list[RunResult]) -> dict[str, Any]:
    """Per arm: spread of start/end metrics, gains, and paired end differences to plain GRPO."""
    by_arm: dict[str, dict[int, RunResult]] = {}
    for r in results:
        by_arm.setdefault(r.arm, {})[r.seed] = r
    summary: dict[str, Any] = {}
    for arm, runs in by_arm.items():
        rows = list(runs.values())
        entry = {f"{when}_{k}": spread([getattr(r, when)[k] for r in rows])
                 for when in ("start", "end") for k in EVAL_KEYS}
        entry["gain_greedy_accuracy"] = spread([r.end["greedy_accuracy"] - r.start["greedy_accuracy"] for r in rows])
        entry["mean_bonus"] = statistics.fmean(r.mean_bonus for r in rows)
        entry["mean_step_s"] = statistics.fmean(r.mean_step_s for r in rows)
        entry["shaping_share"] = statistics.fmean(r.shaping_share for r in rows)
        entry["seeds"] = sorted(runs)
        grpo = by_arm.get("grpo", {})
        paired = [s for s in runs if s in grpo]
        if arm != "grpo" and paired:
            entry["paired_vs_grpo"] = {k: spread([runs[s].end[k] - grpo[s].end[k] for s in paired])
                                       for k in EVAL_KEYS}
        summary[arm] = entry
    return summary


def _pm(s: dict[str, float], scale: float = 100.0, signed: bool = False) -> str:
    fmt = "+.1f" if signed else ".1f"
    return (f"{s['mean'] * scale:{fmt}} ± {s['std'] * scale:.1f} "
            f"[{s['min'] * scale:{fmt}}, {s['max'] * scale:{fmt}}]")


def render_markdown(summary: dict[str, Any], results: list[RunResult], args: argparse.Namespace) -> str:
    k = args.pass_k
    lines = [f"Percent, mean ± sample std [min, max] over seeds {args.seeds}; {args.steps} steps per run; "
             f"{args.eval_problems} held-out problems, pass@1 and pass@{k} from {args.num_samples} samples "
             f"per problem at T = 1.0.", "",
             f"| arm | start greedy | end greedy | end pass@1 | end pass@{k} | greedy gain | mean bonus | s/step |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, e in summary.items():
        lines.append(f"| {arm} | {_pm(e['start_greedy_accuracy'])} | {_pm(e['end_greedy_accuracy'])} | "
                     f"{_pm(e['end_pass_at_1'])} | {_pm(e['end_pass_at_k'])} | "
                     f"{_pm(e['gain_greedy_accuracy'], signed=True)} | {e['mean_bonus']:.4f} | "
                     f"{e['mean_step_s']:.2f} |")
    paired = [(arm, e["paired_vs_grpo"]) for arm, e in summary.items() if "paired_vs_grpo" in e]
    if paired:
        lines += ["", "Paired end differences to plain GRPO (same seed), points:", "",
                  f"| arm | Δ greedy | Δ pass@1 | Δ pass@{k} |", "|---|---|---|---|"]
        for arm, d in paired:
            lines.append(f"| {arm} | {_pm(d['greedy_accuracy'], signed=True)} | "
                         f"{_pm(d['pass_at_1'], signed=True)} | {_pm(d['pass_at_k'], signed=True)} |")
    lines += ["", "Per run (end greedy / pass@1 / pass@k, percent):", ""]
    for r in sorted(results, key=lambda r: (r.arm, r.seed)):
        lines.append(f"- {r.arm} seed {r.seed}: {r.end['greedy_accuracy'] * 100:.1f} / "
                     f"{r.end['pass_at_1'] * 100:.1f} / {r.end['pass_at_k'] * 100:.1f} ({r.minutes:.1f} min)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (equal for every arm)")
    parser.add_argument("--arms", nargs="+", default=["grpo", "verl"], choices=sorted(ARMS))
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (each uses one torch thread)")
    parser.add_argument("--eval-problems", type=int, default=500, help="held-out problems (the pool has 500)")
    parser.add_argument("--pass-k", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=8, help="samples per problem for pass@1/pass@k")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra TrainConfig override applied to every arm (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_verl_vs_grpo")
    parser.add_argument("--run-timeout-min", type=float, default=30.0, help="kill a run that takes longer")
    args = parser.parse_args(argv)
    if args.pass_k < 1 or args.num_samples < args.pass_k:
        parser.error("need 1 <= --pass-k <= --num-samples")
    if args.parallel < 1 or args.steps < 1:
        parser.error("--parallel and --steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    shared = shared_overrides(args)
    # seed-major order: each seed's arms finish close together, so a cut-short bench stays paired
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = [pool.submit(run_one, args.out, arm, seed, shared, args.run_timeout_min * 60)
                   for arm, seed in jobs]
        results = []
        for (arm, seed), future in zip(jobs, futures):
            results.append(future.result())
            print(f"done {arm} seed {seed}: end greedy {results[-1].end['greedy_accuracy']:.3f}", flush=True)
    summary = summarise(results)
    markdown = render_markdown(summary, results, args)
    total_min = (time.monotonic() - started) / 60
    record = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "shared_overrides": shared, "arms": {a: ARMS[a] for a in args.arms}, "total_minutes": total_min,
              "summary": summary, "runs": [asdict(r) for r in results]}
    (args.out / "summary.json").write_text(json.dumps(record, indent=2))
    (args.out / "summary.md").write_text(markdown + "\n")
    print(f"\n{markdown}\n\ntotal {total_min:.1f} min; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
