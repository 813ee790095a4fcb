"""Ground truth for the shaping tests: verl-method.md sections 2-3 restated in plain float64 NumPy.

Deliberately independent of `shaping.rank` (no shared helper, NumPy's LAPACK SVD instead of
torch's), so an exactness test compares the fast route with the spec, not the code with itself.
Also the hidden-state generators the tests share: Gaussian rows, and rows shaped like real LLM
hidden states (low rank, a noise floor, a few "massive activation" dimensions, drift).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SPEC_EPS = 1e-8  # verl-method.md section 2, in the normalisation and in the log


def er_from_singular_values(s: np.ndarray) -> float:
    """Spec steps 4-5: p_j = s_j / (sum s + 1e-8); ER = exp(-sum p_j log(p_j + 1e-8))."""
    s = np.asarray(s, dtype=np.float64)
    p = s / (s.sum() + SPEC_EPS)
    return math.exp(-float(np.sum(p * np.log(p + SPEC_EPS))))


def er_of_equal_values(k: int, value: float) -> float:
    """ER of k equal singular values `value` (zeros elsewhere), written out by hand: k up to the epsilons."""
    p = value / (k * value + SPEC_EPS)
    return math.exp(-k * p * math.log(p + SPEC_EPS))


def effective_rank(z) -> float:
    """Spec section 2 on one response [T, d]: NaN when T < 2."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape[0] < 2:
        return math.nan
    centred = z - z.mean(axis=0, keepdims=True)
    return er_from_singular_values(np.linalg.svd(centred, compute_uv=False))


def prefix_ranks(z, stride: int, window: int) -> list[float]:
    """Spec section 3 steps 1-3: E_j = ER(first t_j + 1 rows of the window), t_j = s, 2s, ... < L."""
    rows = np.asarray(z, dtype=np.float64)[-window:]
    return [effective_rank(rows[: t + 1]) for t in range(stride, rows.shape[0], stride)]


def dynamics_from_ranks(ranks: list[float]) -> tuple[float, float] | None:
    """Spec section 3 steps 4-7, one loop per definition."""
    velocities = []
    for j in range(1, len(ranks)):  # V_j for j >= 2 (1-based): E_j minus the mean of all earlier E
        velocities.append(ranks[j] - sum(ranks[:j]) / j)
    if len(velocities) < 2:
        return None
    accelerations = [velocities[i] - velocities[i - 1] for i in range(1, len(velocities))]
    return sum(velocities) / len(velocities), sum(accelerations) / len(accelerations)


def rank_dynamics(z, stride: int, window: int) -> tuple[float, float] | None:
    return dynamics_from_ranks(prefix_ranks(z, stride, window))


# -- hidden-state generators ------------------------------------------------------------------
def gaussian(num_rows: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_rows, dim, generator=gen, dtype=torch.float64)


def hidden_like(num_rows: int, dim: int, seed: int, *, rank: int = 8, noise: float = 1e-2,
                num_outliers: int = 3, massive: float = 1e3, drift: float = 0.0) -> torch.Tensor:
    """Rows like a transformer's final states: a rank-`rank` bulk, an isotropic noise floor, a few
    outlier dimensions with a huge constant offset and huge spikes on some tokens, optional drift."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    r = max(1, min(rank, num_rows, dim))
    z = randn(num_rows, r) @ randn(r, dim) / math.sqrt(r) + noise * randn(num_rows, dim)
    outliers = torch.randperm(dim, generator=gen)[: min(num_outliers, dim)]
    z[:, outliers] += 20 * massive  # constant offset: must cancel exactly under centring
    spikes = torch.rand(num_rows, generator=gen) < 0.05  # a few "attention sink" tokens
    spikes[0] = True
    z[spikes[:, None] & torch.isin(torch.arange(dim), outliers)[None, :]] += massive
    z[:, outliers] += 0.1 * massive * randn(num_rows, outliers.numel())
    if drift:
        z += drift * randn(num_rows, dim).cumsum(dim=0) / math.sqrt(num_rows)
    return z


def padded_batch(rows: list[torch.Tensor], *, pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack responses [T_i, d] into [B, max T, d] with a left-aligned mask; padding filled with pad_value."""
    width = max(r.shape[0] for r in rows)
    dim = rows[0].shape[1]
    z = torch.full((len(rows), width, dim), pad_value, dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        z[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return z, mask


# the kinds of rows the exactness tests draw (CPU and GPU), by name
KINDS = {
    "gaussian": lambda t, d, seed: gaussian(t, d, seed),
    # outliers 1e3 over a 1e-2 noise floor: condition number ~1e5
    "hidden": lambda t, d, seed: hidden_like(t, d, seed),
    # outliers 1e4 over a 1e-4 noise floor: condition number ~1e8, beyond what a Gram alone resolves
    "massive": lambda t, d, seed: hidden_like(t, d, seed, noise=1e-4, massive=1e4),
    # prefix means far from the window mean: stresses the analytic centring of leading minors
    "drift": lambda t, d, seed: hidden_like(t, d, seed, noise=1e-1, drift=30.0),
    # exactly low rank (no noise floor): the fast route must give the null space no weight
    "lowrank": lambda t, d, seed: hidden_like(t, d, seed, noise=0.0, rank=5),
    # stored in bf16 like a real model's activations; upcast before any maths
    "bf16": lambda t, d, seed: hidden_like(t, d, seed).to(torch.bfloat16),
}
