"""The training forward agrees with the sampler, and hands shaping the right hidden states.

- log-probs of the sampled tokens recorded during generation equal the training forward's
  (left padding, position ids and temperature all have to line up for this to hold);
- the hidden states are the final *post-norm* layer at the positions that emitted each
  response token, checked against a forward hook on the model's final norm.
"""

import pytest
import torch

from node.model.config import TinyModelConfig
from node.model.tiny import build_tiny_model
from node.model.tokenizer import build_char_tokenizer
from node.training.config import SamplingConfig
from node.training.policy_forward import policy_forward
from node.training.rollout import sample_rollouts

pytestmark = pytest.mark.unit

PROMPTS = ["12+7=", "305-48=", "9*9="]  # different lengths: exercises left padding


@pytest.fixture(scope="module")
def policy():
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                             intermediate_size=128, seed=3), tokenizer)
    return model, tokenizer


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_training_forward(policy, temperature):
    model, tokenizer = policy
    torch.manual_seed(0)
    cfg = SamplingConfig(group_size=4, max_new_tokens=24, temperature=temperature)
    batch = sample_rollouts(model, tokenizer, PROMPTS, cfg)
    assert batch.input_ids.shape[0] == len(PROMPTS) * 4
    assert batch.response_mask.any(dim=1).all()
    with torch.no_grad():
        out = policy_forward(model, batch, temperature=temperature)
    mask = batch.response_mask
    diff = (out.logprobs - batch.sample_logprobs).abs()[mask]
    assert diff.max() < 1e-4, f"max log-prob mismatch {diff.max():.2e}"
    assert torch.all(out.logprobs[~mask] == 0)


def test_hidden_states_are_post_norm_at_emitting_positions(policy):
    model, tokenizer = policy
    torch.manual_seed(1)
    batch = sample_rollouts(model, tokenizer, PROMPTS, SamplingConfig(group_size=2, max_new_tokens=16))
    captured = {}
    handle = model.model.norm.register_forward_hook(lambda mod, inp, out: captured.__setitem__("norm", out))
    try:
        with torch.no_grad():
            out = policy_forward(model, batch)
    finally:
        handle.remove()
    p = batch.prompt_width
    num_resp = batch.response_ids.shape[1]
    expected = captured["norm"][:, p - 1 : p - 1 + num_resp]
    assert out.hidden.shape == (batch.input_ids.shape[0], num_resp, model.config.hidden_size)
    assert torch.equal(out.hidden, expected)
    # row 0 is the state on the last prompt token, which emitted response token 0
    lm_logits = model.lm_head(out.hidden[:, 0])
    direct = torch.log_softmax(lm_logits.float(), -1).gather(-1, batch.response_ids[:, :1]).squeeze(-1)
    assert torch.allclose(direct, out.logprobs[:, 0], atol=1e-5)


def test_greedy_rollouts_are_deterministic(policy):
    model, tokenizer = policy
    cfg = SamplingConfig(group_size=2, max_new_tokens=12)
    first = sample_rollouts(model, tokenizer, PROMPTS, cfg, greedy=True)
    second = sample_rollouts(model, tokenizer, PROMPTS, cfg, greedy=True)
    assert first.texts == second.texts
    assert first.input_ids.shape[0] == len(PROMPTS)


def test_a_generation_config_cannot_change_the_sampled_policy(policy):
    """An instruct model's generation_config switches on processors (repetition penalty, top-k, a
    minimum length, ...); sampling overrides them all, so the recorded log-probs still are those of
    the policy the training forward computes."""
    model, tokenizer = policy
    saved = model.generation_config
    model.generation_config = type(saved).from_dict({
        **saved.to_dict(), "do_sample": True, "temperature": 0.3, "top_k": 3, "top_p": 0.5,
        "repetition_penalty": 1.8, "min_new_tokens": 6, "no_repeat_ngram_size": 2})
    try:
        torch.manual_seed(2)
        batch = sample_rollouts(model, tokenizer, PROMPTS, SamplingConfig(group_size=4, max_new_tokens=16))
    finally:
        model.generation_config = saved
    with torch.no_grad():
        out = policy_forward(model, batch)
    diff = (out.logprobs - batch.sample_logprobs).abs()[batch.response_mask]
    assert diff.max() < 1e-4, f"max log-prob mismatch {diff.max():.2e}"
