"""Answer extraction, answer equivalence and the reward modes of node/rewards.py."""

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.rewards import (
    GRADED,
    Judgement,
    RewardConfig,
    answers_match,
    as_fraction,
    extract_answer,
    judge_math,
    normalise,
    reward_for,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, answer, boxed", [
    (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}", True),
    (r"nested \boxed{\frac{\sqrt{2}}{2}} here", r"\frac{\sqrt{2}}{2}", True),
    (r"first \boxed{1} then \boxed{\frac{3}{4}}", r"\frac{3}{4}", True),
    (r"complete \boxed{7} then a cut-off \boxed{3", "7", True),
    (r"only a cut-off \boxed{3", "3", False),
    (r"\fbox{12}", "12", True),
    (r"\boxed 7", "7", True),
    ("answer: -3.5", "-3.5", False),
    ("work...\nFinal Answer: 42\nthanks", "42", False),
    ("Answer = 17", "17", False),
    ("blah\n#### 1,000", "1,000", False),
    ("The total is 1,234,567.", "1,234,567", False),
    ("it is -.5", "-.5", False),
    ("ratio 3/4", "3/4", False),
    ("7+8=15, 4+3+1=8, \\boxed{85}", "85", True),
    ("7+8=15, 4+3+1=8, 85", "85", False),
])
def test_extract_answer(text, answer, boxed):
    assert extract_answer(text) == type(extract_answer(""))(answer, boxed)


@pytest.mark.parametrize("text", ["", "garbage without digits", "}}}{{{", "\\boxed{", "\x00\x01\x02"])
def test_extract_answer_finds_nothing(text):
    result = extract_answer(text)
    assert result.answer is None and not result.boxed


def test_megabyte_response_is_scored_low_without_error():
    huge = "9" * 1_000_000
    judgement = judge_math(huge, "42")
    assert not judgement.correct
    assert reward_for(judgement, "graded") == -1.0
    assert judge_math("x" * 1_000_000 + r" \boxed{42}", "42").correct  # the tail is what is examined


@pytest.mark.parametrize("hostile", [
    r"\boxed{9^{9^{9}}}", r"\boxed{2**2**2**2**2**2}", r"\boxed{100000!}", r"\boxed{10^{99999999}}",
    "\\boxed{" + "(" * 300 + "}", "\\boxed{" + "{" * 2000 + "}" * 2000 + "}", "{" * 100_000,
])
def test_hostile_answers_are_wrong_not_errors(hostile):
    judgement = judge_math(hostile, "5")
    assert not judgement.correct


@pytest.mark.parametrize("pred, gold", [
    ("42", "42"), ("42.0", "42"), ("1,234", "1234"), ("$42$", "42"), (r"\text{42}", "42"),
    (r"\frac{1}{2}", "0.5"), (r"\dfrac{3}{4}", "0.75"), (r"-\frac{1}{2}", "-0.5"), (r"\frac12", "1/2"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), ("1+x", "x+1"), (r"\sqrt{4}", "2"), ("42.", "42"),
])
def test_answers_match(pred, gold):
    assert answers_match(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("41", "42"), ("47+38", "85"), (r"2\times 3", "6"), ("0.333", "1/3"), ("", "0"), (None, "1"),
    ("x", "42"), (r"\frac{1}{0}", "1"),
])
def test_answers_do_not_match(pred, gold):
    assert not answers_match(pred, gold)


def test_normalise_and_fraction():
    assert normalise(r" $\text{1,234}$. ") == "1234"
    assert as_fraction(r"\frac{6}{8}") == as_fraction("0.75")
    assert as_fraction("abc") is None


@pytest.mark.parametrize("correct, boxed", [(True, True), (True, False), (False, True), (False, False)])
def test_reward_modes(correct, boxed):
    judgement = Judgement(correct, boxed)
    assert reward_for(judgement, "graded") == GRADED[(correct, boxed)]
    assert reward_for(judgement, RewardConfig(mode="binary")) == (1.0 if correct else 0.0)


def test_graded_table_is_the_spec():
    assert GRADED == {(True, True): 1.0, (True, False): 0.5, (False, True): -0.5, (False, False): -1.0}


def test_reward_config_rejects_unknown_modes_and_keys():
    with pytest.raises(ValueError):
        RewardConfig(mode="partial")
    with pytest.raises(ValueError):
        RewardConfig(mode="graded", scale=2)
    with pytest.raises(ValueError, match="unknown reward mode"):
        reward_for(Judgement(True, True), "partial")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["42", "-3.5", r"\frac{1}{2}", "x+1"]))
def test_any_text_scores_within_the_table(text, gold):
    judgement = judge_math(text, gold)
    assert reward_for(judgement, "graded") in GRADED.values()
    assert reward_for(judgement, "binary") in (0.0, 1.0)


@settings(max_examples=100, deadline=None)
@given(st.integers(-10**12, 10**12), st.text(alphabet="abc +=,\n", max_size=40))
def test_boxed_integer_after_any_work_is_correct(value, work):
    judgement = judge_math(f"{work} \\boxed{{{value}}}", str(value))
    assert judgement.correct and judgement.boxed


def test_symbolic_judging_works_off_the_main_thread():
    # math-verify's own timeouts use signal.alarm, which raises outside the main thread
    results = {}

    def work():
        results["symbolic"] = judge_math(r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}").correct
        results["wrong"] = judge_math(r"\boxed{\sqrt{3}}", r"\frac{1}{\sqrt{2}}").correct

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=60)
    assert results == {"symbolic": True, "wrong": False}
