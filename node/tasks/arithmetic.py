"""Synthetic arithmetic the embedded model can learn: seeded, endless, checkable exactly.

Prompt format (no instruction text; the tokenizer prepends <bos>):

    "47+38="

Response format, the worked answer the warm-up teaches (`worked_solution`), one column per
digit from the units up, then the boxed result; 15-45 characters (= tokens for the char
tokenizer) for 1-3 digit operands:

    "7+8=15, 4+3+1=8, \\boxed{85}"            addition (the carry is the tens digit of a column)
    "7-8+10=9, 4-3-1=0, \\boxed{9}"           subtraction, a >= b (a borrow shows as +10 then -1)
    "7*3=21, 4*3+2=14, \\boxed{141}"          multiplication by a one-digit number

A response is correct when its extracted final answer is a number equal to the result;
expressions ("47+38") never count (see node/rewards.py).
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from node.rewards import Judgement, as_fraction, extract_answer
from node.tasks.base import Problem, ScoredTask

Operation = Literal["+", "-", "*"]


class ArithmeticTaskConfig(BaseModel):
    """Synthetic n-digit arithmetic; what the embedded model is warmed up on."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["arithmetic"] = "arithmetic"
    min_digits: int = Field(1, ge=1, le=9, description="Fewest digits of an operand.")
    digits: int = Field(3, ge=1, le=9, description="Most digits of an operand (each operand draws its own count).")
    operations: list[Operation] = Field(
        default_factory=lambda: ["+"], min_length=1,
        description="Operations drawn uniformly: '+', '-' (a >= b, so results are non-negative), "
                    "'*' (by a one-digit number).")
    eval_size: int = Field(500, ge=1, le=100_000, description="Size of the fixed held-out pool eval_set draws from.")
    eval_seed: int = Field(1_000_003, description="Seeds the held-out pool (training prompts exclude it).")

    @model_validator(mode="after")
    def _check(self) -> ArithmeticTaskConfig:
        if self.min_digits > self.digits:
            raise ValueError(f"task.min_digits ({self.min_digits}) must be <= task.digits ({self.digits})")
        if len(set(self.operations)) != len(self.operations):
            raise ValueError(f"task.operations has duplicates: {self.operations}")
        space = _problem_space(self)
        if 4 * self.eval_size > space:
            raise ValueError(f"task.eval_size={self.eval_size} would hold out over a quarter of the only ~{space} "
                             f"distinct problems; lower task.eval_size or raise task.digits")
        return self


