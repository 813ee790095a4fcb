"""Factories that turn a `TrainConfig` into a ready `Trainer` (plain wiring, no hidden state)."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from node.model.loading import load_policy
from node.tasks import build_task
from node.training.config import TrainConfig
from node.training.seams import BaselineSource, LocalBaselines, LocalUpdate, UpdateRule, build_adamw
from node.training.trainer import Trainer
from plumbing.config_loading import write_resolved
from plumbing.metrics import MetricsSink

UpdateFactory = Callable[[torch.nn.Module, TrainConfig], UpdateRule]


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


def build_local_update(model: torch.nn.Module, cfg: TrainConfig) -> UpdateRule:
    params = [p for p in model.parameters() if p.requires_grad]
    return LocalUpdate(params, build_adamw(params, cfg.optim), cfg.optim.grad_clip)


def build_trainer(cfg: TrainConfig, *, baselines: BaselineSource | None = None,
                  update_factory: UpdateFactory = build_local_update,
                  metrics: MetricsSink | None = None) -> Trainer:
    """Load model and task, wire the seams (local by default) and write the resolved config."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.model.device)
    model, tokenizer = load_policy(cfg.model.path, device, cfg.model.dtype)
    task = build_task(cfg.task)
    write_resolved(cfg, cfg.run_dir)
    return Trainer(cfg, model, tokenizer, task,
                   baselines=baselines or LocalBaselines(cfg.shaping),
                   update=update_factory(model, cfg),
                   metrics=metrics or MetricsSink(f"{cfg.run_dir}/metrics.jsonl"))
