"""The training forward in pieces equals it in one piece.

- log-probs and entropies computed `chunk_tokens` at a time (recomputed in the backward) equal the
  full [B, R, V] log-softmax, values and gradients, to 1e-5;
- micro-batches whose losses are divided by the mini-batch's token count give the one-batch
  gradient, here and through the trainer (same rollouts, same advantages).
"""

import pytest
import torch

from node.model.config import TinyModelConfig
from node.model.tiny import build_tiny_model
from node.model.tokenizer import build_char_tokenizer
from node.training.build import build_trainer
from node.training.config import LossConfig, SamplingConfig, TrainConfig
from node.training.loss import policy_loss
from node.training.policy_forward import decoder_states, policy_forward, token_logprobs
from node.training.rollout import sample_rollouts
from node.training.seams import UpdateReport

pytestmark = pytest.mark.unit

PROMPTS = ["12+7=", "305-48=", "9*9="]


@pytest.fixture(scope="module")
def policy():
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                             intermediate_size=64, seed=5), tokenizer)
    torch.manual_seed(0)
    batch = sample_rollouts(model, tokenizer, PROMPTS, SamplingConfig(group_size=4, max_new_tokens=20))
    return model, batch


def _full(model, batch, temperature):
    """The unchunked reference: the whole [B, R, V] float32 log-softmax."""
    states = decoder_states(model, batch)
    log_probs = torch.log_softmax(model.lm_head(states).float() / temperature, dim=-1)
    mask = batch.response_mask
    token = log_probs.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1) * mask
    entropy = -(log_probs.exp() * log_probs).sum(-1) * mask
    return token, entropy


@pytest.mark.parametrize("chunk_tokens", [1, 7, 64, 10_000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_entropy_equal_the_full_computation(policy, chunk_tokens, temperature):
    model, batch = policy
    weights = list(model.parameters())
    token, entropy = _full(model, batch, temperature)
    full_grads = torch.autograd.grad((token.sum() + entropy.sum()), weights)
    out = policy_forward(model, batch, temperature=temperature, entropy="grad", chunk_tokens=chunk_tokens)
    assert torch.allclose(out.logprobs, token, atol=1e-5) and torch.allclose(out.entropy, entropy, atol=1e-5)
    assert torch.all(out.logprobs[~batch.response_mask] == 0)
    chunk_grads = torch.autograd.grad((out.logprobs.sum() + out.entropy.sum()), weights)
    for a, b in zip(full_grads, chunk_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_entropy_as_a_metric_has_no_gradient_and_can_be_skipped(policy):
    model, batch = policy
    states = decoder_states(model, batch)
    logprobs, entropy = token_logprobs(model, states, batch.response_ids, batch.response_mask, chunk_tokens=5)
    assert logprobs.requires_grad and not entropy.requires_grad
    _, none = token_logprobs(model, states, batch.response_ids, batch.response_mask, entropy="none")
    assert none is None


def _loss_grads(model, batch, rows_list, advantages, cfg):
    model.zero_grad()
    num_tokens = int(batch.response_mask.sum())
    for rows in rows_list:
        sub = batch.select(rows)
        out = policy_forward(model, sub, entropy="grad", chunk_tokens=9)
        old = out.logprobs.detach() + 0.05  # off-policy, so the ratio and its clip matter
        parts = policy_loss(out.logprobs, old, advantages[rows], sub.response_mask, cfg, entropy=out.entropy,
                            num_tokens=num_tokens)
        parts.total.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_micro_batched_gradients_equal_the_one_batch_gradient(policy):
    model, batch = policy
    num = batch.input_ids.shape[0]
    advantages = torch.randn(num, 1, generator=torch.Generator().manual_seed(0)).expand_as(batch.response_mask)
    cfg = LossConfig(entropy_coef=0.01)
    whole = _loss_grads(model, batch, [torch.arange(num)], advantages, cfg)
    pieces = _loss_grads(model, batch, list(torch.split(torch.arange(num), 5)), advantages, cfg)
    for a, b in zip(whole, pieces):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


class CapturedGradients:
    """An update rule that records the masters' gradients instead of stepping."""

    def __init__(self, master, cfg):
        self.master = master
        self.optimizer = torch.optim.SGD(master.params, lr=0.0)
        self.grads = None

    def apply(self, num_samples):
        self.grads = [p.grad.clone() for p in self.master.params]
        self.optimizer.zero_grad(set_to_none=True)
        return UpdateReport(True, 0.0)

    def load_state_from_peers(self):
        return False

    def settle(self):
        return None

    def shutdown(self):
        pass


def _trainer_grads(tmp_path, micro, checkpointing=False):
    cfg = TrainConfig.model_validate({
        "run_dir": str(tmp_path), "seed": 3, "steps": 1, "progress": False, "torch_threads": 1,
        "algo": {"prompts_per_step": 3}, "sampling": {"group_size": 4, "max_new_tokens": 24},
        "eval": {"every": 0, "num_problems": 4}, "loss": {"entropy_coef": 0.01},
        "memory": {"micro_batch_size": micro, "logit_chunk_tokens": 16, "gradient_checkpointing": checkpointing},
        "task": {"type": "arithmetic", "digits": 2}})
    trainer = build_trainer(cfg, update_factory=CapturedGradients)
    report = trainer.train_step()
    return trainer.update.grads, report.metrics


def test_the_trainer_gives_the_same_gradient_in_micro_batches(tmp_path):
    whole, one = _trainer_grads(tmp_path / "a", None)
    pieces, micro = _trainer_grads(tmp_path / "b", 5)
    assert one.response_tokens == micro.response_tokens  # the same rollouts
    assert micro.loss == pytest.approx(one.loss, rel=1e-5, abs=1e-8)
    assert micro.entropy == pytest.approx(one.entropy, rel=1e-5)
    assert one.logprob_gap < 1e-4  # float32: the training forward and the sampler agree
    for a, b in zip(whole, pieces):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradient(tmp_path):
    plain, _ = _trainer_grads(tmp_path / "a", 6)
    recomputed, _ = _trainer_grads(tmp_path / "b", 6, checkpointing=True)
    for a, b in zip(plain, recomputed):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
