"""Task sources: formats, held-out disjointness, scoring, configs and the JSONL loader."""

import json
import random
import threading

import pytest

from node.tasks import (
    ArithmeticTaskConfig,
    JsonlTaskConfig,
    Problem,
    ReasoningGymTaskConfig,
    TaskConfig,
    TaskSource,
    build_task,
)
from node.tasks.arithmetic import ArithmeticTask, parse_prompt, worked_solution
from node.tasks.jsonl_source import reference_answer

pytestmark = pytest.mark.unit


# -- arithmetic ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_arithmetic():
    return ArithmeticTask(ArithmeticTaskConfig(operations=["+", "-", "*"], digits=3))


def test_worked_solutions_are_correct_boxed_and_short(mixed_arithmetic):
    problems = mixed_arithmetic.sample(random.Random(0), 3000)
    assert {parse_prompt(p.prompt)[1] for p in problems} == {"+", "-", "*"}
    for problem in problems:
        response = worked_solution(problem)
        a, op, b = parse_prompt(problem.prompt)
        assert int(problem.answer) == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert mixed_arithmetic.score(problem, response, "graded") == 1.0
        assert 10 <= len(response) <= 45, response


def test_worked_solution_examples():
    make = lambda prompt, answer: Problem(prompt, answer, "arithmetic", "x")  # noqa: E731
    assert worked_solution(make("47+38=", "85")) == "7+8=15, 4+3+1=8, \\boxed{85}"
    assert worked_solution(make("905-17=", "888")) == "5-7+10=8, 0-1-1+10=8, 9-1=8, \\boxed{888}"
    assert worked_solution(make("47*3=", "141")) == "7*3=21, 4*3+2=14, \\boxed{141}"


def test_arithmetic_scoring_needs_a_value(mixed_arithmetic):
    problem = Problem("47+38=", "85", "arithmetic", "x")
    assert mixed_arithmetic.score(problem, "\\boxed{47+38}", "graded") == -0.5
    assert mixed_arithmetic.score(problem, "7+8=15, 85", "graded") == 0.5
    assert mixed_arithmetic.score(problem, "\\boxed{86}", "binary") == 0.0
    assert mixed_arithmetic.score(problem, "", "graded") == -1.0
    assert not mixed_arithmetic.is_correct(problem, "\\boxed{84}")


def test_arithmetic_eval_is_fixed_and_disjoint_from_training():
    cfg = ArithmeticTaskConfig(digits=2, eval_size=300)
    first, second = ArithmeticTask(cfg), ArithmeticTask(cfg)
    held = first.eval_set(300)
    assert held == second.eval_set(300) and first.eval_set(10) == held[:10]
    assert len({p.prompt for p in held}) == 300
    train_prompts = {p.prompt for p in first.sample(random.Random(1), 20_000)}
    assert len(train_prompts) > 1000  # the check below is not vacuous
    assert train_prompts.isdisjoint({p.prompt for p in held})


def test_arithmetic_sampling_is_reproducible(mixed_arithmetic):
    assert mixed_arithmetic.sample(random.Random(5), 50) == mixed_arithmetic.sample(random.Random(5), 50)
    assert mixed_arithmetic.sample(random.Random(5), 50) != mixed_arithmetic.sample(random.Random(6), 50)


def test_arithmetic_config_errors():
    with pytest.raises(ValueError, match="min_digits"):
        ArithmeticTaskConfig(min_digits=3, digits=2)
    with pytest.raises(ValueError, match="eval_size"):
        ArithmeticTaskConfig(digits=1, eval_size=500)
    with pytest.raises(ValueError):
        ArithmeticTaskConfig(operations=["/"])
    with pytest.raises(ValueError, match="eval_size"):
        ArithmeticTask(ArithmeticTaskConfig(eval_size=20)).eval_set(21)


# -- reasoning-gym -------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["countdown", "basic_arithmetic", "gsm_symbolic"])
def test_reasoning_gym_scores_its_own_answers(dataset):
    task = build_task(ReasoningGymTaskConfig(dataset=dataset, eval_size=20, train_size=5000))
    assert task.name == f"reasoning_gym/{dataset}"
    problems = task.sample(random.Random(0), 5) + task.eval_set(5)
    for problem in problems:
        assert problem.prompt.endswith("\\boxed{}.")
        assert task.score(problem, f"Let me think.\n\\boxed{{{problem.answer}}}", "graded") == 1.0
        assert task.score(problem, f"answer: {problem.answer}", "graded") == 0.5
        assert task.score(problem, "\\boxed{no idea}", "binary") == 0.0
        assert task.score(problem, "", "graded") == -1.0


def test_reasoning_gym_eval_disjoint_and_fixed():
    cfg = ReasoningGymTaskConfig(dataset="basic_arithmetic", eval_size=100, train_size=2000,
                                 dataset_config={"min_terms": 2, "max_terms": 2, "max_digits": 1})
    task = build_task(cfg)
    held = {p.prompt for p in task.eval_set(100)}
    assert task.eval_set(100) == build_task(cfg).eval_set(100)
    train = task.sample(random.Random(0), 2000)
    assert held.isdisjoint(p.prompt for p in train)


