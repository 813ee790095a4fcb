"""`rankswarm export RUN_DIR OUT`: a trained run as a folder transformers loads by itself.

The exported folder, loaded with `AutoModelForCausalLM.from_pretrained` (and the char tokenizer
with `PreTrainedTokenizerFast`, never AutoTokenizer: see node/model/tokenizer.py), gives the
log-probs the checkpoint gives, exactly in float32; from a bfloat16 run the float32 masters are
exported, not their rounding.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from node.model.loading import load_policy
from node.training.build import build_trainer
from node.training.checkpoint import load_checkpoint
from node.training.config import SamplingConfig, TrainConfig
from node.training.policy_forward import policy_forward
from node.training.precision import MasterWeights
from node.training.rollout import sample_rollouts
from rankswarm.cli import main

pytestmark = pytest.mark.unit

TEXT = "305 - 48 = 257\n\\boxed{257}"


def _train(tmp_path, dtype: str):
    cfg = TrainConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "seed": 0, "steps": 1, "progress": False, "torch_threads": 1,
        "model": {"dtype": dtype}, "algo": {"prompts_per_step": 2}, "optim": {"lr": 1e-3},
        "sampling": {"group_size": 2, "max_new_tokens": 16}, "eval": {"num_problems": 2},
        "task": {"type": "arithmetic", "digits": 2}, "loss": {"entropy_coef": 0.01}})
    trainer = build_trainer(cfg)
    trainer.run()
    return trainer


def _checkpoint_logprobs(run_dir, batch):
    model, _ = load_policy(None, "cpu", "float32")
    load_checkpoint(run_dir / "checkpoints" / "step_00000001", MasterWeights(model), None)
    with torch.no_grad():
        return policy_forward(model, batch).logprobs


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_round_trips_the_checkpoints_logprobs(tmp_path, dtype):
    trainer = _train(tmp_path, dtype)
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "run"), str(out)]) == 0

    exported = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    assert next(exported.parameters()).dtype == torch.float32
    assert tokenizer.decode(tokenizer(TEXT).input_ids, skip_special_tokens=True) == TEXT  # spaces kept
    assert GenerationConfig.from_pretrained(out).eos_token_id == tokenizer.eos_token_id
    assert json.loads((out / "rankswarm_export.json").read_text())["step"] == 1

    torch.manual_seed(0)
    batch = sample_rollouts(trainer.model, tokenizer, ["12+7=", "305-48="], SamplingConfig(group_size=2))
    with torch.no_grad():
        got = policy_forward(exported, batch).logprobs
    assert torch.equal(got, _checkpoint_logprobs(tmp_path / "run", batch))
    # the export holds the trained weights, not the base model's
    base, _ = load_policy(None, "cpu", "float32")
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), exported.parameters()))


def test_export_in_bfloat16_and_without_a_checkpoint(tmp_path):
    _train(tmp_path, "float32")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", local_files_only=True, dtype="auto")
    assert next(exported.parameters()).dtype == torch.bfloat16
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.resolved.json").write_text((tmp_path / "run" / "config.resolved.json").read_text())
    assert main(["export", str(tmp_path / "empty"), str(tmp_path / "nothing")]) == 3  # no checkpoint: says so
