"""The doctor's memory estimate: parameters counted from config.json alone, and what each part adds."""

from __future__ import annotations

import pytest
import torch

from node.model.loading import load_policy
from node.model.memory import free_memory, training_need
from node.training.config import TrainConfig

pytestmark = pytest.mark.unit


def test_parameters_are_counted_exactly_without_loading_weights():
    need = training_need(TrainConfig(), torch.device("cpu"))
    model, _ = load_policy(None, "cpu")
    assert need.num_params == sum(p.numel() for p in model.parameters())
    assert need.dtype == torch.float32 and need.on(torch.device("cpu")) == need.device_bytes + need.host_bytes


def test_a_reference_policy_and_a_bigger_batch_need_more():
    base = training_need(TrainConfig(), torch.device("cpu"))
    with_kl = training_need(TrainConfig.model_validate({"loss": {"kl_coef": 0.1}}), torch.device("cpu"))
    bigger = training_need(TrainConfig.model_validate({"algo": {"prompts_per_step": 64}}), torch.device("cpu"))
    assert with_kl.device_bytes - base.device_bytes == 4 * base.num_params
    assert bigger.device_bytes > base.device_bytes


def test_free_memory_of_the_cpu_is_read_from_this_machine():
    free, total, what = free_memory(torch.device("cpu"))
    assert 0 < free <= total and "RAM" in what
