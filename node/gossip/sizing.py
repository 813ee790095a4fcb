"""Bytes per averaging round, dense fp32 vs PowerSGD, from parameter shapes alone.

Mirrors which tensors hivemind's PowerSGD averager compresses: a gradient viewed as m x n
(greedy flattening of 3D+ tensors) is factorised when r(m + n) leaves at least
`min_compression_ratio` of m * n unsent; 1-D and poorly compressible tensors go dense. Used
for the 0.5B-model ratio, and checked against measured bytes on the embedded model.
"""

from __future__ import annotations

from math import prod


def flatten_dims(shape: tuple[int, ...]) -> tuple[int, int]:
    dims = list(shape)
    while len(dims) > 2:
        i = min(range(len(dims) - 1), key=lambda k: dims[k] * dims[k + 1])
        dims[i] *= dims.pop(i + 1)
    return (dims[0], dims[1]) if len(dims) == 2 else (dims[0], 1)


def powersgd_numbers(shape: tuple[int, ...], rank: int, min_compression_ratio: float = 0.5) -> int:
    """Numbers one peer contributes per round for one tensor (P and Q phases together)."""
    numel = prod(shape)
    if len(shape) <= 1:
        return numel
    m, n = flatten_dims(shape)
    if 1 - rank * (m + n) / numel < min_compression_ratio:
        return numel
    return rank * (m + n)


def compression_ratio_for_shapes(shapes: list[tuple[int, ...]], rank: int, *, bytes_per_number: int = 2,
                                 min_compression_ratio: float = 0.5) -> float:
    """fp32 dense bytes / PowerSGD bytes for one averaging round over `shapes`."""
    dense = sum(4 * prod(s) for s in shapes)
    compressed = sum(bytes_per_number * powersgd_numbers(s, rank, min_compression_ratio) for s in shapes)
    return dense / compressed


def qwen2_shapes(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
                 tied: bool = True) -> list[tuple[int, ...]]:
    """Parameter shapes of a Qwen2-style decoder (q/k/v carry biases, RMSNorm weights)."""
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    per_layer = [(hidden, hidden), (hidden,), (kv, hidden), (kv,), (kv, hidden), (kv,), (hidden, hidden),
                 (intermediate, hidden), (intermediate, hidden), (hidden, intermediate), (hidden,), (hidden,)]
    shapes = [(vocab, hidden)] + per_layer * layers + [(hidden,)]
    return shapes if tied else shapes + [(vocab, hidden)]
