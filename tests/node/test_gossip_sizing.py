"""Bytes per averaging round from shapes: the 0.5B ratio in the issue rests on this arithmetic."""

from __future__ import annotations

import math

import pytest

from node.gossip.sizing import compression_ratio_for_shapes, flatten_dims, powersgd_numbers, qwen2_shapes

pytestmark = pytest.mark.unit

QWEN05 = qwen2_shapes(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936)


def test_flatten_dims_merges_the_smallest_adjacent_pair_first():
    assert flatten_dims((6, 5)) == (6, 5)
    assert flatten_dims((2, 3, 50)) == (6, 50)
    assert flatten_dims((50, 2, 3)) == (50, 6)
    assert flatten_dims((7,)) == (7, 1)


def test_powersgd_numbers_factorise_only_what_compresses():
    assert powersgd_numbers((896,), rank=4) == 896  # 1-D: dense
    assert powersgd_numbers((4864, 896), rank=4) == 4 * (4864 + 896)
    assert powersgd_numbers((8, 8), rank=4) == 64  # r(m+n) = 64 saves nothing: dense


def test_qwen2_05b_shapes_hold_half_a_billion_parameters():
    total = sum(math.prod(shape) for shape in QWEN05)
    assert 0.45e9 < total < 0.52e9  # 494M for Qwen2-0.5B with tied embeddings


def test_the_05b_ratio_clears_100x_with_fp32_factors_and_doubles_with_fp16():
    fp32 = compression_ratio_for_shapes(QWEN05, rank=4, bytes_per_number=4)
    fp16 = compression_ratio_for_shapes(QWEN05, rank=4, bytes_per_number=2)
    assert fp32 >= 100
    assert fp16 == pytest.approx(2 * fp32)


def test_a_model_of_vectors_only_does_not_compress():
    assert compression_ratio_for_shapes([(10,), (20,)], rank=4, bytes_per_number=4) == pytest.approx(1.0)
