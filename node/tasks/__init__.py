"""Verifiable tasks: the `TaskConfig` union and the `build_task` factory.

`TaskConfig` validates a dict whose `type` picks the variant ("arithmetic" when absent):

    {"type": "arithmetic", "digits": 2, "operations": ["+", "-"]}
    {"type": "reasoning_gym", "dataset": "countdown"}
    {"type": "jsonl", "path": "data/gsm8k_train.jsonl"}
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, RootModel, Tag

from node.tasks.arithmetic import ArithmeticTask, ArithmeticTaskConfig
from node.tasks.base import Problem, ScoredTask, TaskSource
from node.tasks.jsonl_source import JsonlTask, JsonlTaskConfig
from node.tasks.reasoning_gym_source import ReasoningGymTask, ReasoningGymTaskConfig

__all__ = ["ArithmeticTaskConfig", "JsonlTaskConfig", "Problem", "ReasoningGymTaskConfig", "ScoredTask",
           "TaskConfig", "TaskSource", "TaskVariant", "build_task"]


def _task_type(value: Any) -> str | None:
    # a partial override such as `--set task.digits=2` carries no type: it means the default task
    if isinstance(value, dict):
        return value.get("type", "arithmetic")
    return getattr(value, "type", None)


TaskVariant = Annotated[
    Annotated[ArithmeticTaskConfig, Tag("arithmetic")]
    | Annotated[ReasoningGymTaskConfig, Tag("reasoning_gym")]
    | Annotated[JsonlTaskConfig, Tag("jsonl")],
    Discriminator(_task_type),
]


class TaskConfig(RootModel[TaskVariant]):
    """Which task a peer trains on; `type` selects the variant, each variant forbids unknown keys."""

    @property
    def type(self) -> str:
        return self.root.type


_BUILDERS = {"arithmetic": ArithmeticTask, "reasoning_gym": ReasoningGymTask, "jsonl": JsonlTask}


def build_task(cfg: TaskConfig | ArithmeticTaskConfig | ReasoningGymTaskConfig | JsonlTaskConfig) -> TaskSource:
    """The task source for `cfg` (a TaskConfig or one of its variants)."""
    variant = cfg.root if isinstance(cfg, TaskConfig) else cfg
    if variant.type not in _BUILDERS:
        raise ValueError(f"unknown task type {variant.type!r}; use one of {sorted(_BUILDERS)}")
    return _BUILDERS[variant.type](variant)
