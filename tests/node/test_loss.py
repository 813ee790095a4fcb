"""PPO-clip with token-mean aggregation, the k3 KL estimator and the entropy bonus."""

import pytest
import torch

from node.training.config import LossConfig
from node.training.loss import policy_loss

pytestmark = pytest.mark.unit


def test_on_policy_loss_is_minus_mean_advantage_over_tokens():
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.1], [0.9, 0.2, 0.3]])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    parts = policy_loss(logprobs, logprobs.detach(), adv, mask, LossConfig())
    # ratio = 1 on-policy: loss = -(1+1+1-2-2)/5 token-mean over the 5 real tokens
    assert parts.policy == pytest.approx(-(3 - 4) / 5)
    parts.total.backward()
    # d loss / d logprob_t = -A_t / num_tokens for real tokens, 0 for padding
    expected = -adv * mask / 5
    assert torch.allclose(logprobs.grad, expected)


def test_clipping_stops_gradient_beyond_the_trust_region():
    old = torch.zeros(1, 2)
    new = torch.tensor([[0.5, -0.5]], requires_grad=True)  # ratios e^0.5 > 1.2 and e^-0.5 < 0.8
    adv = torch.tensor([[1.0, -1.0]])
    parts = policy_loss(new, old, adv, torch.ones(1, 2, dtype=torch.bool), LossConfig(clip_eps=0.2))
    parts.total.backward()
    assert torch.all(new.grad == 0)
    assert parts.clip_fraction == 1.0


def test_kl_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.log(torch.tensor([[0.3, 0.6]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    cfg = LossConfig(kl_coef=0.1)
    same = policy_loss(lp, lp, torch.zeros(1, 2), mask, cfg, ref_logprobs=lp)
    assert same.kl == pytest.approx(0.0, abs=1e-12)
    moved = policy_loss(lp + 0.3, lp + 0.3, torch.zeros(1, 2), mask, cfg, ref_logprobs=lp)
    r = -0.3
    assert moved.kl == pytest.approx(float(torch.exp(torch.tensor(r)) - r - 1), rel=1e-5)


def test_entropy_bonus_lowers_the_loss_and_has_a_gradient():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    log_probs = torch.log_softmax(logits, -1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    lp = log_probs[..., 0]
    mask = torch.ones(2, 3, dtype=torch.bool)
    plain = policy_loss(lp, lp.detach(), torch.zeros(2, 3), mask, LossConfig(), entropy=entropy)
    bonus = policy_loss(lp, lp.detach(), torch.zeros(2, 3), mask, LossConfig(entropy_coef=0.5), entropy=entropy)
    assert bonus.total.item() == pytest.approx(plain.total.item() - 0.5 * plain.entropy, rel=1e-6)
    bonus.total.backward()
    assert logits.grad.abs().sum() > 0


def test_kl_without_a_reference_policy_is_not_measured_rather_than_zero():
    lp = torch.log(torch.tensor([[0.3, 0.6]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    no_reference = policy_loss(lp, lp, torch.zeros(1, 2), mask, LossConfig(kl_coef=0.1))
    coefficient_zero = policy_loss(lp + 0.3, lp + 0.3, torch.zeros(1, 2), mask, LossConfig(kl_coef=0.0),
                                   ref_logprobs=lp)
    assert no_reference.kl is None and coefficient_zero.kl is None
    assert no_reference.entropy is None  # no entropy given: not measured either
    assert coefficient_zero.total.item() == pytest.approx(coefficient_zero.policy)  # and no KL term in the loss
