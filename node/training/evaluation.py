"""Held-out evaluation: greedy accuracy, sampled pass@1 and unbiased pass@k.

pass@k uses the unbiased estimator 1 - C(n-c, k) / C(n, k) over n >= k samples per problem
with c correct (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import torch

from node.training.config import SamplingConfig
from node.training.rollout import PromptFormat, sample_rollouts


@dataclass(frozen=True)
class EvalResult:
    num_problems: int
    greedy_accuracy: float
    pass_at_1: float | None = None  # sampled, at the training temperature
    pass_at_k: float | None = None
    k: int = 0


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k for one problem from n samples with c correct."""
    if not 0 < k <= num_samples:
        raise ValueError(f"pass@k needs 0 < k <= samples per problem, got k={k}, n={num_samples}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - comb(num_samples - num_correct, k) / comb(num_samples, k)


def _correct(task, problems, texts, group: int) -> list[list[bool]]:
    flags = [task.is_correct(problems[i // group], text) for i, text in enumerate(texts)]
    return [flags[i * group:(i + 1) * group] for i in range(len(problems))]


@torch.no_grad()
def evaluate(model, tokenizer, task, problems, sampling: SamplingConfig, *, k: int = 0, num_samples: int = 0,
             batch_size: int = 64, prompt_format: PromptFormat = PromptFormat()) -> EvalResult:
    """Greedy accuracy on `problems`; with k > 0 also pass@1 and pass@k from `num_samples` samples each."""
    if not problems:
        raise ValueError("evaluation needs at least one held-out problem")
    greedy, sampled = [], []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [p.prompt for p in chunk]
        out = sample_rollouts(model, tokenizer, prompts, sampling, greedy=True, prompt_format=prompt_format)
        greedy += [flags[0] for flags in _correct(task, chunk, out.texts, 1)]
        if k > 0:
            n = max(num_samples, k)
            sub = max(1, batch_size // n)
            for s in range(0, len(chunk), sub):
                part = chunk[s:s + sub]
                out = sample_rollouts(model, tokenizer, [p.prompt for p in part], sampling, group_size=n,
                                      prompt_format=prompt_format)
                sampled += _correct(task, part, out.texts, n)
    result = EvalResult(len(problems), sum(greedy) / len(greedy))
    if k > 0:
        p1 = sum(pass_at_k(len(f), sum(f), 1) for f in sampled) / len(sampled)
        pk = sum(pass_at_k(len(f), sum(f), k) for f in sampled) / len(sampled)
        result = EvalResult(len(problems), result.greedy_accuracy, p1, pk, k)
    return result
