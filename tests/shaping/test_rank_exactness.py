"""The fast route agrees with a plain float64 SVD per prefix to within 1e-9 absolute.

Ground truth is `spec_reference` (NumPy SVD of the explicitly centred rows, the spec's loops),
checked on Gaussian rows and on rows shaped like LLM hidden states (low rank, a noise floor,
"massive activation" outlier dimensions, drift, bf16 storage) for T from 2 to 2048 and d from 8
to 4096. The largest shapes take several seconds of SVDs and are marked slow.
"""

import math

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
    effective_rank_svd,
    rank_dynamics,
    rank_dynamics_svd,
)

pytestmark = pytest.mark.unit

ATOL = 1e-9

SHAPES = [(2, 8), (3, 8), (17, 4096), (64, 4096), (300, 64), (129, 128), (700, 512), (2048, 8), (2048, 256)]
SLOW_SHAPES = [(1024, 896), (2048, 4096)]


def dynamics_settings(num_rows: int) -> tuple[int, int]:
    """(stride, window): the reference (40, 512) for long responses, scaled down for short ones."""
    if num_rows >= 600:
        return 40, 512
    return max(1, num_rows // 10), max(2, (3 * num_rows) // 4)


def check_agreement(kind: str, num_rows: int, dim: int) -> None:
    z = ref.KINDS[kind](num_rows, dim, seed=num_rows * 7919 + dim)
    stride, window = dynamics_settings(num_rows)
    rows = z.to(torch.float64).numpy()
    er_expected = ref.effective_rank(rows)
    er = effective_rank(z)
    assert abs(er - er_expected) <= ATOL, f"ER {er!r} vs SVD {er_expected!r}"
    expected = ref.rank_dynamics(rows, stride, window)
    got = rank_dynamics(z, stride=stride, window=window)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert abs(got[0] - expected[0]) <= ATOL, f"ERV {got[0]!r} vs SVD {expected[0]!r}"
        assert abs(got[1] - expected[1]) <= ATOL, f"ERA {got[1]!r} vs SVD {expected[1]!r}"


@pytest.mark.parametrize("kind", sorted(ref.KINDS))
@pytest.mark.parametrize("num_rows,dim", SHAPES)
def test_fast_route_matches_float64_svd(kind, num_rows, dim):
    check_agreement(kind, num_rows, dim)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gaussian", "hidden", "massive"])
@pytest.mark.parametrize("num_rows,dim", SLOW_SHAPES)
def test_fast_route_matches_float64_svd_large(kind, num_rows, dim):
    check_agreement(kind, num_rows, dim)


@settings(max_examples=60, deadline=None)
@given(num_rows=st.integers(2, 60), dim=st.integers(1, 48), kind=st.sampled_from(sorted(ref.KINDS)),
       stride=st.integers(1, 6), window=st.integers(2, 64), seed=st.integers(0, 2**31 - 1))
def test_fast_route_matches_svd_on_small_shapes(num_rows, dim, kind, stride, window, seed):
    z = ref.KINDS[kind](num_rows, dim, seed)
    rows = z.to(torch.float64).numpy()
    assert abs(effective_rank(z) - ref.effective_rank(rows)) <= ATOL
    expected = ref.rank_dynamics(rows, stride, window)
    got = rank_dynamics(z, stride=stride, window=window)
    if expected is None:
        assert got is None
    else:
        assert got is not None and max(abs(got[0] - expected[0]), abs(got[1] - expected[1])) <= ATOL


def test_batch_of_mixed_lengths_matches_svd_per_response():
    """One padded batch: every response's ER/ERV/ERA equals its own SVD reference."""
    dim = 96
    lengths = [1, 2, 5, 40, 97, 130, 260]
    rows = [ref.hidden_like(t, dim, seed=t) if t % 2 else ref.gaussian(t, dim, seed=t) for t in lengths]
    z, mask = ref.padded_batch(rows)
    cfg = ShapingConfig(stride=8, window=120)
    ind = compute_indicators(z, mask, cfg)
    for i, r in enumerate(rows):
        er = ref.effective_rank(r.numpy())
        assert (math.isnan(er) and math.isnan(ind.er[i])) or abs(float(ind.er[i]) - er) <= ATOL
        dyn = ref.rank_dynamics(r.numpy(), cfg.stride, cfg.window)
        if dyn is None:
            assert math.isnan(ind.erv[i]) and math.isnan(ind.era[i])
        else:
            assert abs(float(ind.erv[i]) - dyn[0]) <= ATOL and abs(float(ind.era[i]) - dyn[1]) <= ATOL


@pytest.mark.parametrize("num_rows,dim", [(50, 8), (120, 300)])
def test_module_reference_route_is_the_spec(num_rows, dim):
    """`effective_rank_svd` / `rank_dynamics_svd` (the bench's reference route) equal the spec restated here."""
    z = ref.hidden_like(num_rows, dim, seed=5)
    assert effective_rank_svd(z) == pytest.approx(ref.effective_rank(z.numpy()), abs=1e-12)
    got, expected = rank_dynamics_svd(z, 4, 90), ref.rank_dynamics(z.numpy(), 4, 90)
    assert got == pytest.approx(expected, abs=1e-12)


def test_float32_input_is_upcast_before_the_maths():
    """Rank maths in float64 even for fp32 input: equal to the SVD of the upcast rows."""
    z = ref.hidden_like(200, 64, seed=11).float()
    assert abs(effective_rank(z) - ref.effective_rank(z.double().numpy())) <= ATOL
    batch = effective_rank_batch(z[None], torch.ones(1, 200, dtype=torch.bool))
    assert batch.dtype == torch.float64
