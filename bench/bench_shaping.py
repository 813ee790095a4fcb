"""Cost of ER + ERV + ERA: the fast route against the reference route, and against a training step.

Part 1, route: responses of T = 1024, d = 896 with stride 40 and window 512, timed side by side
in the same run, interleaved repeat by repeat, median reported:
- fast: the public `shaping` functions (`effective_rank` + `rank_dynamics` for one response,
  `compute_indicators` for a batch of 16);
- reference: the route the reference implementation takes, looped per response: one float64
  SVD of the centred response for ER, then per checkpoint one float64 eigen-solve of the
  centred prefix's Gram (smaller side);
- exactness: both against the ground truth, a float64 SVD of every centred prefix
  (`effective_rank_svd` / `rank_dynamics_svd`), as the max absolute difference over ER, ERV, ERA.
Inputs: Gaussian rows; "llm-like" rows (power-law spectrum, a few outlier dimensions 30x the
bulk with a large constant offset); and "stress" rows (outliers 1e3 over a 1e-2 noise floor,
condition number ~1e5), where the fast route's Gram cannot settle the ERs and falls back to SVD.

Part 2, budget: the embedded model's GRPO batch with the default TrainConfig (16 prompts x 8
rollouts, sampled once), timed as policy forward + loss backward against `compute_indicators`
(stride 4) on that forward's hidden states, and against the trainer's whole shaping block
(indicators, auxiliary signal, bonus, token advantages). Target: at most 5 % of forward + backward.

Times are CPU seconds of this process (wall clock is reported too): with one torch thread that
is the work done, and it stays put while other jobs share the cores. More threads on a busy
2-core box make OpenMP threads spin against the neighbours; use them only on a quiet machine.

Run (about 9 minutes on the shared 2-core box):

    PYTHONPATH=. python -m bench.bench_shaping --threads 1 --repeats 5 --out runs/bench_shaping

Prints a markdown table (pasted into docs/benchmarks.md); --out DIR also writes summary.json
and summary.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from shaping import (
    Baselines,
    IndicatorStats,
    ShapingConfig,
    aux_signal,
    base_advantages,
    compute_indicators,
    effective_rank,
    effective_rank_svd,
    rank_dynamics,
    rank_dynamics_svd,
    shaping_bonus,
    token_advantages,
)
from shaping.rank import checkpoint_sizes, dynamics_from_prefix_ranks, er_from_singular_values

NUM_ROWS, DIM, STRIDE, WINDOW, BATCH = 1024, 896, 40, 512, 16


# -- inputs ---------------------------------------------------------------------------------------
def gaussian_rows(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(NUM_ROWS, DIM, generator=gen, dtype=torch.float64)


def llm_like_rows(gen: torch.Generator) -> torch.Tensor:
    """Power-law spectrum s_k ~ k^-0.8 (a few dominant directions, a long tail), plus 4 outlier
    dimensions 30x the bulk with a constant offset of 300x, like post-norm massive activations."""
    num = min(NUM_ROWS, DIM)
    u = torch.linalg.qr(torch.randn(NUM_ROWS, num, generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(DIM, num, generator=gen, dtype=torch.float64)).Q
    spectrum = torch.arange(1, num + 1, dtype=torch.float64) ** -0.8
    z = (u * spectrum) @ v.T * math.sqrt(NUM_ROWS * DIM) / spectrum.norm()
    outliers = torch.randperm(DIM, generator=gen)[:4]
    z[:, outliers] = 300.0 + 30.0 * torch.randn(NUM_ROWS, 4, generator=gen, dtype=torch.float64)
    return z


def stress_rows(gen: torch.Generator) -> torch.Tensor:
    """Rank-8 bulk over a 1e-2 noise floor, 3 outlier dimensions (offset 2e4, spikes 1e3)."""
    z = torch.randn(NUM_ROWS, 8, generator=gen, dtype=torch.float64) @ torch.randn(8, DIM, generator=gen,
                                                                                      dtype=torch.float64)
    z = z / math.sqrt(8) + 1e-2 * torch.randn(NUM_ROWS, DIM, generator=gen, dtype=torch.float64)
    outliers = torch.randperm(DIM, generator=gen)[:3]
    spikes = torch.rand(NUM_ROWS, generator=gen) < 0.05
    z[:, outliers] += 2e4 + 100.0 * torch.randn(NUM_ROWS, 3, generator=gen, dtype=torch.float64)
    z[spikes[:, None] & torch.isin(torch.arange(DIM), outliers)[None, :]] += 1e3
    return z


INPUTS: dict[str, Callable[[torch.Generator], torch.Tensor]] = {
    "gaussian": gaussian_rows, "llm-like": llm_like_rows, "stress": stress_rows}


# -- the reference route ------------------------------------------------------------------------
def reference_prefix_er(prefix: torch.Tensor) -> float:
    """One eigen-solve: float64 Gram of the smaller side of the centred prefix."""
    centred = prefix - prefix.mean(dim=0, keepdim=True)
    gram = centred @ centred.T if centred.shape[0] <= centred.shape[1] else centred.T @ centred
    return float(er_from_singular_values(torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()))


def reference_route(z: torch.Tensor, stride: int, window: int) -> tuple[float, float, float]:
    """(ER, ERV, ERA) of one response: full SVD for ER, an eigen-solve per checkpoint."""
    er = effective_rank_svd(z)
    rows = z[-window:]
    dyn = dynamics_from_prefix_ranks([reference_prefix_er(rows[:n]) for n in checkpoint_sizes(rows.shape[0], stride)])
    return (er, *dyn) if dyn is not None else (er, math.nan, math.nan)


def ground_truth(z: torch.Tensor, stride: int, window: int) -> tuple[float, float, float]:
    dyn = rank_dynamics_svd(z, stride, window)
    return (effective_rank_svd(z), *dyn) if dyn is not None else (effective_rank_svd(z), math.nan, math.nan)


def fast_single(z: torch.Tensor, stride: int, window: int) -> tuple[float, float, float]:
    dyn = rank_dynamics(z, stride=stride, window=window)
    return (effective_rank(z), *dyn) if dyn is not None else (effective_rank(z), math.nan, math.nan)


def fast_batch(z: torch.Tensor, stride: int, window: int) -> list[tuple[float, float, float]]:
    ind = compute_indicators(z, torch.ones(z.shape[:2], dtype=torch.bool), ShapingConfig(stride=stride, window=window))
    return list(zip(ind.er.tolist(), ind.erv.tolist(), ind.era.tolist()))


def max_abs_diff(got: list[tuple[float, ...]], truth: list[tuple[float, ...]]) -> float:
    return max(abs(a - b) for g, t in zip(got, truth) for a, b in zip(g, t))


# -- timing ---------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(CPU seconds of this process, wall seconds, result)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def race(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median CPU seconds (and wall seconds, as "<name>_wall") of each function, run interleaved.

    CPU time is the primary number: with one torch thread it is the work done, and it barely
    moves when other jobs share the cores, whereas wall time on the shared box swings 3x."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    walls: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for name, fn in fns.items():  # warm-up (allocator, LAPACK workspaces), result kept
        results[name] = fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu, wall, _ = timed(fn)
            times[name].append(cpu)
            walls[name].append(wall)
    medians = {name: statistics.median(t) for name, t in times.items()}
    medians.update({f"{name}_wall": statistics.median(t) for name, t in walls.items()})
    return medians, results


def bench_routes(repeats: int, seed: int, inputs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for kind in inputs:
        make = INPUTS[kind]
        gen = torch.Generator().manual_seed(seed)
        batch = torch.stack([make(gen) for _ in range(BATCH)])  # [16, 1024, 896] float64
        one = batch[0]
        truth = [ground_truth(z, STRIDE, WINDOW) for z in batch]
        single, single_out = race({"fast": lambda z=one: fast_single(z, STRIDE, WINDOW),
                                   "reference": lambda z=one: reference_route(z, STRIDE, WINDOW)}, repeats)
        many, many_out = race({"fast": lambda b=batch: fast_batch(b, STRIDE, WINDOW),
                               "reference": lambda b=batch: [reference_route(z, STRIDE, WINDOW) for z in b]}, repeats)
        truth_s = timed(lambda b=batch: [ground_truth(z, STRIDE, WINDOW) for z in b])[0]
        rows.append({
            "input": kind, "single_fast_s": single["fast"], "single_reference_s": single["reference"],
            "batch_fast_s": many["fast"], "batch_reference_s": many["reference"], "batch_svd_per_prefix_s": truth_s,
            "single_fast_wall_s": single["fast_wall"], "single_reference_wall_s": single["reference_wall"],
            "batch_fast_wall_s": many["fast_wall"], "batch_reference_wall_s": many["reference_wall"],
            "err_fast": max(max_abs_diff([single_out["fast"]], truth[:1]), max_abs_diff(many_out["fast"], truth)),
            "err_reference": max_abs_diff(many_out["reference"], truth)})
        print(f"[routes] {kind}: {rows[-1]}", flush=True)
    return rows


# -- the training-step budget ------------------------------------------------------------------
def bench_budget(repeats: int, seed: int) -> dict[str, Any]:
    from node.model.loading import load_policy
    from node.tasks import build_task
    from node.training.config import TrainConfig
    from node.training.loss import policy_loss
    from node.training.policy_forward import policy_forward
    from node.training.rollout import sample_rollouts

    cfg = TrainConfig()
    torch.manual_seed(seed)
    model, tokenizer = load_policy(cfg.model.path, "cpu", cfg.model.dtype)
    task = build_task(cfg.task)
    problems = task.sample(random.Random(seed), cfg.algo.prompts_per_step)
    batch = sample_rollouts(model, tokenizer, [p.prompt for p in problems], cfg.sampling)
    mask, group = batch.response_mask, cfg.sampling.group_size
    rewards = torch.tensor([task.score(p, t, cfg.reward) for p, t in
                            zip([problems[i // group] for i in range(len(batch.texts))], batch.texts)],
                           dtype=torch.float64)
    model.train()
    hidden_box: dict[str, torch.Tensor] = {}

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        out = policy_forward(model, batch, temperature=cfg.sampling.temperature)
        advantages = torch.randn(mask.shape, generator=torch.Generator().manual_seed(0)) * mask
        parts = policy_loss(out.logprobs, out.logprobs.detach(), advantages, mask, cfg.loss, entropy=out.entropy)
        parts.total.backward()
        hidden_box["hidden"] = out.hidden

    forward_backward()
    hidden = hidden_box["hidden"]
    ind = compute_indicators(hidden, mask, cfg.shaping)
    baselines = Baselines.initial(cfg.shaping).update(IndicatorStats.from_batch(ind, rewards))

    def shaping_block() -> None:  # what Trainer.train_step times as time_shaping
        indicators = compute_indicators(hidden, mask, cfg.shaping)
        a0 = base_advantages(rewards.view(-1, group), cfg.algo.estimator).reshape(-1)
        aux = aux_signal(indicators, baselines, cfg.shaping)
        token_advantages(a0, shaping_bonus(a0, aux.r_aux, cfg.shaping.kappa), mask)

    def reference_indicators() -> None:
        lengths = mask.sum(dim=1).tolist()
        for i, n in enumerate(lengths):
            reference_route(hidden[i, :n].to(torch.float64), cfg.shaping.stride, cfg.shaping.window)

    medians, _ = race({"forward_backward": forward_backward,
                       "indicators": lambda: compute_indicators(hidden, mask, cfg.shaping),
                       "shaping_block": shaping_block, "reference_indicators": reference_indicators}, repeats)
    lengths = mask.sum(dim=1).float()
    result = {"num_responses": int(mask.shape[0]), "hidden_dim": int(hidden.shape[-1]),
              "mean_tokens": float(lengths.mean()), "max_tokens": int(lengths.max()),
              "stride": cfg.shaping.stride, "window": cfg.shaping.window, **{f"{k}_s": v for k, v in medians.items()}}
    result["share_indicators"] = medians["indicators"] / medians["forward_backward"]
    result["share_shaping_block"] = medians["shaping_block"] / medians["forward_backward"]
    result["share_reference"] = medians["reference_indicators"] / medians["forward_backward"]
    print(f"[budget] {result}", flush=True)
    return result


# -- report ---------------------------------------------------------------------------------------
def render_markdown(routes: list[dict[str, Any]], budget: dict[str, Any] | None, args: argparse.Namespace) -> str:
    lines = [f"T = {NUM_ROWS}, d = {DIM}, stride {STRIDE}, window {WINDOW}; CPU time, median of {args.repeats} "
             f"interleaved repeats; {args.threads} torch thread(s). Error: max |difference| over ER, ERV, ERA "
             f"against a float64 SVD of every prefix (its time: one run).", "",
             "| input | one response: fast | reference | speed-up | batch of 16: fast | reference | speed-up "
             "| SVD per prefix | max error fast | max error reference |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in routes:
        lines.append(
            f"| {r['input']} | {r['single_fast_s'] * 1e3:.0f} ms | {r['single_reference_s'] * 1e3:.0f} ms | "
            f"**{r['single_reference_s'] / r['single_fast_s']:.2f}x** | {r['batch_fast_s']:.2f} s | "
            f"{r['batch_reference_s']:.2f} s | **{r['batch_reference_s'] / r['batch_fast_s']:.2f}x** | "
            f"{r['batch_svd_per_prefix_s']:.2f} s | {r['err_fast']:.1e} | {r['err_reference']:.1e} |")
    lines += ["", "Wall clock of the same runs (the box was shared): " + "; ".join(
        f"{r['input']} {r['single_fast_wall_s'] * 1e3:.0f} vs {r['single_reference_wall_s'] * 1e3:.0f} ms, "
        f"batch {r['batch_fast_wall_s']:.2f} vs {r['batch_reference_wall_s']:.2f} s" for r in routes) + "."]
    if budget:
        b = budget
        lines += ["", f"Embedded model, default TrainConfig GRPO batch: {b['num_responses']} responses, "
                      f"{b['mean_tokens']:.1f} tokens on average (max {b['max_tokens']}), d = {b['hidden_dim']}, "
                      f"stride {b['stride']}, window {b['window']}; CPU time (wall in brackets), median of "
                      f"{args.repeats} interleaved repeats.", "",
                  "| what | time | share of forward + backward |", "|---|---|---|",
                  f"| policy forward + loss backward | {b['forward_backward_s'] * 1e3:.0f} ms "
                  f"({b['forward_backward_wall_s'] * 1e3:.0f} ms) | 100 % |",
                  f"| ER + ERV + ERA, fast (`compute_indicators`) | {b['indicators_s'] * 1e3:.1f} ms "
                  f"({b['indicators_wall_s'] * 1e3:.1f} ms) | **{b['share_indicators'] * 100:.1f} %** |",
                  f"| whole shaping block (indicators, signal, bonus, token advantages) | "
                  f"{b['shaping_block_s'] * 1e3:.1f} ms ({b['shaping_block_wall_s'] * 1e3:.1f} ms) | "
                  f"{b['share_shaping_block'] * 100:.1f} % |",
                  "| ER + ERV + ERA, reference route (looped per response) | "
                  f"{b['reference_indicators_s'] * 1e3:.0f} ms "
                  f"({b['reference_indicators_wall_s'] * 1e3:.0f} ms) | {b['share_reference'] * 100:.1f} % |"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every timed part")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS), help="route-bench inputs")
    parser.add_argument("--skip-budget", action="store_true", help="only the fast-vs-reference routes")
    parser.add_argument("--skip-routes", action="store_true", help="only the training-step budget")
    parser.add_argument("--out", type=Path, default=None, help="also write summary.json and summary.md here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    routes = [] if args.skip_routes else bench_routes(args.repeats, args.seed, args.inputs)
    budget = None if args.skip_budget else bench_budget(args.repeats, args.seed)
    markdown = render_markdown(routes, budget, args)
    print(f"\n{markdown}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "torch": torch.__version__, "machine": platform.machine(), "routes": routes, "budget": budget}
        (args.out / "summary.json").write_text(json.dumps(record, indent=2))
        (args.out / "summary.md").write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
