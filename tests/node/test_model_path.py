"""`--set model.path=DIR`: a local Hugging Face causal LM trains through the same code path.

The folder is a tiny random Llama (not the embedded Qwen2) written with `save_pretrained`
next to the repo's char tokenizer, so the whole path runs on the CPU in about a second:
config -> load_policy -> rollouts -> the training forward -> shaping -> update -> checkpoint.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from node.model.loading import load_policy
from node.model.tokenizer import build_char_tokenizer, save_char_tokenizer
from node.training.config import SamplingConfig
from node.training.policy_forward import policy_forward
from node.training.rollout import sample_rollouts
from plumbing.metrics import read_jsonl
from rankswarm.cli import main

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_char_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    save_char_tokenizer(tokenizer, folder)
    return folder


def test_train_one_step_on_a_local_llama_folder(llama_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [f'model.path="{llama_dir}"', f'run_dir="{run_dir}"', "steps=1", "progress=false",
                 "torch_threads=1", "algo.prompts_per_step=2", "sampling.group_size=2",
                 "sampling.max_new_tokens=12", "eval.num_problems=2",
                 # a random model's rollouts all earn the same reward, so the group advantage is
                 # zero; the entropy bonus still gives every parameter a gradient
                 "loss.entropy_coef=0.01"]
    assert main(["train", *[arg for o in overrides for arg in ("--set", o)]]) == 0

    resolved = json.loads((run_dir / "config.resolved.json").read_text())
    assert resolved["model"]["path"] == str(llama_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    (step,) = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 1]
    assert step["update_applied"] and torch.isfinite(torch.tensor(step["loss"]))
    assert step["response_tokens"] > 0 and step["er"] is not None and step["er"] > 1.0

    trained = load_file(str(run_dir / "checkpoints" / "step_00000001" / "model.safetensors"))
    initial = load_file(str(llama_dir / "model.safetensors"))
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_llama_hidden_states_for_shaping_are_post_norm(llama_dir):
    model, tokenizer = load_policy(str(llama_dir), "cpu")
    assert isinstance(model, LlamaForCausalLM) and next(model.parameters()).dtype == torch.float32
    torch.manual_seed(0)
    cfg = SamplingConfig(group_size=2, max_new_tokens=10)
    batch = sample_rollouts(model, tokenizer, ["12+7=", "305-48="], cfg)
    captured = {}
    handle = model.model.norm.register_forward_hook(lambda mod, inp, out: captured.__setitem__("norm", out))
    try:
        with torch.no_grad():
            out = policy_forward(model, batch)
    finally:
        handle.remove()
    p, num_resp = batch.prompt_width, batch.response_ids.shape[1]
    assert torch.equal(out.hidden, captured["norm"][:, p - 1 : p - 1 + num_resp])
    diff = (out.logprobs - batch.sample_logprobs).abs()[batch.response_mask]
    assert diff.max() < 1e-4
