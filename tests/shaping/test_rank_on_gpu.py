"""On a GPU the fast route gives what it gives on the CPU: within 1e-9 of a float64 SVD per prefix.

The trainer computes ER/ERV/ERA on the policy's device (`model.shaping_device`), so the same
exactness must hold there: float64 Grams, cuSOLVER's batched eigen-solves and the SVD fallback
for the badly conditioned kinds. Runs only where CUDA is (the device machine, not CI); the CPU
side of the same property is tests/shaping/test_rank_exactness.py.
"""

import math

import pytest
import spec_reference as ref
import torch

from shaping import ShapingConfig, compute_indicators, effective_rank_batch

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ATOL = 1e-9

# the kinds of spec_reference.KINDS run on the H200 (2026-12-04: all passed; "drift" was not among them);
# "massive" takes the SVD fallback
GPU_KINDS = ["gaussian", "hidden", "massive", "lowrank", "bf16"]


@pytest.mark.parametrize("kind", GPU_KINDS)
def test_indicators_on_the_gpu_are_the_spec(kind):
    lengths, dim = [2, 3, 40, 97, 120, 200, 265], 96
    rows = [ref.KINDS[kind](t, dim, 100 + t) for t in lengths]
    z, mask = ref.padded_batch(rows, pad_value=float("nan"))  # padding may hold anything
    cfg = ShapingConfig(stride=8, window=120)
    found = compute_indicators(z.cuda(), mask.cuda(), cfg)
    assert found.er.device.type == "cuda" and found.er.dtype == torch.float64
    for i, r in enumerate(rows):
        r64 = r.double().numpy()
        er = ref.effective_rank(r64)
        assert (math.isnan(er) and math.isnan(found.er[i])) or abs(float(found.er[i]) - er) <= ATOL, (kind, i)
        dynamics = ref.rank_dynamics(r64, cfg.stride, cfg.window)
        if dynamics is None:
            assert math.isnan(found.erv[i]) and math.isnan(found.era[i])
        else:
            assert abs(float(found.erv[i]) - dynamics[0]) <= ATOL, (kind, i)
            assert abs(float(found.era[i]) - dynamics[1]) <= ATOL, (kind, i)


def test_a_real_sized_batch_agrees_with_the_cpu():
    """16 responses of up to 265 states of width 896 (a 0.5B model's micro-batch), wider than long."""
    rows = [ref.hidden_like(t, 896, seed=t) for t in (265, 200, 150, 64, 9, 265, 240, 33) * 2]
    z, mask = ref.padded_batch(rows)
    cfg = ShapingConfig(stride=4, window=512)
    on_cpu, on_gpu = compute_indicators(z, mask, cfg), compute_indicators(z.cuda(), mask.cuda(), cfg)
    for name in ("er", "erv", "era"):
        torch.testing.assert_close(getattr(on_gpu, name).cpu(), getattr(on_cpu, name), atol=2 * ATOL, rtol=0,
                                   equal_nan=True)
    assert torch.equal(effective_rank_batch(z.cuda(), mask.cuda()).isnan().cpu(), on_cpu.er.isnan())
