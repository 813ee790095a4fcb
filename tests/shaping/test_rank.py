"""ER, ERV and ERA: the spec's sanity facts, hand-computed examples, batched forms, bad input.

Exactness against a float64 SVD over many shapes lives in test_rank_exactness.py.
"""

import math

import numpy as np
import pytest
import spec_reference as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaping import (
    ShapingConfig,
    compute_indicators,
    effective_rank,
    effective_rank_batch,
    rank_dynamics,
    rank_dynamics_batch,
)
from shaping.rank import dynamics_from_prefix_ranks, dynamics_from_rank_matrix

pytestmark = pytest.mark.unit


def unit_spread(z: torch.Tensor) -> torch.Tensor:
    """z rescaled so its centred singular values sum to 100: the spec's 1e-8 epsilons then move
    ER by well under 1e-7 (they matter for rows with almost no spread)."""
    nuclear = np.linalg.svd((z - z.mean(dim=0)).numpy(), compute_uv=False).sum()
    return z * (100.0 / nuclear) if nuclear > 0 else z


def equal_singular_values(num_rows: int, dim: int, k: int, value: float, shift: torch.Tensor,
                          seed: int) -> torch.Tensor:
    """Z = value * U V^T + 1 shift^T with U [T, k] orthonormal and orthogonal to the ones vector,
    V [d, k] orthonormal: centred, Z has exactly k singular values equal to `value`."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.cat([torch.ones(num_rows, 1, dtype=torch.float64),
                       torch.randn(num_rows, k, generator=gen, dtype=torch.float64)], dim=1)
    u = torch.linalg.qr(basis).Q[:, 1:]  # orthogonal to the ones column
    v = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64)).Q
    return value * u @ v.T + shift[None, :]


# -- ER facts (verl-method.md section 2) ---------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(num_rows=st.integers(2, 40), dim=st.integers(1, 40), k_frac=st.floats(0.0, 1.0),
       value=st.floats(1e-2, 1e3), offset=st.floats(-100, 100), seed=st.integers(0, 10_000))
def test_k_equal_singular_values_give_er_k(num_rows, dim, k_frac, value, offset, seed):
    k = 1 + round(k_frac * (min(num_rows - 1, dim) - 1))
    # shifts much larger than the values would leave rounding noise singular values that the
    # spec's log(p + 1e-8) turns into ~1e-9 of ER, in any float64 route
    shift = offset * value * torch.linspace(-1, 1, dim, dtype=torch.float64)
    z = equal_singular_values(num_rows, dim, k, value, shift, seed)
    er = effective_rank(z)
    assert er == pytest.approx(ref.er_of_equal_values(k, value), abs=1e-9)
    # k up to the spec's 1e-8 epsilons: |ER - k| ~ 1e-8 (k^2 + |1 - log k| / value)
    assert abs(er - k) <= 2e-8 * (k * k + (1 + math.log(k)) / value)


@settings(max_examples=60, deadline=None)
@given(num_rows=st.integers(2, 50), dim=st.integers(1, 50), scale=st.floats(1e-2, 1e4),
       kind=st.sampled_from(["gaussian", "hidden"]), seed=st.integers(0, 10_000))
def test_er_is_scale_invariant(num_rows, dim, scale, kind, seed):
    z = ref.gaussian(num_rows, dim, seed) if kind == "gaussian" else ref.hidden_like(num_rows, dim, seed)
    z = unit_spread(z)  # sum of singular values 100, so at least 1 after scaling
    base, scaled = effective_rank(z), effective_rank(scale * z)
    # only the spec's 1e-8 in p = s / (sum s + 1e-8) breaks exact invariance: ~1e-8 (1 + log n) / sum s
    assert scaled == pytest.approx(base, rel=1e-7)


@settings(max_examples=60, deadline=None)
@given(num_rows=st.integers(2, 50), dim=st.integers(1, 50), offset=st.floats(-1e4, 1e4),
       seed=st.integers(0, 10_000))
def test_er_is_invariant_to_adding_a_constant_row(num_rows, dim, offset, seed):
    z = ref.gaussian(num_rows, dim, seed)
    row = offset * torch.randn(dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    assert effective_rank(z + row[None, :]) == pytest.approx(effective_rank(z), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(num_rows=st.integers(2, 50), dim=st.integers(1, 50), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["gaussian", "hidden", "lowrank"]))
def test_er_lies_between_one_and_min_rows_minus_one_and_dim(num_rows, dim, seed, kind):
    if kind == "gaussian":
        z = ref.gaussian(num_rows, dim, seed)
    else:
        z = ref.hidden_like(num_rows, dim, seed, noise=0.0 if kind == "lowrank" else 1e-2, rank=3)
    er = effective_rank(unit_spread(z))
    # the spec's 1e-8 epsilons move ER by ~1e-8 around these bounds
    assert 1.0 - 1e-8 <= er <= min(num_rows - 1, dim) * (1 + 1e-7)


@settings(max_examples=40, deadline=None)
@given(num_rows=st.integers(2, 40), dim=st.integers(2, 40), seed=st.integers(0, 10_000))
def test_er_ignores_row_order_and_rotations_of_the_hidden_space(num_rows, dim, seed):
    z = ref.hidden_like(num_rows, dim, seed)
    gen = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64)).Q
    permuted = z[torch.randperm(num_rows, generator=gen)]
    assert effective_rank(permuted) == pytest.approx(effective_rank(z), abs=1e-9)
    assert effective_rank(z @ rotation) == pytest.approx(effective_rank(z), abs=1e-9)


def test_er_by_hand_on_a_small_matrix():
    # rows (0,0), (3,0), (0,4), (3,4): centred = (+-1.5, +-2); singular values 3 and 4
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
    p3, p4 = 3 / (7 + 1e-8), 4 / (7 + 1e-8)
    expected = math.exp(-(p3 * math.log(p3 + 1e-8) + p4 * math.log(p4 + 1e-8)))
    assert effective_rank(z) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(1.97963, abs=1e-5)  # exp(0.682909)


def test_identical_rows_have_er_one():
    z = torch.tensor([[1.0, -2.0, 3.0]]).repeat(6, 1)  # centred rows are zero: no spread at all
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("num_rows", [0, 1])
def test_er_is_undefined_below_two_rows(num_rows):
    assert math.isnan(effective_rank(torch.randn(num_rows, 5)))
    assert rank_dynamics(torch.randn(num_rows, 5), stride=1, window=4) is None


# -- ERV / ERA by hand (section 3) -------------------------------------------------------------
def test_dynamics_from_prefix_ranks_by_hand():
    # E = 1, 3, 2, 6: V_2 = 3 - 1 = 2, V_3 = 2 - (1+3)/2 = 0, V_4 = 6 - (1+3+2)/3 = 4
    # A_3 = 0 - 2 = -2, A_4 = 4 - 0 = 4; ERV = 2, ERA = 1 (a plain finite difference would give ERV 5/3)
    assert dynamics_from_prefix_ranks([1.0, 3.0, 2.0, 6.0]) == pytest.approx((2.0, 1.0))
    erv, era = dynamics_from_rank_matrix(torch.tensor([[1.0, 3.0, 2.0, 6.0], [1.0, 2.0, 4.0, math.nan],
                                                       [5.0, 6.0, math.nan, math.nan]], dtype=torch.float64))
    # row 2: V_2 = 1, V_3 = 4 - 1.5 = 2.5, A_3 = 1.5
    assert erv[:2].tolist() == pytest.approx([2.0, 1.75]) and era[:2].tolist() == pytest.approx([1.0, 1.5])
    assert math.isnan(erv[2]) and math.isnan(era[2])  # one velocity only: no ERV/ERA
    assert dynamics_from_prefix_ranks([1.0, 3.0]) is None


def identity_rows(num_rows: int, dim: int | None = None) -> torch.Tensor:
    """Rows e_0, e_1, ...: any m of them, centred, have m - 1 equal singular values, so ER = m - 1."""
    return torch.eye(num_rows, dim or num_rows, dtype=torch.float64)


@pytest.mark.parametrize("stride,num_rows", [(1, 6), (2, 11), (3, 16), (5, 40)])
def test_dynamics_by_hand_on_identity_rows(stride, num_rows):
    """E_j = ER of j*stride equal values = j*s (up to the epsilons); V_j = j*s - s*j/2 = s*j/2;
    A_j = s/2; ERV = mean over j = 2..J of s*j/2 = s*(J+2)/4, ERA = s/2."""
    z = identity_rows(num_rows, num_rows + 3)
    num_checkpoints = (num_rows - 1) // stride  # t_j = j * stride < num_rows
    ranks = [ref.er_of_equal_values(j * stride, 1.0) for j in range(1, num_checkpoints + 1)]
    expected = dynamics_from_prefix_ranks(ranks)
    got = rank_dynamics(z, stride=stride, window=512)
    assert got == pytest.approx(expected, abs=1e-9)
    assert got == pytest.approx((stride * (num_checkpoints + 2) / 4, stride / 2), rel=1e-5)


def test_too_few_checkpoints_means_no_dynamics():
    stride = 4
    # 12 rows: t = 4, 8 (12 is not < 12): two checkpoints, one velocity -> None
    assert rank_dynamics(identity_rows(12, 16), stride=stride, window=512) is None
    # 13 rows: t = 4, 8, 12: two velocities -> defined
    assert rank_dynamics(identity_rows(13, 16), stride=stride, window=512) is not None
    # the window, not the response, sets the number of checkpoints
    assert rank_dynamics(identity_rows(40, 40), stride=stride, window=12) is None


def test_dynamics_use_only_the_last_window_rows():
    z = ref.hidden_like(90, 24, seed=4)
    assert rank_dynamics(z, stride=3, window=50) == pytest.approx(rank_dynamics(z[-50:], stride=3, window=10_000),
                                                                   abs=1e-12)
    z2 = z.clone()
    z2[:40] = 1e3 * torch.randn(40, 24, dtype=torch.float64)  # outside the window: no effect
    assert rank_dynamics(z2, stride=3, window=50) == pytest.approx(rank_dynamics(z, stride=3, window=50), abs=1e-9)


# -- batched forms ------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 45), min_size=1, max_size=6), dim=st.integers(1, 30),
       stride=st.integers(1, 5), window=st.integers(2, 50), seed=st.integers(0, 10_000),
       pad=st.sampled_from([0.0, 1e6, math.nan, math.inf]))
def test_batched_forms_equal_per_response_forms(lengths, dim, stride, window, seed, pad):
    rows = [ref.hidden_like(t, dim, seed + i) if t else torch.zeros(0, dim, dtype=torch.float64)
            for i, t in enumerate(lengths)]
    z, mask = ref.padded_batch(rows, pad_value=pad)  # padding content must not matter, even NaN
    er = effective_rank_batch(z, mask)
    erv, era = rank_dynamics_batch(z, mask, stride, window)
    for i, r in enumerate(rows):
        single = effective_rank(r)
        assert (math.isnan(single) and math.isnan(er[i])) or abs(float(er[i]) - single) <= 1e-9
        dyn = rank_dynamics(r, stride=stride, window=window)
        if dyn is None:
            assert math.isnan(erv[i]) and math.isnan(era[i])
        else:
            assert abs(float(erv[i]) - dyn[0]) <= 1e-9 and abs(float(era[i]) - dyn[1]) <= 1e-9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inputs_are_never_modified(dtype):
    rows = [ref.gaussian(30, 12, 1), ref.gaussian(9, 12, 2)]
    z, mask = ref.padded_batch(rows, pad_value=math.nan)
    z = z.to(dtype)
    before = z.clone()
    compute_indicators(z, mask, ShapingConfig(stride=3, window=20))
    effective_rank_batch(z, mask)
    rank_dynamics_batch(z, mask, 3, 20)
    torch.testing.assert_close(z, before, equal_nan=True, rtol=0, atol=0)


def test_whole_response_er_is_the_same_with_or_without_the_shared_window_gram():
    """compute_indicators reuses the window Gram for ER when every response fits its window."""
    rows = [ref.hidden_like(40, 64, 1), ref.gaussian(25, 64, 2), ref.gaussian(3, 64, 3)]
    z, mask = ref.padded_batch(rows)
    fits = compute_indicators(z, mask, ShapingConfig(stride=4, window=64)).er  # shared Gram
    cut = compute_indicators(z, mask, ShapingConfig(stride=4, window=30)).er  # windows cut: separate Gram
    torch.testing.assert_close(fits, cut, rtol=0, atol=1e-9)
    torch.testing.assert_close(fits, effective_rank_batch(z, mask), rtol=0, atol=1e-9)


@pytest.mark.parametrize("compat", [False, True])
def test_chunked_batches_give_the_same_indicators(monkeypatch, compat):
    """compute_indicators splits long batches into chunks; the split must not show in the result."""
    import shaping.rank
    rows = [ref.gaussian(t, 16, t) for t in (3, 40, 12, 33, 7, 25, 2)]
    z, mask = ref.padded_batch(rows, pad_value=math.nan)
    cfg = ShapingConfig(stride=3, window=30, compat={"zero_short_dynamics": compat})
    whole = compute_indicators(z, mask, cfg)
    monkeypatch.setattr(shaping.rank, "_CHUNK_ELEMENTS", 2 * 40 * 16)  # two responses per chunk
    chunked = compute_indicators(z, mask, cfg)
    for a, b in [(whole.er, chunked.er), (whole.erv, chunked.erv), (whole.era, chunked.era)]:
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=1e-12)


def test_compute_indicators_stacks_era_erv_er():
    rows = [ref.gaussian(30, 12, 1), ref.gaussian(7, 12, 2)]
    z, mask = ref.padded_batch(rows)
    ind = compute_indicators(z, mask, ShapingConfig(stride=3, window=20))
    assert ind.er.dtype == ind.erv.dtype == ind.era.dtype == torch.float64
    torch.testing.assert_close(ind.stacked(), torch.stack([ind.era, ind.erv, ind.er], dim=-1), equal_nan=True)
    assert ind.er[0] == pytest.approx(effective_rank(rows[0]), abs=1e-12)
    assert not math.isnan(ind.erv[0])  # window 20, stride 3: t = 3, 6, ..., 18
    assert math.isnan(ind.erv[1]) and math.isnan(ind.era[1])  # 7 rows: t = 3, 6 only, one velocity


def test_compute_indicators_detaches_and_keeps_autograd_out():
    z = ref.gaussian(20, 8, 3).requires_grad_(True)
    ind = compute_indicators(z[None], torch.ones(1, 20, dtype=torch.bool), ShapingConfig(stride=2, window=20))
    assert not ind.er.requires_grad and not ind.erv.requires_grad and not ind.era.requires_grad


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [torch.zeros(5), torch.zeros(2, 5, 3), torch.tensor(1.0), np.zeros((5, 3))])
def test_single_response_must_be_a_2d_tensor(bad):
    with pytest.raises(ValueError, match=r"\[T, d\]"):
        effective_rank(bad)
    with pytest.raises(ValueError, match=r"\[T, d\]"):
        rank_dynamics(bad)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_hidden_states_raise(value):
    z = torch.randn(10, 4)
    z[3, 2] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        effective_rank(z)
    with pytest.raises(ValueError, match="NaN or Inf"):
        rank_dynamics(z, stride=2, window=8)
    mask = torch.ones(1, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="NaN or Inf"):
        effective_rank_batch(z[None], mask)
    with pytest.raises(ValueError, match="NaN or Inf"):
        compute_indicators(z[None], mask, ShapingConfig(stride=2))


def test_batch_input_errors_are_clear():
    z = torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match="empty batch"):
        effective_rank_batch(torch.zeros(0, 6, 4), torch.zeros(0, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, T, d\]"):
        effective_rank_batch(z[0], mask[0])
    with pytest.raises(ValueError, match=r"mask must be \[B, T\]"):
        effective_rank_batch(z, mask[:, :5])
    with pytest.raises(ValueError, match=r"mask must be \[B, T\]"):
        rank_dynamics_batch(z, mask[:1])
    holes = mask.clone()
    holes[0, 2] = False  # a gap inside the response
    with pytest.raises(ValueError, match="left-aligned"):
        effective_rank_batch(z, holes)
    with pytest.raises(ValueError, match="stride"):
        rank_dynamics_batch(z, mask, stride=0)
    with pytest.raises(ValueError, match="window"):
        rank_dynamics_batch(z, mask, stride=1, window=1)