def _problem_space(cfg: ArithmeticTaskConfig) -> int:
    """Rough count of distinct problems (ordered operand pairs, summed over operations)."""
    numbers = 10 ** cfg.digits - (10 ** (cfg.min_digits - 1) if cfg.min_digits > 1 else 0)
    per_op = {"+": numbers * numbers, "-": numbers * (numbers + 1) // 2, "*": numbers * 10}
    return sum(per_op[op] for op in cfg.operations)


def _operand(rng: random.Random, num_digits: int) -> int:
    if num_digits == 1:
        return rng.randrange(10)
    return rng.randrange(10 ** (num_digits - 1), 10 ** num_digits)


def _digits_lsb(value: int) -> list[int]:
    return [int(ch) for ch in reversed(str(value))]


def _addition_columns(a: int, b: int) -> list[str]:
    da, db, carry, cols = _digits_lsb(a), _digits_lsb(b), 0, []
    for i in range(max(len(da), len(db))):
        terms = [d[i] for d in (da, db) if i < len(d)] + ([carry] if carry else [])
        total = sum(terms)
        cols.append("+".join(map(str, terms)) + f"={total}")
        carry = total // 10
    return cols


def _subtraction_columns(a: int, b: int) -> list[str]:
    da, db, borrow, cols = _digits_lsb(a), _digits_lsb(b), 0, []
    for i in range(len(da)):
        sub = db[i] if i < len(db) else 0
        value = da[i] - sub - borrow
        text = f"{da[i]}" + (f"-{db[i]}" if i < len(db) else "") + ("-1" if borrow else "")
        borrow = int(value < 0)
        cols.append(text + ("+10" if borrow else "") + f"={value + 10 * borrow}")
    return cols


def _multiplication_columns(a: int, b: int) -> list[str]:
    carry, cols = 0, []
    for digit in _digits_lsb(a):
        value = digit * b + carry
        cols.append(f"{digit}*{b}" + (f"+{carry}" if carry else "") + f"={value}")
        carry = value // 10
    return cols


_COLUMNS = {"+": _addition_columns, "-": _subtraction_columns, "*": _multiplication_columns}
_RESULT = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def parse_prompt(prompt: str) -> tuple[int, str, int]:
    """(a, op, b) of an arithmetic prompt "a<op>b="."""
    body = prompt.removesuffix("=")
    for op in "+-*":
        left, sep, right = body.partition(op)
        if sep and left.isdigit() and right.isdigit():
            return int(left), op, int(right)
    raise ValueError(f"not an arithmetic prompt: {prompt!r}")


def worked_solution(problem: Problem) -> str:
    """The response the warm-up teaches for `problem` (column scratchpad, then the boxed result)."""
    a, op, b = parse_prompt(problem.prompt)
    return ", ".join(_COLUMNS[op](a, b)) + ", \\boxed{" + problem.answer + "}"


class ArithmeticTask(ScoredTask):
    """Endless seeded arithmetic problems with a fixed held-out pool."""

    def __init__(self, cfg: ArithmeticTaskConfig):
        self.cfg = cfg
        self.name = "arithmetic"
        self._eval = self._draw_distinct(random.Random(cfg.eval_seed), cfg.eval_size, exclude=set(), split="eval")
        self._eval_prompts = frozenset(p.prompt for p in self._eval)

    def _one(self, rng: random.Random) -> tuple[int, str, int]:
        op = rng.choice(self.cfg.operations)
        a = _operand(rng, rng.randint(self.cfg.min_digits, self.cfg.digits))
        b = _operand(rng, 1 if op == "*" else rng.randint(self.cfg.min_digits, self.cfg.digits))
        if op == "-" and a < b:
            a, b = b, a
        return a, op, b

    def _problem(self, a: int, op: str, b: int, uid: str) -> Problem:
        return Problem(prompt=f"{a}{op}{b}=", answer=str(_RESULT[op](a, b)), task=self.name, uid=uid)

    def _draw_distinct(self, rng: random.Random, n: int, exclude: set[str], split: str) -> list[Problem]:
        problems, seen = [], set(exclude)
        for _ in range(200 * n + 1000):  # bounded: the config check keeps the space >> n
            if len(problems) == n:
                break
            a, op, b = self._one(rng)
            prompt = f"{a}{op}{b}="
            if prompt not in seen:
                seen.add(prompt)
                problems.append(self._problem(a, op, b, f"{split}:{a}{op}{b}"))
        assert len(problems) == n, "problem space exhausted despite the config check"
        return problems

    def sample(self, rng: random.Random, n: int) -> list[Problem]:
        out = []
        for _ in range(100 * n + 100):  # rejection of held-out prompts; each draw passes w.p. > 3/4
            if len(out) == n:
                break
            a, op, b = self._one(rng)
            if f"{a}{op}{b}=" not in self._eval_prompts:
                out.append(self._problem(a, op, b, f"train:{a}{op}{b}"))
        assert len(out) == n, "could not draw training problems outside the eval pool"
        return out

    def judge(self, problem: Problem, response: str) -> Judgement:
        extraction = extract_answer(response)
        value = as_fraction(extraction.answer) if extraction.answer is not None else None
        correct = value is not None and value == int(problem.answer)
        return Judgement(correct, extraction.boxed, extraction.answer)
