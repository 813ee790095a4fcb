"""Prompts of an instruct model go through its chat template (model.chat_template), raw otherwise."""

import pytest
import torch

from node.model.config import TinyModelConfig
from node.model.tiny import build_tiny_model
from node.model.tokenizer import build_char_tokenizer
from node.training.config import SamplingConfig
from node.training.rollout import PromptFormat, encode_prompts, format_prompts, resolve_prompt_format, sample_rollouts

pytestmark = pytest.mark.unit

TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")


@pytest.fixture
def chat_tokenizer():
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def test_auto_uses_the_template_when_the_tokenizer_has_one(chat_tokenizer):
    assert resolve_prompt_format("auto", chat_tokenizer).chat_template
    assert not resolve_prompt_format("off", chat_tokenizer).chat_template
    assert not resolve_prompt_format("auto", build_char_tokenizer()).chat_template
    with pytest.raises(ValueError, match="model.chat_template='off'"):
        resolve_prompt_format("on", build_char_tokenizer())


def test_templated_prompts_are_encoded_without_extra_special_tokens(chat_tokenizer):
    fmt = PromptFormat(chat_template=True, system_prompt="be brief")
    assert format_prompts(chat_tokenizer, ["12+7="], fmt) == ["[system]be brief\n[user]12+7=\n[assistant]"]
    enc = encode_prompts(chat_tokenizer, ["12+7="], torch.device("cpu"), fmt)
    expected = chat_tokenizer("[system]be brief\n[user]12+7=\n[assistant]", add_special_tokens=False).input_ids
    assert enc["input_ids"][0].tolist() == expected  # no <bos> added on top of the template's own tokens
    raw = encode_prompts(chat_tokenizer, ["12+7="], torch.device("cpu"))
    assert raw["input_ids"][0].tolist() == chat_tokenizer("12+7=").input_ids


def test_rollouts_start_from_the_templated_prompt(chat_tokenizer):
    model = build_tiny_model(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                             intermediate_size=32), chat_tokenizer)
    fmt = resolve_prompt_format("auto", chat_tokenizer)
    batch = sample_rollouts(model, chat_tokenizer, ["12+7=", "5+5="], SamplingConfig(group_size=2, max_new_tokens=4),
                            prompt_format=fmt)
    prompts = chat_tokenizer.batch_decode(batch.input_ids[:, :batch.prompt_width], skip_special_tokens=True)
    assert prompts[0] == "[user]12+7=\n[assistant]" and prompts[2].endswith("[user]5+5=\n[assistant]")
