"""Byte counting around hivemind's codecs and the parameter fingerprint."""

from __future__ import annotations

import pytest
import torch
from hivemind.compression import CompressionInfo, Float16Compression, NoCompression

from node.gossip.fingerprint import parameter_fingerprint
from node.gossip.traffic import CountingCompression, TrafficCounter

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("inner, bytes_per_number", [(NoCompression(), 4), (Float16Compression(), 2)])
def test_counting_compression_counts_the_message_it_returns(inner, bytes_per_number):
    counter = TrafficCounter()
    codec = CountingCompression(inner, counter)
    tensor = torch.randn(1000)
    message = codec.compress(tensor, CompressionInfo.from_tensor(tensor))
    sent, received = counter.snapshot()
    assert sent == message.ByteSize() and received == 0
    assert 1000 * bytes_per_number <= sent < 1000 * bytes_per_number + 200  # payload plus a small header
    restored = codec.extract(message)
    assert torch.allclose(restored, tensor, rtol=1e-3, atol=1e-3)


def test_fingerprint_separates_one_optimizer_step_from_float_noise():
    torch.manual_seed(0)
    params = [torch.randn(300, 200) * 0.02, torch.randn(200)]
    base = parameter_fingerprint(params)
    assert parameter_fingerprint([p.clone() for p in params]) == base  # deterministic, same positions
    noisy = [p + 1e-7 * torch.randn_like(p) for p in params]
    stepped = [p + 3e-5 * torch.randn_like(p).sign() for p in params]  # one Adam step at lr 3e-5
    noise_gap = max(abs(a - b) for a, b in zip(base, parameter_fingerprint(noisy)))
    step_gap = max(abs(a - b) for a, b in zip(base, parameter_fingerprint(stepped)))
    assert step_gap > 50 * noise_gap


def test_fingerprint_subsamples_large_models_and_rejects_empty_ones():
    big = [torch.ones(1000, 1000)]
    assert len(parameter_fingerprint(big, max_samples=1000, directions=3)) == 3
    with pytest.raises(ValueError, match="at least one parameter"):
        parameter_fingerprint([torch.empty(0)])
