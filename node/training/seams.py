"""The two seams where a single-node run and a swarm peer differ.

`BaselineSource`: where the shaping baselines come from. `LocalBaselines` keeps the peer's
own EMA; the swarm peer wraps it and prefers the coordinator's fresh global record.
`UpdateRule`: how gradients become a parameter update. `LocalUpdate` clips and steps AdamW;
the swarm peer averages compressed gradients with other peers first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from shaping import Baselines, IndicatorStats, ShapingConfig


class BaselineSource(Protocol):
    def current(self) -> tuple[Baselines, str]:
        """The baselines to shape this step with, and where they came from ("local", "global")."""

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

    def current(self) -> tuple[Baselines, str]:
        return self.baselines, "local"

    def observe(self, stats: IndicatorStats) -> None:
        self.baselines = self.baselines.update(stats, self.cfg)

    def state_dict(self) -> dict:
        return self.baselines.to_dict()

    def load_state_dict(self, state: dict) -> None:
        self.baselines = Baselines.from_dict(state)


@dataclass
class UpdateReport:
    applied: bool
    grad_norm: float
    extra: dict[str, Any] = field(default_factory=dict)


class UpdateRule(Protocol):
    optimizer: torch.optim.Optimizer

    def apply(self, num_samples: int) -> UpdateReport:
        """Turn the accumulated `.grad`s into a parameter update and zero them."""


class LocalUpdate:
    """Gradient clipping and an optimizer step on this peer alone."""

    def __init__(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, grad_clip: float):
        self.params = params
        self.optimizer = optimizer
        self.grad_clip = grad_clip

    def apply(self, num_samples: int) -> UpdateReport:
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        if not torch.isfinite(torch.tensor(norm)):
            # a non-finite gradient would poison AdamW's moments for good: skip the step
            self.optimizer.zero_grad(set_to_none=True)
            return UpdateReport(False, norm, {"update_skipped": "non-finite gradient"})
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return UpdateReport(True, norm)
