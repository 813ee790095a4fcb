"""Robust aggregation of all-reduce parts: the maths (node.gossip.robust) and hivemind's reducer running it."""

from __future__ import annotations

import asyncio

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.gossip.config import RobustConfig
from node.gossip.hivemind_internals import robust_reducer
from node.gossip.hivemind_internals.robust_reducer import RobustTensorPartReducer
from node.gossip.robust import capped_weights, robust_average

pytestmark = pytest.mark.unit

SHAPE = torch.Size([64])
POLICY = RobustConfig()


def honest(seed: int, count: int = 2) -> list[torch.Tensor]:
    """Gradients of one task: a shared direction plus each peer's own noise."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(SHAPE, generator=generator)
    return [direction + 0.3 * torch.randn(SHAPE, generator=generator) for _ in range(count)]


def pair_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What two senders of equal weight average to: both parts no longer than the shorter one."""
    shortest = min(a.norm(), b.norm())
    return (a * shortest / a.norm() + b * shortest / b.norm()) / 2


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_honest_parts_average_close_to_their_mean():
    parts = honest(0, 3)
    result = robust_average(parts, [8.0] * 3, SHAPE, POLICY)
    mean = torch.stack(parts).mean(0)
    assert result.rejected == () and cosine(result.average, mean) > 0.999


def test_a_non_finite_part_or_weight_is_dropped_and_its_sender_named():
    parts = honest(1) + [torch.full(SHAPE, float("nan"))]
    result = robust_average(parts, [8.0, 8.0, 8.0], SHAPE, POLICY)
    assert result.rejected == (2,) and torch.allclose(result.average, pair_mean(*parts[:2]), atol=1e-6)
    for weight in (float("inf"), float("nan"), -1.0, 0.0):
        assert robust_average(honest(1) + [parts[0]], [8.0, 8.0, weight], SHAPE, POLICY).rejected == (2,)
    misshapen = robust_average(honest(1) + [torch.zeros(65)], [8.0] * 3, SHAPE, POLICY)
    assert misshapen.rejected == (2,) and bool(torch.isfinite(misshapen.average).all())


@pytest.mark.parametrize("attack", ["amplified sign flip", "random noise", "inflated weight"])
def test_one_liar_among_three_cannot_turn_the_average(attack):
    good = honest(2)
    target = torch.stack(good).mean(0)
    weights = [8.0, 8.0, 8.0]
    if attack == "amplified sign flip":
        liar = -1000 * good[0]
    elif attack == "random noise":
        liar = 1000 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    else:  # an ordinary-size sign flip that claims a thousand times the batch
        liar, weights = -good[0], [8.0, 8.0, 8000.0]
    result = robust_average([*good, liar], weights, SHAPE, POLICY)
    plain = sum(w * p for w, p in zip(weights, [*good, liar])) / sum(weights)
    assert cosine(plain, target) < 0.1  # hivemind's weighted mean is taken over
    assert cosine(result.average, target) > 0.9 and result.average.norm() < 2 * target.norm()


@pytest.mark.parametrize("attack", ["amplified sign flip", "random noise"])
def test_a_liar_far_beyond_the_others_counts_for_nothing(attack):
    good = honest(6)
    liar = -1000 * good[0] if attack == "amplified sign flip" else 100 * torch.randn(SHAPE)
    result = robust_average([*good, liar], [8.0] * 3, SHAPE, POLICY)
    assert result.outliers == (2,) and result.rejected == ()  # not counted, and not banned: no proof of a lie
    assert torch.allclose(result.average, torch.stack(good).mean(0), atol=1e-5)  # the honest pair's own mean
    clip_only = robust_average([*good, liar], [8.0] * 3, SHAPE, RobustConfig(reject_radius=1e6))
    assert clip_only.outliers == () and (clip_only.average - result.average).norm() > 0.1 * result.average.norm()


def test_a_liar_inside_the_reject_radius_is_clipped_and_an_honest_part_of_any_usual_size_counts():
    good = honest(7)
    near = good[0] - 3 * (good[0] - good[1])  # three honest spreads out: suspicious, but within reach
    result = robust_average([*good, near], [8.0] * 3, SHAPE, POLICY)
    assert result.outliers == () and cosine(result.average, torch.stack(good).mean(0)) > 0.9
    # honest gradients differ in size from batch to batch (a batch with no reward spread gives none at all)
    sizes = robust_average([0.0 * good[0], good[0], 3 * good[1]], [8.0] * 3, SHAPE, POLICY)
    assert sizes.outliers == ()
    # however small the radii, at least half the senders count and the result is finite
    tight = robust_average(honest(8, 4), [8.0] * 4, SHAPE, RobustConfig(radius=0.01, reject_radius=1.0))
    assert len(tight.outliers) <= 2 and bool(torch.isfinite(tight.average).all())


