"""Factories that turn a `TrainConfig` into a ready `Trainer` (plain wiring, no hidden state)."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from node.model.loading import load_policy
from node.tasks import build_task
from node.training.config import TrainConfig
from node.training.memory import check_memory
from node.training.precision import MasterWeights
from node.training.rollout import PromptFormat, encode_prompts, resolve_prompt_format
from node.training.seams import BaselineSource, LocalBaselines, LocalUpdate, UpdateRule, build_adamw
from node.training.trainer import Trainer
from plumbing.config_loading import write_resolved
from plumbing.metrics import MetricsSink

UpdateFactory = Callable[[MasterWeights, TrainConfig], UpdateRule]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device={name!r} but no CUDA device is visible; use model.device='cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def enable_checkpointing(model) -> None:
    """Recompute each decoder layer in the backward (transformers 5 renamed the switch)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def longest_prompt(tokenizer, task, prompt_format: PromptFormat, sample: int = 32) -> int:
    """Tokens of the longest of `sample` held-out prompts, as the model will see them."""
    prompts = [p.prompt for p in task.eval_set(sample)]
    return int(encode_prompts(tokenizer, prompts, torch.device("cpu"), prompt_format)["input_ids"].shape[1])


def build_local_update(master: MasterWeights, cfg: TrainConfig) -> UpdateRule:
    """AdamW on the float32 master weights, on this peer alone."""
    return LocalUpdate(master, build_adamw(master.params, cfg.optim), cfg.optim.grad_clip)


def build_trainer(cfg: TrainConfig, *, baselines: BaselineSource | None = None,
                  update_factory: UpdateFactory = build_local_update,
                  metrics: MetricsSink | None = None, swarm: bool = False) -> Trainer:
    """Load model and task, check that a step fits in memory, wire the seams (local by default) and
    write the resolved config. `swarm`: the update rule averages with hivemind (its buffers count
    in the memory estimate)."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.model.device)
    model, tokenizer = load_policy(cfg.model.path, device, cfg.model.dtype)
    if cfg.memory.gradient_checkpointing:
        enable_checkpointing(model)
    task = build_task(cfg.task)
    prompt_format = resolve_prompt_format(cfg.model.chat_template, tokenizer, cfg.model.system_prompt)
    if cfg.memory.check:  # before the optimizer state or hivemind's buffers exist
        prompt_tokens = longest_prompt(tokenizer, task, prompt_format, min(32, cfg.eval.num_problems))
        check_memory(model, cfg, device, prompt_tokens=prompt_tokens, swarm=swarm)
    write_resolved(cfg, cfg.run_dir)
    return Trainer(cfg, model, tokenizer, task, prompt_format=prompt_format,
                   baselines=baselines or LocalBaselines(cfg.shaping),
                   update=update_factory(MasterWeights(model), cfg),
                   metrics=metrics or MetricsSink(f"{cfg.run_dir}/metrics.jsonl"))
