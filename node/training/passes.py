"""The parts of a training step between sampling and the update: the first pass, the plan, the totals.

The first pass runs the policy that sampled the rollouts over all of them, before any update,
and keeps what every later pass needs: the final hidden states reduced to ER/ERV/ERA (shaping
needs the whole batch before any advantage exists), the log-probs the PPO ratio divides by
(`loss.old_logprobs`), the reference policy's log-probs (KL) and how far the training forward's
log-probs are from the sampler's (`logprob_gap`, a precision diagnostic: 1e-6 in float32,
~1e-2 in bfloat16). With one update of the whole batch in one piece (`UpdatePlan.single`, the
default) it is that update's forward and keeps its graph; otherwise it runs without gradients,
micro-batch by micro-batch.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from node.training.config import TrainConfig
from node.training.loss import LossParts
from node.training.policy_forward import PolicyOutputs, policy_forward
from node.training.rollout import RolloutBatch
from node.training.seams import UpdateReport
from shaping import RankIndicators, compute_indicators


@dataclass(frozen=True)
class UpdatePlan:
    """How a step's rollouts become updates."""

    epochs: int
    mini_batches: int
    micro_batch_size: int | None
    num_rollouts: int

    @classmethod
    def of(cls, cfg: TrainConfig) -> UpdatePlan:
        return cls(cfg.loss.ppo_epochs, cfg.loss.mini_batches, cfg.memory.micro_batch_size,
                   cfg.algo.prompts_per_step * cfg.sampling.group_size)

    @property
    def single(self) -> bool:
        """One update of the whole batch in one forward: the first pass's graph is the loss's."""
        return (self.epochs == 1 and self.mini_batches == 1
                and (self.micro_batch_size is None or self.micro_batch_size >= self.num_rollouts))


@dataclass
class FirstPass:
    indicators: RankIndicators  # ER/ERV/ERA per rollout [B]
    old_logprobs: torch.Tensor  # [B, R] detached: the sampling policy's (loss.old_logprobs)
    ref_logprobs: torch.Tensor | None  # [B, R] the reference policy's (only with loss.kl_coef > 0)
    logprob_gap: float | None  # mean |training forward - sampler| log-prob over response tokens
    graph: PolicyOutputs | None  # the whole batch's differentiable forward (single plan only)
    indicator_seconds: float = 0.0  # of the pass's wall time, spent reducing hidden states to ER/ERV/ERA


def first_pass(model, ref_model, batch: RolloutBatch, cfg: TrainConfig, *, keep_graph: bool,
               stale: bool = False) -> FirstPass:
    """The sampling policy over all rollouts (see the module docstring). `stale`: the rollouts were sampled
    by an older policy than `model` (overlap); the ratio then divides by the sampler's log-probs."""
    num = batch.input_ids.shape[0]
    size = num if keep_graph else min(cfg.memory.micro_batch_size or num, num)
    temperature, chunk = cfg.sampling.temperature, cfg.memory.logit_chunk_tokens
    entropy = ("grad" if cfg.loss.entropy_coef > 0 else "value") if keep_graph else "none"
    indicators, olds, refs, graph = [], [], [], None
    gap_sum, gap_tokens, indicator_seconds = 0.0, 0, 0.0
    for rows in torch.split(torch.arange(num, device=batch.input_ids.device), size):
        sub = batch if rows.numel() == num else batch.select(rows)
        with torch.set_grad_enabled(keep_graph):
            out = policy_forward(model, sub, temperature=temperature, entropy=entropy, chunk_tokens=chunk)
        mask = sub.response_mask
        logprobs = out.logprobs.detach()
        gap_sum += float(((logprobs - sub.sample_logprobs).abs() * mask).sum())  # waits for the forward's kernels
        gap_tokens += int(mask.sum())
        started = time.perf_counter()
        indicators.append(indicators_on(out.hidden, mask, cfg))
        indicator_seconds += time.perf_counter() - started
        olds.append(logprobs if cfg.loss.old_logprobs == "recompute" and not stale else sub.sample_logprobs)
        if ref_model is not None:
            with torch.no_grad():
                refs.append(policy_forward(ref_model, sub, temperature=temperature, with_hidden=False,
                                           entropy="none", chunk_tokens=chunk).logprobs)
        if keep_graph:
            graph = PolicyOutputs(out.logprobs, out.entropy, None)
    merged = indicators[0] if len(indicators) == 1 else RankIndicators(
        *(torch.cat([getattr(i, name) for i in indicators]) for name in ("er", "erv", "era")))
    return FirstPass(merged, torch.cat(olds), torch.cat(refs) if refs else None,
                     gap_sum / gap_tokens if gap_tokens else None, graph, indicator_seconds)


def indicators_on(hidden: torch.Tensor, mask: torch.Tensor, cfg: TrainConfig) -> RankIndicators:
    """ER/ERV/ERA of a micro-batch's hidden states, computed where `model.shaping_device` says, returned on
    the CPU (where advantages are shaped). On an H200 the GPU route took as long as one host thread for a
    micro-batch alone, and less than the host route inside a step, where the states need not cross to the
    host and the host's threads compete with the CUDA work (docs/benchmarks.md, "The same on a GPU")."""
    where = hidden.device if cfg.model.shaping_device == "policy" else torch.device("cpu")
    found = compute_indicators(hidden.detach().to(where), mask.to(where), cfg.shaping)
    return RankIndicators(*(values.cpu() for values in (found.er, found.erv, found.era)))


@dataclass
class LossTotals:
    """A step's loss parts, summed over its micro-batches, averaged over its updates."""

    total: float = 0.0
    policy: float = 0.0
    kl: float | None = None
    entropy: float | None = None
    clip_fraction: float = 0.0

    def add(self, parts: LossParts) -> None:
        self.total += float(parts.total.detach())
        self.policy += parts.policy
        self.clip_fraction += parts.clip_fraction
        if parts.kl is not None:
            self.kl = (self.kl or 0.0) + parts.kl
        if parts.entropy is not None:
            self.entropy = (self.entropy or 0.0) + parts.entropy

    def finish(self, num_updates: int) -> LossTotals:
        n = max(num_updates, 1)
        return LossTotals(self.total / n, self.policy / n, None if self.kl is None else self.kl / n,
                          None if self.entropy is None else self.entropy / n, self.clip_fraction / n)


@dataclass
class PhaseClock:
    """Seconds spent per phase across a step's passes."""

    forward: float = 0.0
    backward: float = 0.0
    update: float = 0.0
    update_wait: float | None = None  # with overlap: of `update`, the time the trainer waited after sampling


def combine_reports(reports: list[UpdateReport]) -> UpdateReport:
    """One report for a step's updates: the last one's numbers, applied if any update applied."""
    last = reports[-1]
    return dataclasses.replace(last, applied=any(r.applied for r in reports))
