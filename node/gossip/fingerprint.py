"""`parameter_fingerprint`: a few numbers that tell whether two peers hold the same weights.

Peers apply the same averaged update, so their weights agree up to float error (the
all-reduce sends fp16 deltas). Comparing whole models across processes is costly; instead
each peer projects a fixed, strided subsample of its parameters (at most `max_samples`
elements, the same positions on every peer) onto a few seeded Gaussian directions. Two
peers one optimizer step apart differ in every coordinate by about the learning rate, which
moves each projection by about lr * sqrt(samples); float noise moves it orders less.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def parameter_fingerprint(params: Iterable[torch.Tensor], *, directions: int = 4, max_samples: int = 65536,
                          seed: int = 0) -> list[float]:
    """Projections (float64) of a strided subsample of `params` onto `directions` seeded directions."""
    tensors = [p.detach().reshape(-1) for p in params]
    total = sum(t.numel() for t in tensors)
    if total == 0:
        raise ValueError("parameter_fingerprint needs at least one parameter element")
    stride = max(1, -(-total // max_samples))  # ceil: at most max_samples elements in all
    sample = torch.cat([t[::stride].to(device="cpu", dtype=torch.float64) for t in tensors])
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(directions, sample.numel(), generator=generator, dtype=torch.float64)
    return (basis @ sample).tolist()