def test_reasoning_gym_config_errors():
    with pytest.raises(ValueError, match="not a reasoning-gym dataset"):
        build_task(ReasoningGymTaskConfig(dataset="no_such_dataset"))
    with pytest.raises(ValueError, match="dataset_config"):
        build_task(ReasoningGymTaskConfig(dataset="countdown", dataset_config={"bogus": 1}))
    with pytest.raises(ValueError, match="seed or size"):
        build_task(ReasoningGymTaskConfig(dataset="countdown", dataset_config={"seed": 1}))


def test_reasoning_gym_hostile_answer_is_wrong():
    task = build_task(ReasoningGymTaskConfig(dataset="countdown", eval_size=5, train_size=100))
    problem = task.eval_set(1)[0]
    assert not task.is_correct(problem, "\\boxed{9**9**9**9}")


def test_reasoning_gym_scores_off_the_main_thread():
    task = build_task(ReasoningGymTaskConfig(dataset="countdown", eval_size=5, train_size=100))
    problem = task.eval_set(1)[0]
    results = []
    worker = threading.Thread(target=lambda: results.append(task.score(problem, f"\\boxed{{{problem.answer}}}",
                                                                        "binary")))
    worker.start()
    worker.join(timeout=60)
    assert results == [1.0]


# -- JSONL ---------------------------------------------------------------------------------------

def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _gsm_records(n):
    return [{"question": f"Tom has {i} apples and buys {i + 1000} more. How many?",
             "answer": f"He has {i} + {i + 1000} apples.\n#### {2 * i + 1000:,}"} for i in range(n)]


def test_reference_answer_formats():
    assert reference_answer("Some work <<2+2=4>>\n#### 1,234") == "1234"
    assert reference_answer(r"So the answer is $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert reference_answer(" 17 ") == "17"


def test_jsonl_split_is_deterministic_and_disjoint(tmp_path):
    path = _write_jsonl(tmp_path / "gsm.jsonl", _gsm_records(400))
    cfg = JsonlTaskConfig(path=str(path), eval_fraction=0.2)
    task = build_task(cfg)
    held = task.eval_set(40)
    assert held == build_task(cfg).eval_set(40)
    train = {p.prompt for p in task.sample(random.Random(0), 5000)}
    assert train.isdisjoint(p.prompt for p in held)
    assert 40 <= len(task.eval_set(40)) and len(train) > 250
    problem = held[0]
    assert problem.answer.isdigit() and int(problem.answer) >= 1000
    assert task.score(problem, f"so \\boxed{{{int(problem.answer):,}}}", "graded") == 1.0
    assert task.score(problem, "#### 3", "graded") == -1.0
    with pytest.raises(ValueError, match="eval_fraction"):
        task.eval_set(400)


def test_jsonl_separate_eval_file_and_custom_fields(tmp_path):
    records = [{"problem": f"What is {i} squared?", "solution": f"It is $\\boxed{{{i * i}}}$."} for i in range(30)]
    train = _write_jsonl(tmp_path / "train.jsonl", records)
    held = _write_jsonl(tmp_path / "eval.jsonl", records[:5])
    task = build_task(JsonlTaskConfig(path=str(train), eval_path=str(held), question_field="problem",
                                      answer_field="solution", prompt_template="Q: {question}\nA:"))
    assert [p.answer for p in task.eval_set(5)] == ["0", "1", "4", "9", "16"]
    assert task.eval_set(1)[0].prompt == "Q: What is 0 squared?\nA:"
    sampled = {p.prompt for p in task.sample(random.Random(0), 500)}
    assert len(sampled) == 25 and sampled.isdisjoint(p.prompt for p in task.eval_set(5))


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "line 3.*not valid JSON"),
    ('["a", "b"]', "line 3.*JSON object"),
    ('{"question": "q only"}', "line 3.*missing field"),
    ('{"question": "", "answer": "1"}', "line 3.*non-empty"),
])
def test_jsonl_malformed_line_names_the_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"question": "1+1?", "answer": "#### 2"})
    path.write_text(f"{good}\n{good}\n{bad_line}\n{good}\n")
    with pytest.raises(ValueError, match=message):
        build_task(JsonlTaskConfig(path=str(path)))


def test_jsonl_config_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_task(JsonlTaskConfig(path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match="question"):
        JsonlTaskConfig(path="x.jsonl", prompt_template="no placeholder")
    with pytest.raises(ValueError, match="question"):
        JsonlTaskConfig(path="x.jsonl", prompt_template="{question} {other}")


# -- the config union ----------------------------------------------------------------------------

def test_task_config_union(tmp_path):
    assert TaskConfig.model_validate({}).type == "arithmetic"
    assert TaskConfig.model_validate({"digits": 2}).root.digits == 2
    assert isinstance(TaskConfig.model_validate({"type": "reasoning_gym"}).root, ReasoningGymTaskConfig)
    with pytest.raises(ValueError, match="arithmetic.bogus"):
        TaskConfig.model_validate({"bogus": 1})
    with pytest.raises(ValueError, match="jsonl.path"):
        TaskConfig.model_validate({"type": "jsonl"})
    with pytest.raises(ValueError, match="does not match"):
        TaskConfig.model_validate({"type": "essay"})
    cfg = TaskConfig.model_validate({"type": "arithmetic", "digits": 2})
    assert TaskConfig.model_validate(cfg.model_dump()) == cfg
    assert isinstance(build_task(cfg), TaskSource)
