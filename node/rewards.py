"""Verifiable rewards for math-style answers: extraction, equivalence, reward modes.

Extraction (`extract_answer`) looks at the tail of a response only (MAX_EXAMINED_CHARS) and
takes, in order of preference: the last complete `\\boxed{...}` (nested braces allowed), the
last "answer: ..." / "#### ..." line, the last number in the text.

Equivalence (`answers_match`) tries a fast path first (normalised string equality, then exact
rational comparison of plain numbers, decimals and \\frac{a}{b}) and falls back to
`math-verify` (parse + verify) for everything symbolic. A numeric gold answer is never matched
by an expression ("47+38" does not pass for 85: that would reward restating the question).
math-verify can take seconds or hang on hostile strings, so candidates longer than
MAX_ANSWER_CHARS, nested deeper than MAX_NESTING, power towers and factorials are rejected
before it runs, its own alarm-based timeouts (VERIFY_TIMEOUT_S) are used in the main thread
(signal.alarm is main-thread only; other threads rely on the pre-checks), and any exception it
raises counts as "not equal". No response, however
empty, truncated or enormous, makes scoring raise.

Reward modes (verl-method.md section 5):
    graded: correct+boxed 1.0, correct-unboxed 0.5, wrong-boxed -0.5, wrong-unboxed -1.0
    binary: correct 1.0, wrong 0.0
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RewardMode = Literal["graded", "binary"]

MAX_EXAMINED_CHARS = 4096  # only the response's tail can hold its final answer
MAX_ANSWER_CHARS = 256  # longer candidate answers are not handed to math-verify
MAX_NESTING = 8  # deeper bracket nesting makes math-verify's parser crawl
VERIFY_TIMEOUT_S = 1  # math-verify's alarm timeouts are whole seconds

GRADED = {(True, True): 1.0, (True, False): 0.5, (False, True): -0.5, (False, False): -1.0}


class RewardConfig(BaseModel):
    """How a judged response becomes a scalar task reward."""

    model_config = ConfigDict(extra="forbid")

    mode: RewardMode = Field(
        "graded", description="graded: +1 / +0.5 / -0.5 / -1 for correct-boxed / correct / wrong-boxed / "
                              "wrong; binary: 1 if correct else 0.")


@dataclass(frozen=True)
class Extraction:
    answer: str | None  # None: nothing answer-like found
    boxed: bool  # the answer came from a complete \boxed{...}


@dataclass(frozen=True)
class Judgement:
    correct: bool
    boxed: bool
    extracted: str | None = None


def reward_for(judgement: Judgement, mode: RewardMode | RewardConfig) -> float:
    """The reward of a judged response under `mode` (a mode name or a RewardConfig)."""
    mode_name = mode.mode if isinstance(mode, RewardConfig) else mode
    if mode_name == "graded":
        return GRADED[(judgement.correct, judgement.boxed)]
    if mode_name == "binary":
        return 1.0 if judgement.correct else 0.0
    raise ValueError(f"unknown reward mode {mode_name!r}; use 'graded' or 'binary'")


# -- extraction ---------------------------------------------------------------------------------

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed +([^\s${}]+)")
_ANSWER_LINE = re.compile(r"(?im)^[ \t*]*(?:final[ \t]+)?answer[ \t*]*[:=][ \t]*(.+?)[ \t]*$"
                          r"|^[ \t]*####[ \t]*(.+?)[ \t]*$")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at text[start] ('{'), or None if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    return None


def _last_boxed(text: str) -> str | None:
    for match in reversed(list(_BOX_OPEN.finditer(text))):
        content = _braced(text, match.end() - 1)
        if content is not None:
            return content.strip()
    bare = list(_BOX_BARE.finditer(text))
    return bare[-1].group(1) if bare else None


def extract_answer(text: str) -> Extraction:
    """The final answer of a response (see the module docstring for the order of preference)."""
    if not isinstance(text, str) or not text:
        return Extraction(None, False)
    tail = text[-MAX_EXAMINED_CHARS:]
    boxed = _last_boxed(tail)
    if boxed is not None:
        return Extraction(boxed, True)
    lines = list(_ANSWER_LINE.finditer(tail))
    if lines:
        last = lines[-1]
        return Extraction((last.group(1) or last.group(2)).strip(), False)
    numbers = _NUMBER.findall(tail)
    return Extraction(numbers[-1] if numbers else None, False)


# -- equivalence --------------------------------------------------------------------------------

_WRAPPERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("\\text{", "}"), ("\\mathrm{", "}"))
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC = re.compile(r"^(-?)\\d?frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?)\\d?frac(\d)(\d)$")
_PLAIN = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?$")
_BINARY_OP = re.compile(r"[\w})\]]\s*(?:[-+*/^×÷]|\\times|\\cdot|\\div)\s*[\w\\({\[]")
_EXPLOSIVE = re.compile(r"(\^|\*\*).*(\^|\*\*)|!|\^\s*\{?\s*\d{4,}")


def normalise(answer: str) -> str:
    """Strip delimiters, spacing macros, trailing punctuation and thousands separators."""
    text = answer.strip().rstrip(".").strip()
    changed = True
    while changed:  # peel nested wrappers such as $\text{42}$
        changed = False
        for left, right in _WRAPPERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text, changed = text[len(left):len(text) - len(right)].strip(), True
    for noise in ("\\!", "\\,", "\\;", "\\left", "\\right", " "):
        text = text.replace(noise, "")
    text = _THOUSANDS.sub("", text).rstrip(".")
    return text


def as_fraction(answer: str) -> Fraction | None:
    """Exact value of a plain number, decimal, a/b or \\frac{a}{b}; None for anything else."""
    text = normalise(answer)
    frac = _FRAC.match(text)
    try:
        if frac:
            sign, num, den = (frac.group(1), frac.group(2), frac.group(3)) if frac.group(2) else frac.group(4, 5, 6)
            value = Fraction(int(num), int(den))
            return -value if sign else value
        if _PLAIN.match(text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")}]":
            depth = max(depth - 1, 0)
    return deepest


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when `predicted` is mathematically the same answer as `gold`. Never raises."""
    if predicted is None or not isinstance(predicted, str):
        return False
    pred, ref = normalise(predicted), normalise(gold)
    if not pred:
        return False
    if pred == ref:
        return True
    pred_value, ref_value = as_fraction(pred), as_fraction(ref)
    if pred_value is not None and ref_value is not None:
        return pred_value == ref_value
    if ref_value is not None and _BINARY_OP.search(pred):
        # a numeric gold wants a value: "\\boxed{47+38}" must not pass for 85 by restating the question
        return False
    if len(pred) > MAX_ANSWER_CHARS or _EXPLOSIVE.search(pred) or _nesting_depth(pred) > MAX_NESTING:
        return False
    return _math_verify(ref, pred)


def _mv_parse(text: str, timeout: int | None) -> list:
    from math_verify import parse

    return parse(f"${text}$", parsing_timeout=timeout) or parse(text, parsing_timeout=timeout)


def _math_verify(gold: str, predicted: str) -> bool:
    # math-verify's timeouts use signal.alarm, which only the main thread may set
    timeout = VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        from math_verify import verify

        gold_parsed, pred_parsed = _mv_parse(gold, timeout), _mv_parse(predicted, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a hostile answer must score as wrong, never crash a step
        return False


def judge_math(response: str, gold: str) -> Judgement:
    """Extract the final answer of `response` and compare it with `gold`."""
    extraction = extract_answer(response)
    correct = answers_match(extraction.answer, gold)
    return Judgement(correct, extraction.boxed, extraction.answer)