def test_weights_are_capped_at_the_lower_median_and_the_absolute_cap():
    assert capped_weights([8.0, 8.0, 8000.0]) == [8.0, 8.0, 8.0]
    assert capped_weights([4.0, 8000.0]) == [4.0, 4.0]  # two senders: nobody outweighs the other
    assert capped_weights([8.0, 16.0, 16.0], max_weight=10.0) == [8.0, 10.0, 10.0]


def test_two_senders_get_the_capped_weighted_mean_of_parts_no_longer_than_the_shorter():
    a, b = honest(3)
    short, long_ = (a, b) if a.norm() < b.norm() else (b, a)
    result = robust_average([a, b], [2.0, 6.0], SHAPE, POLICY)  # b's weight capped at a's
    assert torch.allclose(result.average, (short + long_ * short.norm() / long_.norm()) / 2, atol=1e-6)
    amplified = robust_average([a, -1000 * a], [8.0, 8.0], SHAPE, POLICY)  # a liar can cancel, never overturn
    assert amplified.average.norm() < 1e-3 * a.norm()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.sampled_from([1e30, -1e30, 0.0])), min_size=3 * 4, max_size=3 * 4),
       st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3))
def test_the_result_is_always_finite(values, weights):
    parts = [torch.tensor(values[i * 4:(i + 1) * 4], dtype=torch.float32) for i in range(3)]
    result = robust_average(parts, weights, torch.Size([4]), POLICY)
    assert bool(torch.isfinite(result.average).all())


def _reduce(parts: list[torch.Tensor], weights: list[float], policy: RobustConfig) -> list:
    """Run hivemind's reducer protocol (one part, every sender concurrently) on the robust reducer."""
    robust_reducer.use_policy(policy)

    async def run():
        reducer = RobustTensorPartReducer((SHAPE,), len(parts))
        calls = [reducer.accumulate_part(i, 0, part, weight) for i, (part, weight) in enumerate(zip(parts, weights))]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        return asyncio.run(run())
    finally:
        robust_reducer.use_policy(RobustConfig())


def test_the_reducer_bans_a_nan_sender_and_answers_the_others_with_one_finite_average():
    good = honest(4)
    answers = _reduce([good[0], torch.full(SHAPE, float("nan")), good[1]], [8.0, 8.0, 8.0], POLICY)
    assert type(answers[1]).__name__ == "BannedException"
    assert torch.equal(answers[0], answers[2]) and torch.allclose(answers[0], pair_mean(*good), atol=1e-6)


def test_a_sender_tagging_along_with_weight_zero_is_answered_not_banned(monkeypatch):
    """hivemind joins a peer with no gradients of its own with weight 0; a reducer that took that for a lie
    refused an honest peer for caught_ban_s (seen in bench_attacks: the honest pair then never averaged again)."""
    caught = []
    monkeypatch.setattr(robust_reducer, "_report_caught", lambda *args: caught.append(args))
    good = honest(10)
    answers = _reduce([good[0], torch.zeros(SHAPE), good[1]], [8.0, 0.0, 8.0], POLICY)
    assert caught == [] and not any(isinstance(answer, Exception) for answer in answers)
    assert all(torch.equal(answer, answers[0]) for answer in answers)
    assert torch.allclose(answers[0], pair_mean(*good), atol=1e-6)  # the zero-weight part adds nothing
    nan_at_zero = _reduce([good[0], torch.full(SHAPE, float("nan")), good[1]], [8.0, 0.0, 8.0], POLICY)
    assert type(nan_at_zero[1]).__name__ == "BannedException" and len(caught) == 1  # NaN is a lie at any weight


def test_the_reducer_leaves_a_blatant_liar_out_and_without_the_policy_it_does_not():
    good = honest(5)
    parts, weights = [*good, -1000 * good[0]], [8.0, 8.0, 8.0]
    robust, plain = _reduce(parts, weights, POLICY), _reduce(parts, weights, RobustConfig(enabled=False))
    target = torch.stack(good).mean(0)
    assert all(torch.equal(answer, robust[0]) for answer in robust)
    assert torch.allclose(robust[0], target, atol=1e-5)
    assert cosine(plain[0], target) < -0.9


def test_a_non_finite_result_from_a_remote_reducer_counts_as_a_failed_reducer():
    from hivemind.averaging.partition import AllreduceException, TensorPartContainer

    robust_reducer.install()
    container = TensorPartContainer([torch.ones(4096)], peer_fractions=(0.5, 0.5), part_size_bytes=1024)
    remote = container.get_raw_input_parts(1)  # the parts peer 1 reduces
    assert len(remote) > 1
    with pytest.raises(AllreduceException, match="non-finite"):
        container.register_processed_part(1, 0, torch.full_like(remote[0], float("nan")))
    assert container.failed_size == sum(part.numel() for part in remote)  # this peer keeps its own values
