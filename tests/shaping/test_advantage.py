"""Base advantages (GRPO, Dr. GRPO, RLOO) against hand formulas; the kappa-capped bonus; placement."""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaping import ESTIMATORS, base_advantages, shaping_bonus, token_advantages

pytestmark = pytest.mark.unit

groups = st.integers(2, 8).flatmap(
    lambda g: st.lists(st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]) | st.floats(-3, 3),
                                min_size=g, max_size=g), min_size=1, max_size=5))


def test_grpo_by_hand():
    a0 = base_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "grpo")
    # mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert a0[0].tolist() == pytest.approx([expected, -expected, -expected, expected], rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(rewards=groups)
def test_estimators_against_plain_python(rewards):
    r = torch.tensor(rewards, dtype=torch.float64)
    grpo, dr, rloo = (base_advantages(r, name) for name in ("grpo", "dr_grpo", "rloo"))
    for p, group in enumerate(rewards):
        mean, std = statistics.fmean(group), statistics.stdev(group)
        for i, reward in enumerate(group):
            others = group[:i] + group[i + 1:]
            assert float(grpo[p, i]) == pytest.approx((reward - mean) / (std + 1e-6), rel=1e-9, abs=1e-9)
            assert float(dr[p, i]) == pytest.approx(reward - mean, rel=1e-9, abs=1e-12)
            assert float(rloo[p, i]) == pytest.approx(reward - statistics.fmean(others), rel=1e-9, abs=1e-12)
        # every estimator is centred within a group
        for a0 in (grpo, dr, rloo):
            assert abs(float(a0[p].sum())) <= 1e-9 * (1 + sum(abs(x) for x in group)) / (std + 1e-6)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_degenerate_group_has_zero_advantage_and_zero_bonus(name):
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    a0 = base_advantages(rewards, name)
    assert torch.equal(a0[0], torch.zeros(4, dtype=torch.float64))
    bonus = shaping_bonus(a0.reshape(-1), torch.full((8,), 0.9, dtype=torch.float64), kappa=2.0)
    assert torch.equal(bonus[:4], torch.zeros(4, dtype=torch.float64))
    assert (bonus[4:] > 0).all()


def test_unknown_estimator_and_bad_rewards_raise():
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        base_advantages(torch.zeros(2, 4), "ppo")
    with pytest.raises(ValueError, match=r"\[num_prompts, group_size\]"):
        base_advantages(torch.zeros(8), "grpo")
    with pytest.raises(ValueError, match=">= 2 rollouts"):
        base_advantages(torch.zeros(3, 1), "grpo")
    with pytest.raises(ValueError, match=">= 2 rollouts"):
        base_advantages(torch.zeros(0, 4), "rloo")
    with pytest.raises(ValueError, match="NaN or Inf"):
        base_advantages(torch.tensor([[1.0, math.nan]]), "dr_grpo")


@settings(max_examples=200, deadline=None)
@given(a0=st.lists(st.floats(-10, 10), min_size=1, max_size=16), data=st.data(), kappa=st.floats(0.1, 10.0))
def test_bonus_is_never_negative_never_above_abs_a0_over_kappa(a0, data, kappa):
    r_aux = data.draw(st.lists(st.floats(-5, 5), min_size=len(a0), max_size=len(a0)))
    bonus = shaping_bonus(torch.tensor(a0, dtype=torch.float64), torch.tensor(r_aux, dtype=torch.float64), kappa)
    for b, a, r in zip(bonus.tolist(), a0, r_aux):
        assert 0.0 <= b <= abs(a) / kappa + 1e-15
        assert b == pytest.approx(min(max(r, 0.0), abs(a) / kappa))  # A = A0 + min(relu(r_aux), |A0| / kappa)


def test_bonus_is_detached_data():
    a0 = torch.tensor([1.0, -2.0], requires_grad=True)
    r_aux = torch.tensor([0.3, 0.4], requires_grad=True)
    bonus = shaping_bonus(a0, r_aux, kappa=2.0)
    assert not bonus.requires_grad
    assert bonus.tolist() == pytest.approx([0.3, 0.4])


def test_bonus_input_errors():
    with pytest.raises(ValueError, match="must both be"):
        shaping_bonus(torch.zeros(3), torch.zeros(4), 2.0)
    with pytest.raises(ValueError, match="kappa must be positive"):
        shaping_bonus(torch.zeros(3), torch.zeros(3), 0.0)


MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
A0 = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
BONUS = torch.tensor([0.25, 0.0, 0.1, 0.15], dtype=torch.float64)


def test_sequence_level_bonus_on_every_response_token():
    adv = token_advantages(A0, BONUS, MASK)
    expected = (A0 + BONUS)[:, None] * MASK
    assert torch.equal(adv, expected)
    assert torch.equal(adv[~MASK], torch.zeros(int((~MASK).sum()), dtype=torch.float64))


def test_last_token_bonus_reference_placement():
    adv = token_advantages(A0, BONUS, MASK, last_token=True)
    assert adv[0].tolist() == pytest.approx([0.5, 0.5, 0.75, 0.0, 0.0])
    assert adv[1].tolist() == pytest.approx([-1.0] * 5)
    assert adv[2].tolist() == pytest.approx([2.1, 0.0, 0.0, 0.0, 0.0])
    assert adv[3].tolist() == [0.0] * 5  # an empty response gets nothing, and no crash
    # the bonus mass per response is the bonus itself, not bonus * length
    assert ((adv - A0[:, None] * MASK).sum(dim=1)).tolist() == pytest.approx([0.25, 0.0, 0.1, 0.0])


def test_token_advantages_shape_errors():
    with pytest.raises(ValueError, match="response_mask must be"):
        token_advantages(A0, BONUS, MASK[:3])
    with pytest.raises(ValueError, match="response_mask must be"):
        token_advantages(A0, BONUS[:2], MASK)
    with pytest.raises(ValueError, match="response_mask must be"):
        token_advantages(A0, BONUS, MASK[0])
