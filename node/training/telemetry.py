"""What one training step measured, as a typed record, and how it is printed.

`StepMetrics` is the trainer's own part of a step's metrics.jsonl row; the update rule adds its
part (`UpdateReport.metrics_row`, with the swarm's gossip counters on a peer) and the peer its
publishing counters. A number that was not measured is None (null in JSON), never 0: KL without
a reference policy, ERV/ERA for responses too short to have them, the gate without shaping.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import torch

from plumbing.formatting import fmt


@dataclass(frozen=True)
class Distribution:
    """How many values of a batch were defined, and their 0 %, 10 %, ..., 100 % quantiles."""

    count: int
    values: tuple[float, ...]  # 11 non-decreasing quantiles

    @classmethod
    def of(cls, values: torch.Tensor) -> Distribution | None:
        """The deciles of the finite entries of `values` [B]; None when none is finite."""
        finite = values.detach().to(torch.float64)
        finite = finite[torch.isfinite(finite)]
        if not finite.numel():
            return None
        quantiles = torch.quantile(finite, torch.linspace(0, 1, 11, dtype=torch.float64))
        return cls(int(finite.numel()), tuple(float(q) for q in quantiles))


def nanmean(values: torch.Tensor) -> float | None:
    """Mean of the finite entries, None when there are none."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else None


@dataclass(frozen=True)
class StepMetrics:
    step: int
    reward: float  # mean task reward of the batch's rollouts
    accuracy: float  # share of rollouts judged correct
    er: float | None  # mean effective rank (ERV, ERA: over the responses long enough to have them)
    erv: float | None
    era: float | None
    er_deciles: Distribution | None
    erv_deciles: Distribution | None
    era_deciles: Distribution | None
    gate: float | None  # mean ERA gate (exploration share); None without shaping
    aux: float | None  # mean auxiliary signal r_aux
    bonus: float  # mean shaping bonus added to the advantages
    lambda_t: float | None  # auxiliary-signal scale used
    baselines: str  # which baselines shaped the step: "local" or "global"
    baselines_global_age_s: float | None  # age of the coordinator's newest record then; None: none read yet
    loss: float
    policy_loss: float
    kl: float | None  # KL to the reference policy; None when there is none (loss.kl_coef = 0)
    entropy: float | None  # mean token entropy of the policy; None when not computed
    clip_fraction: float
    response_tokens: int
    truncated: float  # share of responses that hit max_new_tokens
    time_generate: float  # seconds, per phase of the step
    time_reward: float
    time_forward: float
    time_shaping: float
    time_backward: float
    time_update: float
    time_step: float
    time_update_wait: float | None  # overlap: seconds waited for the update after sampling the next batch
    staleness: int  # policy versions between the weights that sampled the batch and those it trained
    stale_batches_dropped: int  # since start: batches sampled during an update that replaced the weights
    tokens_per_s: float
    num_updates: int  # optimizer updates this step made (loss.ppo_epochs x loss.mini_batches)
    logprob_gap: float | None  # mean |training forward - sampler| log-prob of the sampled tokens
    loss_scale: float | None  # dynamic loss scale of a float16 model; None without loss scaling
    peak_memory_bytes: int | None  # CUDA: peak allocated in the step; CPU: the process's peak resident set

    def metrics_row(self) -> dict[str, Any]:
        row = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for name in ("er_deciles", "erv_deciles", "era_deciles"):
            if row[name] is not None:
                row[name] = dataclasses.asdict(row[name])
        return row


def print_progress(m: StepMetrics, total_steps: int) -> None:
    """One status line per step; rewritten in place on a terminal."""
    line = (f"step {m.step}/{total_steps} | reward {m.reward:+.3f} acc {m.accuracy:.2f} | "
            f"ER {fmt(m.er, '.2f')} ERV {fmt(m.erv, '+.3f')} "
            f"ERA {fmt(m.era, '+.3f')} gate {fmt(m.gate, '.2f')} bonus {m.bonus:.3f} | "
            f"kl {fmt(m.kl, '.4f')} ent {fmt(m.entropy, '.2f')} | {m.tokens_per_s:.0f} tok/s | "
            f"gen {m.time_generate:.2f}s fwd {m.time_forward:.2f}s shape {m.time_shaping * 1000:.0f}ms "
            f"bwd {m.time_backward:.2f}s")
    end = "\r" if sys.stdout.isatty() else "\n"
    print(line, end=end, flush=True)
