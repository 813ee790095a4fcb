"""Tasks from the `reasoning-gym` package (countdown, basic_arithmetic, gsm_symbolic, ...).

reasoning-gym datasets are procedural: item `idx` of a dataset with seed `s` is generated from
Random(s + idx), so a problem is fully named by (seed, idx) and its scoring entry is rebuilt
from the uid instead of being carried around. Training items come from a dataset seeded
`seed` with indices in [0, train_size); the held-out pool from one seeded
`seed + train_size` with indices in [0, eval_size): their item seeds never coincide, and
training draws also skip any prompt text that is in the pool (small tasks repeat questions).

The final answer is extracted from the response like any math answer (\\boxed{...}, an
"answer:" line, the last number) and judged by the dataset's own `score_answer`; correct
means a score of 1.0 (countdown, for instance, gives 0.05 to a wrong expression).
"""

from __future__ import annotations

import random
import threading
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node.rewards import MAX_ANSWER_CHARS, Judgement, extract_answer, normalise
from node.tasks.base import Problem, ScoredTask

BOXED_INSTRUCTION = "\nPut your final answer within \\boxed{}."


class ReasoningGymTaskConfig(BaseModel):
    """One reasoning-gym dataset as a task."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["reasoning_gym"] = "reasoning_gym"
    dataset: str = Field("basic_arithmetic", min_length=1,
                         description="A registered reasoning-gym dataset name, e.g. countdown, basic_arithmetic, "
                                     "gsm_symbolic.")
    dataset_config: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the dataset's own config class (not seed/size).")
    seed: int = Field(0, ge=0, description="Seeds the training items; the eval pool uses seed + train_size.")
    train_size: int = Field(100_000, ge=1, le=10_000_000,
                            description="Training items to draw from (some datasets build an index of this size).")
    eval_size: int = Field(500, ge=1, le=100_000, description="Size of the fixed held-out pool.")
    prompt_suffix: str = Field(BOXED_INSTRUCTION, description="Appended to every question (answer-format hint).")


def _create(name: str, options: dict[str, Any], seed: int, size: int):
    import reasoning_gym

    if "seed" in options or "size" in options:
        raise ValueError("task.dataset_config must not set seed or size; use task.seed / task.train_size / "
                         "task.eval_size")
    try:
        return reasoning_gym.create_dataset(name, seed=seed, size=size, **options)
    except ValueError as err:
        if "not registered" in str(err):
            from reasoning_gym.factory import DATASETS

            raise ValueError(f"task.dataset={name!r} is not a reasoning-gym dataset; known: "
                             f"{', '.join(sorted(DATASETS))}") from err
        raise ValueError(f"task.dataset_config rejected by reasoning-gym {name}: {err}") from err
    except (TypeError, AssertionError) as err:
        raise ValueError(f"task.dataset_config rejected by reasoning-gym {name}: {err}") from err


class ReasoningGymTask(ScoredTask):
    """A reasoning-gym dataset with a held-out pool and the dataset's own scorer."""

    def __init__(self, cfg: ReasoningGymTaskConfig):
        self.cfg = cfg
        self.name = f"reasoning_gym/{cfg.dataset}"
        self._splits = {
            "train": _create(cfg.dataset, cfg.dataset_config, cfg.seed, cfg.train_size),
            "eval": _create(cfg.dataset, cfg.dataset_config, cfg.seed + cfg.train_size, cfg.eval_size),
        }
        self._eval = [self._problem("eval", i) for i in range(cfg.eval_size)]
        self._eval_prompts = frozenset(p.prompt for p in self._eval)
        self._entry = lru_cache(maxsize=4096)(self._entry_uncached)

    def _entry_uncached(self, split: str, idx: int) -> dict[str, Any]:
        return self._splits[split][idx]

    def _problem(self, split: str, idx: int) -> Problem:
        entry = self._entry_uncached(split, idx)
        return Problem(prompt=entry["question"] + self.cfg.prompt_suffix, answer=str(entry["answer"]),
                       task=self.name, uid=f"{split}:{idx}")

    def sample(self, rng: random.Random, n: int) -> list[Problem]:
        out = []
        for _ in range(100 * n + 100):  # bounded rejection of prompts that are in the eval pool
            if len(out) == n:
                break
            problem = self._problem("train", rng.randrange(self.cfg.train_size))
            if problem.prompt not in self._eval_prompts:
                out.append(problem)
        if len(out) < n:
            raise ValueError(f"reasoning-gym {self.cfg.dataset} keeps repeating held-out questions; "
                             f"lower task.eval_size or make the dataset harder (task.dataset_config)")
        return out

    def judge(self, problem: Problem, response: str) -> Judgement:
        extraction = extract_answer(response)
        if extraction.answer is None or len(extraction.answer) > MAX_ANSWER_CHARS:
            return Judgement(False, extraction.boxed, extraction.answer)
        split, _, idx = problem.uid.partition(":")
        score = _guarded_score(self._splits[split], normalise(extraction.answer), self._entry(split, int(idx)))
        return Judgement(score >= 1.0 - 1e-9, extraction.boxed, extraction.answer)


def _guarded_score(dataset, answer: str, entry: dict[str, Any]) -> float:
    """The dataset's score, or 0.0 when its scorer raises or (main thread only) runs > 1 s."""
    if "**" in answer or "^" in answer:
        return 0.0  # scorers hand answers to sympy: an exponent tower would not come back
    try:
        if threading.current_thread() is threading.main_thread():
            return float(_with_alarm(lambda: dataset.score_answer(answer, entry), 1.0))
        return float(dataset.score_answer(answer, entry))
    except Exception:  # noqa: BLE001 - a scorer failure is a wrong answer, not a crashed step
        return 0.0


class _ScorerTimeout(Exception):
    pass


def _with_alarm(fn, seconds: float):
    import signal

    def on_alarm(signum, frame):
        raise _ScorerTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
