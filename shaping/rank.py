"""Effective rank (ER) of a response's hidden states and its dynamics ERV/ERA (verl-method.md 2-3).

For one response with hidden states Z [T, d] (row i = the state that emitted token i):

    Zc = Z - mean_rows(Z);  s = singular values of Zc;  p_j = s_j / (sum_k s_k + 1e-8)
    ER = exp(-sum_j p_j log(p_j + 1e-8))

Rank dynamics use the last `window` rows, prefixes of t_j + 1 rows at t_j = stride, 2 stride, ...
(t_j < rows), E_j = ER(prefix j), V_j = E_j - mean(E_1..E_{j-1}) (j >= 2), A_j = V_j - V_{j-1}
(j >= 3); ERV = mean V, ERA = mean A; fewer than two velocities means no ERV/ERA.

The fast route never runs an SVD per prefix. Singular values come from a float64 symmetric
eigen-solve of the Gram of the smaller side; every prefix Gram of one response is a leading
minor of one window Gram, centred analytically (H G H with H = I - 11^T / n), and all
responses' minors of the same size go through one batched `eigvalsh`. Two numerical guards
keep it within 1e-9 of a float64 SVD: the window mean is subtracted before the Gram is formed
(centring is invariant to a constant row shift, and this removes the huge constant offsets of
"massive activation" dimensions that would otherwise cancel catastrophically), and eigenvalues
below the eigen-solver's noise floor (a few n * eps * lambda_max) are exact zeros (null space,
padding) rather than noise that sqrt would amplify to ~1e-8 relative singular values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shaping.config import ShapingConfig

_P_EPS = 1e-8  # the spec's epsilon, in both the normalisation and the log
_EIG_RTOL = 8 * torch.finfo(torch.float64).eps  # times n * lambda_max: eigvalsh's noise floor


@dataclass(frozen=True)
class RankIndicators:
    """Per-response indicators of a batch; NaN marks a missing value."""

    er: torch.Tensor  # [B] float64
    erv: torch.Tensor  # [B] float64
    era: torch.Tensor  # [B] float64

    def stacked(self) -> torch.Tensor:
        """[B, 3] in the order (ERA, ERV, ER) used by the shaping channels."""
        return torch.stack([self.era, self.erv, self.er], dim=-1)


# -- validation -----------------------------------------------------------------------------
def _check_single(z: torch.Tensor) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"hidden states of one response must be a [T, d] tensor, got shape "
                         f"{tuple(getattr(z, 'shape', ()))}")
    if not torch.isfinite(z).all():
        raise ValueError("hidden states contain NaN or Inf; check the model's dtype/overflow before shaping")
    return z.detach().to(torch.float64)


def _check_batch(z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        raise ValueError(f"batched hidden states must be [B, T, d], got shape {tuple(getattr(z, 'shape', ()))}")
    if z.shape[0] == 0:
        raise ValueError("empty batch: shaping needs at least one response")
    if not isinstance(mask, torch.Tensor) or mask.shape != z.shape[:2]:
        raise ValueError(f"mask must be [B, T] = {tuple(z.shape[:2])}, got {tuple(getattr(mask, 'shape', ()))}")
    mask = mask.to(torch.bool)
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise ValueError("mask rows must be left-aligned (ones then zeros): response tokens first, padding after")
    if not torch.isfinite(z[mask]).all():
        raise ValueError("hidden states contain NaN or Inf at response positions; check the model's dtype")
    return z.detach().to(torch.float64), lengths


# -- the maths --------------------------------------------------------------------------------
def er_from_singular_values(s: torch.Tensor) -> torch.Tensor:
    """ER from singular values [..., k] (zeros allowed, they contribute nothing)."""
    p = s / (s.sum(dim=-1, keepdim=True) + _P_EPS)
    return torch.exp(-(p * torch.log(p + _P_EPS)).sum(dim=-1))


def singular_values_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Singular values [..., n] of X from its float64 Gram X X^T or X^T X [..., n, n]."""
    eig = torch.linalg.eigvalsh(gram)
    floor = eig[..., -1:].clamp(min=0) * (_EIG_RTOL * gram.shape[-1])
    return torch.sqrt(torch.where(eig > floor, eig, torch.zeros_like(eig)))


