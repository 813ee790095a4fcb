"""What every verifiable task provides: problems, a fixed held-out set, and a scorer.

A `TaskSource` hands out training prompts from an endless (or large) stream, a FIXED
evaluation set that never overlaps the training prompts, and scores a model response
against a problem's reference answer (see node/rewards.py for the reward modes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from node.rewards import Judgement, RewardConfig, RewardMode, reward_for


@dataclass(frozen=True)
class Problem:
    """One verifiable problem. `uid` is unique within its task and stable across runs."""

    prompt: str  # exactly the text the policy is conditioned on
    answer: str  # the reference final answer (normalised, e.g. "42" not "#### 42")
    task: str  # the TaskSource name that made it
    uid: str


@runtime_checkable
class TaskSource(Protocol):
    name: str

    def sample(self, rng: random.Random, n: int) -> list[Problem]:
        """`n` training problems drawn with `rng`; never one of the evaluation problems."""

    def eval_set(self, n: int) -> list[Problem]:
        """The first `n` problems of the task's fixed held-out set (same list every call)."""

    def judge(self, problem: Problem, response: str) -> Judgement:
        """Whether `response` answers `problem` correctly, and whether it boxed its answer."""

    def score(self, problem: Problem, response: str, mode: RewardMode | RewardConfig) -> float:
        """The scalar task reward of `response` under the reward `mode`."""

    def is_correct(self, problem: Problem, response: str) -> bool:
        """True when the response's final answer is right (format ignored)."""


class ScoredTask:
    """`eval_set`, `score` and `is_correct` on top of a subclass's held-out list `_eval` and its `judge`;
    never raises on a bad response."""

    name: str
    _eval: list[Problem]  # the fixed held-out set, in a stable order
    eval_fix = "raise task.eval_size"  # what to change when eval_set is asked for more than it holds

    def eval_set(self, n: int) -> list[Problem]:
        check_eval_request(n, len(self._eval), self.eval_fix)
        return list(self._eval[:n])

    def judge(self, problem: Problem, response: str) -> Judgement:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, problem: Problem, response: str, mode: RewardMode | RewardConfig) -> float:
        return reward_for(self.judge(problem, response), mode)

    def is_correct(self, problem: Problem, response: str) -> bool:
        return self.judge(problem, response).correct


def check_eval_request(n: int, available: int, fix: str) -> None:
    """ValueError when more held-out problems are asked for than the task holds."""
    if n < 0:
        raise ValueError(f"eval_set needs n >= 0, got {n}")
    if n > available:
        raise ValueError(f"asked for {n} held-out problems but the task's eval set holds {available}; "
                         f"lower eval.num_problems or {fix}")
