"""The two seams where a single-node run and a swarm peer differ.

`BaselineSource`: where the shaping baselines come from. `LocalBaselines` keeps the peer's
own EMA; the swarm peer wraps it and prefers the coordinator's fresh global record.
`UpdateRule`: how gradients become a parameter update, and what else the owner of a trainer
may ask of it (a state download before the first step, settling after the last, shutdown).
`LocalUpdate` clips and steps AdamW; the swarm peer averages compressed gradients with other
peers first (node.swarm.update.GossipUpdate). Both work on the float32 master weights
(node/training/precision.py) and refresh the model from them whenever they change.

What crosses a seam is typed: an update returns an `UpdateReport`, whose `details` (a
`MetricsPart`, e.g. the swarm's gossip counters) add their own columns to the step's
metrics row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from node.training.config import OptimConfig
from node.training.precision import MasterWeights
from shaping import Baselines, IndicatorStats, ShapingConfig


class MetricsPart(Protocol):
    """A typed group of numbers that adds columns to a metrics.jsonl row."""

    def metrics_row(self) -> dict[str, Any]: ...


class BaselineChoice(NamedTuple):
    """The baselines a step shapes with, where they came from ("local", "global"), and how old the
    coordinator's newest record was then (seconds; None when none was ever read): a peer on "local"
    with a large age lost its coordinator, one with no age never had one."""

    baselines: Baselines
    source: str
    global_age_s: float | None = None


class BaselineSource(Protocol):
    def current(self) -> BaselineChoice:
        """The baselines to shape this step with (read once per step, never waits)."""

    def observe(self, stats: IndicatorStats) -> None:
        """Fold this step's batch statistics in, after the step's signals were computed."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class LocalBaselines:
    """The peer's own EMA baselines (verl-method.md section 4)."""

    def __init__(self, cfg: ShapingConfig, baselines: Baselines | None = None):
        self.cfg = cfg
        # the config decides alpha and the reference zero-start mode, so it must reach the initial state
        self.baselines = baselines if baselines is not None else Baselines.initial(cfg)

    def current(self) -> BaselineChoice:
        return BaselineChoice(self.baselines, "local")

    def observe(self, stats: IndicatorStats) -> None:
        self.baselines = self.baselines.update(stats, self.cfg)

    def state_dict(self) -> dict:
        return self.baselines.to_dict()

    def load_state_dict(self, state: dict) -> None:
        self.baselines = Baselines.from_dict(state)


@dataclass
class UpdateReport:
    applied: bool  # the parameters changed (a local step or a swarm update; not a state download)
    grad_norm: float  # of this peer's gradients, before clipping
    skipped: str | None = None  # why no update was attempted (e.g. "non-finite gradient")
    weights_replaced: bool = False  # the weights were replaced by others' (a swarm state download or resync)
    details: MetricsPart | None = None  # what the update rule measured besides (the swarm's gossip counters)

    def metrics_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"grad_norm": self.grad_norm, "update_applied": self.applied}
        if self.skipped is not None:
            row["update_skipped"] = self.skipped
        return row | (self.details.metrics_row() if self.details is not None else {})


class UpdateRule(Protocol):
    """Everything a trainer and its owner (a swarm `Node`) call on an update rule."""

    optimizer: torch.optim.Optimizer  # checkpoints save and restore its state
    master: MasterWeights  # the float32 parameters the optimizer steps, and the model they refresh

    def apply(self, num_samples: int) -> UpdateReport:
        """Turn the masters' accumulated `.grad`s into a parameter update, zero them and refresh the model."""

    def load_state_from_peers(self) -> bool:
        """Before the first step: take the current state of peers that are ahead; True if it did."""

    def settle(self) -> MetricsPart | None:
        """After the last step: make sure this peer leaves with the weights its peers hold (a row for
        the metrics), or None when there is nobody to agree with."""

    def shutdown(self) -> None:
        """Release what the rule holds (background processes, connections)."""


def build_adamw(params: list[torch.nn.Parameter] | list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over parameters or parameter groups (hivemind hands groups); fused on CUDA (one kernel,
    and no temporary as large as the parameters: the default multi-tensor step holds one,
    node/training/memory.py). The CPU keeps torch's default."""
    params = list(params)
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fused = bool(tensors) and all(t.device.type == "cuda" for t in tensors)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                             **({"fused": True} if fused else {}))


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> tuple[float, bool]:
    """Clip the gradients' total norm to `max_norm`; (norm before clipping, whether it is finite).

    A non-finite gradient would poison AdamW's moments for good (and, in a swarm, everyone's
    average): the caller skips the step and zeroes the gradients instead."""
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return norm, bool(torch.isfinite(torch.tensor(norm)))


class LocalUpdate:
    """Gradient clipping and an optimizer step on this peer alone."""

    def __init__(self, master: MasterWeights, optimizer: torch.optim.Optimizer, grad_clip: float):
        self.master = master
        self.params = master.params
        self.optimizer = optimizer
        self.grad_clip = grad_clip

    def apply(self, num_samples: int) -> UpdateReport:
        norm, finite = clip_gradients(self.params, self.grad_clip)
        if finite:
            self.optimizer.step()
            self.master.push_to_model()
        self.master.after_update(finite)
        self.optimizer.zero_grad(set_to_none=True)
        return UpdateReport(finite, norm, skipped=None if finite else "non-finite gradient")

    def load_state_from_peers(self) -> bool:
        return False  # nobody to take it from

    def settle(self) -> None:
        return None

    def shutdown(self) -> None:
        pass
