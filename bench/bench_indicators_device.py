"""ER + ERV + ERA of one training micro-batch: on the host against on the GPU, side by side.

The trainer reduces each micro-batch's final hidden states to ER/ERV/ERA in float64
(`compute_indicators`); `model.shaping_device` says where. This times that call on the same
states (responses of varied lengths, hidden-state-like rows: a low-rank signal, a noise floor and
outlier dimensions) on the CPU with one thread and with all of them, and on CUDA, reporting the
median wall time of `--repeats` calls after a warm-up (CUDA synchronised before each clock read),
and the largest difference of the GPU's indicators from the CPU's.

    PYTHONPATH=. python -m bench.bench_indicators_device --batch 16 --length 265 --width 896

Needs a CUDA device for the GPU column; without one it times the CPU only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shaping import ShapingConfig, compute_indicators


def hidden_states(batch: int, length: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """States [B, T, d] (float32, as a model leaves them) with lengths from T/8 to T, and their mask."""
    gen = torch.Generator().manual_seed(seed)
    signal = torch.randn(batch, length, 8, generator=gen) @ torch.randn(8, width, generator=gen)
    states = signal + 1e-2 * torch.randn(batch, length, width, generator=gen)
    states[..., :4] *= 30.0  # a few outlier dimensions, as LLM states have
    lengths = torch.linspace(max(2, length // 8), length, batch).round().long()
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return states, mask


def timed(hidden: torch.Tensor, mask: torch.Tensor, cfg: ShapingConfig, repeats: int) -> tuple[float, object]:
    sync = torch.cuda.synchronize if hidden.is_cuda else (lambda: None)
    found = compute_indicators(hidden, mask, cfg)  # warm-up: kernels, allocator, solver workspaces
    times = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        found = compute_indicators(hidden, mask, cfg)
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=265)
    parser.add_argument("--width", type=int, default=896)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = ShapingConfig(stride=args.stride, window=args.window)
    hidden, mask = hidden_states(args.batch, args.length, args.width)
    all_threads = torch.get_num_threads()
    rows = []
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        seconds, on_cpu = timed(hidden, mask, cfg, args.repeats)
        rows.append((f"cpu, {threads} thread{'s' if threads > 1 else ''}", seconds, None))
    torch.set_num_threads(all_threads)
    if torch.cuda.is_available():
        seconds, on_gpu = timed(hidden.cuda(), mask.cuda(), cfg, args.repeats)
        gap = max(float((getattr(on_gpu, name).cpu() - getattr(on_cpu, name)).nan_to_num().abs().max())
                  for name in ("er", "erv", "era"))
        rows.append((f"cuda ({torch.cuda.get_device_name()})", seconds, gap))
    print(f"compute_indicators on {args.batch} responses x up to {args.length} states x {args.width}, stride "
          f"{args.stride}, window {args.window}; median of {args.repeats} calls\n")
    print("| where | seconds | vs one CPU thread | max difference from the CPU's indicators |")
    print("| --- | --- | --- | --- |")
    for name, seconds, gap in rows:
        print(f"| {name} | {seconds:.4f} | {rows[0][1] / seconds:.1f}x | {'-' if gap is None else f'{gap:.1e}'} |")


if __name__ == "__main__":
    main()
