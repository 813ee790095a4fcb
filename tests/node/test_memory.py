"""Memory: a step's peak does not grow with batch x length x vocabulary, and a step that cannot fit
is refused before it starts, with what to lower.

The peak is measured in fresh processes (tests/node/memory_probe.py) as the resident set's
high-water mark above the step's start, with glibc told to map every allocation of 1 MB or more
on its own (MALLOC_MMAP_THRESHOLD_), so that freed tensors leave the resident set at once: left
to its defaults glibc moves its threshold up after the first large free, serves later tensors
from a heap it rarely trims, and the resident set then depends on allocation order (one run of
the same step peaked at 0.7 GB, the next at 2.9 GB).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from node.model.loading import load_policy
from node.training.build import build_trainer
from node.training.config import TrainConfig
from node.training.memory import MemoryPlanError, ModelShape, estimate_memory, free_memory, shape_from_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
VOCAB = 151_936
CHUNK = 32


def step_peak(prompts: int, group: int, max_new_tokens: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, str(REPO / "tests/node/memory_probe.py"), str(prompts), str(group),
                          str(max_new_tokens), str(CHUNK)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh processes, about 20 s on 2 cores
def test_step_peak_does_not_grow_with_batch_times_length_beyond_one_chunk():
    small = step_peak(prompts=2, group=2, max_new_tokens=8)  # 4 rollouts, 32 response tokens
    large = step_peak(prompts=4, group=4, max_new_tokens=32)  # 16 rollouts, 512 response tokens
    assert large["tokens"] >= 12 * small["tokens"]
    one_chunk = CHUNK * VOCAB * 4  # one [chunk, V] float32 tensor: 19 MB
    full = large["tokens"] * VOCAB * 4  # the [B, R, V] float32 logits generation used to keep: 311 MB
    growth = large["peak_above_start"] - small["peak_above_start"]
    assert growth < 2 * one_chunk, (f"the step's peak grew by {growth / 1e6:.0f} MB from {small['tokens']} to "
                                    f"{large['tokens']} tokens (one chunk is {one_chunk / 1e6:.0f} MB, the full "
                                    f"logits {full / 1e6:.0f} MB)")


def _config(tmp_path, **sections) -> TrainConfig:
    base = {"run_dir": str(tmp_path), "progress": False, "eval": {"num_problems": 4},
            "task": {"type": "arithmetic", "digits": 2}}
    return TrainConfig.model_validate({**base, **sections})


def test_the_estimate_adds_up_masters_gradients_and_adam_for_a_bf16_model(tmp_path):
    model, _ = load_policy(None, "cpu", "bfloat16")
    shape = ModelShape.of(model)
    n = shape.num_params
    cfg = _config(tmp_path, memory={"micro_batch_size": 8})
    estimate = estimate_memory(shape, cfg, torch.device("cpu"), prompt_tokens=20)
    assert shape.dtype_bytes == 2 and estimate.master == 4 * n and estimate.optimizer == 8 * n
    assert estimate.gradients == 4 * n and estimate.update == 4 * n  # float32; foreach AdamW's temporary on CPU
    assert estimate.micro_batch == 8 and estimate.tokens == 20 + cfg.sampling.max_new_tokens
    swarm = estimate_memory(shape, cfg, torch.device("cpu"), prompt_tokens=20, swarm=True)
    assert swarm.total - estimate.total == 16 * n  # hivemind's copies, all in host memory on a CPU peer
    checkpointed = estimate_memory(shape, _config(tmp_path, memory={"micro_batch_size": 8,
                                                                    "gradient_checkpointing": True}),
                                   torch.device("cpu"), prompt_tokens=20)
    assert checkpointed.activations < estimate.activations / 2


def test_a_step_that_cannot_fit_is_refused_with_what_to_lower(tmp_path):
    cfg = _config(tmp_path, memory={"limit_gb": 0.1}, algo={"prompts_per_step": 32})
    with pytest.raises(MemoryPlanError) as err:
        build_trainer(cfg)
    message = str(err.value)
    assert "memory.micro_batch_size=" in message and "memory.gradient_checkpointing=true" in message
    assert "0.10 GB memory.limit_gb on cpu" in message
    # what it proposes fits
    fixed = int(message.split("memory.micro_batch_size=")[1].split()[0])
    build_trainer(_config(tmp_path, memory={"limit_gb": 0.1, "micro_batch_size": fixed},
                          algo={"prompts_per_step": 32}))
    # a batch whose generation alone does not fit is told to generate fewer rollouts
    with pytest.raises(MemoryPlanError, match="lower algo.prompts_per_step x sampling.group_size"):
        build_trainer(_config(tmp_path, memory={"limit_gb": 0.1, "micro_batch_size": 1},
                              algo={"prompts_per_step": 128}))


def test_the_shape_from_config_json_alone_counts_what_the_loaded_model_has():
    model, _ = load_policy(None, "cpu")
    assert shape_from_config(None, torch.float32) == ModelShape.of(model)
    half = shape_from_config(None, torch.bfloat16)
    assert half.num_params == ModelShape.of(model).num_params and half.dtype_bytes == 2


def test_a_folder_without_config_json_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="has no config.json; set model.path"):
        shape_from_config(str(tmp_path), torch.float32)


def test_free_memory_of_the_cpu_is_read_from_this_machine():
    free, total, what = free_memory(torch.device("cpu"))
    assert 0 < free <= total and "RAM" in what