def _centred_minors(gram: torch.Tensor, n: int) -> torch.Tensor:
    """H G[:n, :n] H for a batch of Grams [..., L, L] of row-vectors: the centred prefix Gram."""
    g = gram[..., :n, :n]
    row_mean = g.mean(dim=-1)  # [..., n]
    total_mean = row_mean.mean(dim=-1, keepdim=True)  # [..., 1]
    return g - row_mean[..., :, None] - row_mean[..., None, :] + total_mean[..., None]


def _prefix_covariance(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Centred d x d scatter of the first n rows [..., L, d] (used when n > d)."""
    prefix = rows[..., :n, :]
    centred = prefix - prefix.mean(dim=-2, keepdim=True)
    return centred.transpose(-1, -2) @ centred


def checkpoint_sizes(num_rows: int, stride: int) -> list[int]:
    """Prefix sizes t_j + 1 for t_j = stride, 2 stride, ... while t_j < num_rows."""
    return [t + 1 for t in range(stride, num_rows, stride)]


def dynamics_from_prefix_ranks(ranks: list[float]) -> tuple[float, float] | None:
    """(ERV, ERA) from the prefix ERs E_1..E_J; None when there are fewer than two velocities."""
    if len(ranks) < 3:
        return None
    velocities = [ranks[j] - sum(ranks[:j]) / j for j in range(1, len(ranks))]
    accelerations = [velocities[j] - velocities[j - 1] for j in range(1, len(velocities))]
    return sum(velocities) / len(velocities), sum(accelerations) / len(accelerations)


# -- batched fast route -------------------------------------------------------------------------
def effective_rank_batch(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ER of each response in a padded batch z [B, T, d] with a left-aligned mask [B, T]; NaN if T < 2."""
    z64, lengths = _check_batch(z, mask)
    m = mask.to(torch.bool)[..., None].to(z64.dtype)  # [B, T, 1]
    mean = (z64 * m).sum(dim=1, keepdim=True) / lengths.clamp(min=1)[:, None, None].to(z64.dtype)
    centred = (z64 - mean) * m  # [B, T, d]: padding rows are exact zeros -> zero eigenvalues
    num_rows, dim = z64.shape[1], z64.shape[2]
    gram = centred @ centred.transpose(1, 2) if num_rows <= dim else centred.transpose(1, 2) @ centred
    er = er_from_singular_values(singular_values_from_gram(gram))
    return torch.where(lengths >= 2, er, torch.full_like(er, float("nan")))


def _window_rows(z64: torch.Tensor, lengths: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each response's last `window` rows moved to start at row 0 and shifted by their own mean
    (ER is shift-invariant); returns rows [B, L, d] (zero padding) and window lengths [B]."""
    num, num_rows, dim = z64.shape
    win = lengths.clamp(max=window)  # [B]
    width = max(int(win.max()), 1)
    positions = torch.arange(width, device=z64.device)
    valid = positions[None, :] < win[:, None]  # [B, L]
    index = ((lengths - win)[:, None] + positions[None, :]).clamp(max=num_rows - 1)
    rows = z64.gather(1, index[..., None].expand(num, width, dim)) * valid[..., None]
    mean = rows.sum(dim=1, keepdim=True) / win.clamp(min=1)[:, None, None].to(z64.dtype)
    return (rows - mean) * valid[..., None], win


def prefix_ranks_batch(z: torch.Tensor, mask: torch.Tensor, stride: int, window: int) -> torch.Tensor:
    """E_j for every response and checkpoint: [B, J] float64, NaN where a response has no checkpoint j.

    Checkpoint j of a response exists while t_j = (j + 1) * stride < its window length, so every
    response's checkpoints of one size are solved together in one batched eigen-solve."""
    if stride < 1 or window < 2:
        raise ValueError(f"stride must be >= 1 and window >= 2, got stride={stride}, window={window}")
    z64, lengths = _check_batch(z, mask)
    rows, win = _window_rows(z64, lengths, window)
    dim = z64.shape[2]
    sizes = checkpoint_sizes(rows.shape[1], stride)
    ranks = torch.full((rows.shape[0], len(sizes)), float("nan"), dtype=torch.float64)
    gram = rows @ rows.transpose(1, 2) if sizes and sizes[0] <= dim else None  # [B, L, L]
    for j, n in enumerate(sizes):
        members = win >= n
        if n <= dim:  # the n x n centred leading minor of the window Gram
            mats = _centred_minors(gram[members], n)
        else:  # the d x d side is smaller
            mats = _prefix_covariance(rows[members], n)
        ranks[members, j] = er_from_singular_values(singular_values_from_gram(mats))
    return ranks


def dynamics_from_rank_matrix(ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised `dynamics_from_prefix_ranks` over rows of a NaN-padded [B, J] matrix."""
    present = torch.isfinite(ranks)
    count = present.sum(dim=1)  # checkpoints are a prefix of the columns
    values = torch.where(present, ranks, torch.zeros_like(ranks))
    j = torch.arange(1, ranks.shape[1], dtype=torch.float64)
    velocity = values[:, 1:] - values.cumsum(dim=1)[:, :-1] / j  # [B, J-1]; V_j for j >= 2
    v_ok = present[:, 1:]
    accel = velocity[:, 1:] - velocity[:, :-1]  # [B, J-2]
    a_ok = present[:, 2:]
    erv = (velocity * v_ok).sum(dim=1) / v_ok.sum(dim=1).clamp(min=1)
    era = (accel * a_ok).sum(dim=1) / a_ok.sum(dim=1).clamp(min=1)
    nan = torch.full_like(erv, float("nan"))
    enough = count >= 3
    return torch.where(enough, erv, nan), torch.where(enough, era, nan)


def rank_dynamics_batch(z: torch.Tensor, mask: torch.Tensor, stride: int = 40, window: int = 512,
                        zero_short: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ERV [B], ERA [B]) float64; NaN where a response is too short (0 with `zero_short`)."""
    ranks = prefix_ranks_batch(z, mask, stride, window)
    if ranks.shape[1] < 3:
        nan = torch.full((ranks.shape[0],), 0.0 if zero_short else float("nan"), dtype=torch.float64)
        return nan, nan.clone()
    erv, era = dynamics_from_rank_matrix(ranks)
    if zero_short:
        erv, era = torch.nan_to_num(erv, nan=0.0), torch.nan_to_num(era, nan=0.0)
    return erv, era


def compute_indicators(hidden: torch.Tensor, mask: torch.Tensor, cfg: ShapingConfig) -> RankIndicators:
    """ER, ERV and ERA of every response: the one call the trainer makes per step."""
    er = effective_rank_batch(hidden, mask)
    erv, era = rank_dynamics_batch(hidden, mask, cfg.stride, cfg.window, cfg.compat.zero_short_dynamics)
    return RankIndicators(er=er, erv=erv, era=era)


# -- single-response forms ----------------------------------------------------------------------
def _as_batch(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z64 = _check_single(z)
    return z64[None], torch.ones(1, z64.shape[0], dtype=torch.bool)


def effective_rank(z: torch.Tensor) -> float:
    """ER of one response's hidden states z [T, d]; NaN when T < 2."""
    zb, mb = _as_batch(z)
    return float(effective_rank_batch(zb, mb)[0])


def rank_dynamics(z: torch.Tensor, stride: int = 40, window: int = 512,
                  zero_short: bool = False) -> tuple[float, float] | None:
    """(ERV, ERA) of one response; None when too short (or (0, 0) with `zero_short`)."""
    zb, mb = _as_batch(z)
    ranks = prefix_ranks_batch(zb, mb, stride, window)[0]
    dyn = dynamics_from_prefix_ranks(ranks[torch.isfinite(ranks)].tolist())
    if dyn is None:
        return (0.0, 0.0) if zero_short else None
    return dyn


# -- the reference route (tests and benchmarks) ---------------------------------------------------
def effective_rank_svd(z: torch.Tensor) -> float:
    """ER by a plain float64 SVD of the explicitly centred rows: the ground truth."""
    z64 = _check_single(z)
    if z64.shape[0] < 2:
        return float("nan")
    s = torch.linalg.svdvals(z64 - z64.mean(dim=0, keepdim=True))
    return float(er_from_singular_values(s))


def rank_dynamics_svd(z: torch.Tensor, stride: int = 40, window: int = 512) -> tuple[float, float] | None:
    """(ERV, ERA) with one SVD per prefix, as the reference implementation loops."""
    z64 = _check_single(z)
    rows = z64[-window:]
    ranks = [effective_rank_svd(rows[:n]) for n in checkpoint_sizes(rows.shape[0], stride)]
    return dynamics_from_prefix_ranks(ranks)
