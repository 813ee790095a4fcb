"""GSM8K / MATH-style problems from a local JSONL file (one {"question", "answer"} per line).

Reference answers are normalised on load: a GSM8K answer keeps only what follows its last
"####" (thousands separators dropped: "#### 1,234" -> "1234"); an answer containing \\boxed{...}
keeps the last boxed content (MATH solutions); anything else is used as it stands.

The held-out split is deterministic and stable when lines are added: a problem is held out
when the SHA-256 of its question text falls in the first `eval_fraction` of the hash range
(or, with `eval_path`, the held-out set is that file and training skips any of its questions).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.rewards import Judgement, extract_answer, judge_math
from node.tasks.base import Problem, ScoredTask


class JsonlTaskConfig(BaseModel):
    """Question/answer pairs from JSONL files on local disk."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["jsonl"] = "jsonl"
    path: str = Field(..., min_length=1, description="JSONL file with one problem object per line.")
    eval_path: str | None = Field(None, description="Optional separate held-out JSONL file; overrides eval_fraction.")
    question_field: str = Field("question", min_length=1, description="Key of the problem text.")
    answer_field: str = Field("answer", min_length=1, description="Key of the reference answer or solution.")
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of `path` held out (by question hash).")
    prompt_template: str = Field("{question}\nPut your final answer within \\boxed{{}}.",
                                 description="Python format string with a {question} field.")
    name: str = Field("jsonl", min_length=1, description="Task name reported in metrics.")

    @field_validator("prompt_template")
    @classmethod
    def _has_question(cls, template: str) -> str:
        try:
            filled = template.format(question="\x00")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"task.prompt_template must only use the {{question}} field "
                             f"(write literal braces as {{{{ }}}}): {err!r}") from err
        if "\x00" not in filled:
            raise ValueError("task.prompt_template must contain {question}")
        return template


def reference_answer(raw: str) -> str:
    """The final answer inside a GSM8K answer ("... #### 42") or a MATH solution (last \\boxed{})."""
    if "####" in raw:
        return raw.rsplit("####", 1)[1].strip().replace(",", "")
    extraction = extract_answer(raw)
    if extraction.boxed and extraction.answer:
        return extraction.answer
    return raw.strip()


def _held_out(question: str, fraction: float) -> bool:
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def read_jsonl(path: str | Path, question_field: str, answer_field: str) -> list[tuple[str, str]]:
    """(question, reference answer) pairs; ValueError naming the file and line of any bad line."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"task file {file} does not exist; set task.path to a JSONL file")
    pairs = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            pairs.append(_parse_line(line, file, number, question_field, answer_field))
    if not pairs:
        raise ValueError(f"task file {file} holds no problems")
    return pairs


def _parse_line(line: str, file: Path, number: int, question_field: str, answer_field: str) -> tuple[str, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} line {number}: not valid JSON ({err.msg})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{file} line {number}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in (question_field, answer_field) if key not in record]
    if missing:
        raise ValueError(f"{file} line {number}: missing field(s) {missing}; set task.question_field / "
                         f"task.answer_field to the file's keys (it has {sorted(record)})")
    question, answer = record[question_field], record[answer_field]
    if not isinstance(question, str) or not question.strip() or not isinstance(answer, (str, int, float)):
        raise ValueError(f"{file} line {number}: question must be a non-empty string and answer a string or number")
    return question, reference_answer(str(answer))


class JsonlTask(ScoredTask):
    """Problems from JSONL with a deterministic held-out split, judged by node/rewards.py."""

    eval_fix = "raise task.eval_fraction (or pass a bigger task.eval_path)"

    def __init__(self, cfg: JsonlTaskConfig):
        self.cfg = cfg
        self.name = cfg.name
        pairs = read_jsonl(cfg.path, cfg.question_field, cfg.answer_field)
        if cfg.eval_path is not None:
            held = read_jsonl(cfg.eval_path, cfg.question_field, cfg.answer_field)
            held_questions = {q for q, _ in held}
            train = [(q, a) for q, a in pairs if q not in held_questions]
        else:
            held = [(q, a) for q, a in pairs if _held_out(q, cfg.eval_fraction)]
            held_questions = {q for q, _ in held}
            train = [(q, a) for q, a in pairs if q not in held_questions]
        if not train or not held:
            raise ValueError(f"{cfg.path}: split left {len(train)} training and {len(held)} held-out problems; "
                             f"adjust task.eval_fraction or add problems")
        self._train = [self._problem(q, a, f"train:{i}") for i, (q, a) in enumerate(train)]
        self._eval = [self._problem(q, a, f"eval:{i}") for i, (q, a) in enumerate(held)]

    def _problem(self, question: str, answer: str, uid: str) -> Problem:
        return Problem(prompt=self.cfg.prompt_template.format(question=question), answer=answer,
                       task=self.name, uid=uid)

    def sample(self, rng: random.Random, n: int) -> list[Problem]:
        return [self._train[rng.randrange(len(self._train))] for _ in range(n)]

    def judge(self, problem: Problem, response: str) -> Judgement:
        return judge_math(response, problem.answer)
