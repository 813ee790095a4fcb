"""The single-peer trainer: one VERL-shaped GRPO step at a time, plus its driver loop.

A step: sample prompts -> G rollouts each -> verifiable rewards -> one policy forward that
yields log-probs *and* the final post-norm hidden states -> ER/ERV/ERA -> auxiliary signal
against the current baselines -> shaped advantages -> PPO-clip loss -> update -> fold the
batch statistics into the baselines (after the signals, so a step never sees its own batch).

With the defaults one forward of the whole batch serves shaping and the loss, and one update
follows. With micro-batches, mini-batches or several PPO epochs (node/training/passes.py), a
first pass without gradients gives the hidden states and the sampling policy's log-probs, then
each mini-batch is forwarded in micro-batches, their float32 gradients accumulate, and it is
applied as one update; the ratio to the sampling policy and its clip then act.

With `sampling.max_staleness = 1` the next step's rollouts are sampled while this step's last
update is applied (node/training/overlap.py); the step that trains on them divides by the
sampler's log-probs.

The swarm peer reuses this class unchanged and swaps the two seams in `seams.py`.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from node.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from node.training.config import TrainConfig
from node.training.evaluation import EvalResult, evaluate
from node.training.loss import LossParts, policy_loss
from node.training.memory import PeakMemory
from node.training.overlap import Prefetched, SamplerSnapshot, UpdateOverlap, staleness_after
from node.training.passes import FirstPass, LossTotals, PhaseClock, UpdatePlan, combine_reports, first_pass
from node.training.policy_forward import policy_forward
from node.training.rollout import PromptFormat, RolloutBatch, sample_rollouts
from node.training.seams import BaselineSource, MetricsPart, UpdateReport, UpdateRule
from node.training.telemetry import Distribution, StepMetrics, nanmean, print_progress
from plumbing.metrics import MetricsSink
from shaping import IndicatorStats, aux_signal, base_advantages, shaping_bonus, token_advantages

log = logging.getLogger(__name__)
_EVAL_SEED_OFFSET = 7_919  # evaluation samples on seed + this, apart from the training stream


@dataclass
class StepReport:
    step: int
    metrics: StepMetrics  # what the trainer measured
    update: UpdateReport  # what the update rule did (and, on a swarm peer, its gossip counters)
    stats: IndicatorStats  # this batch's sufficient statistics: the peer's meta-signal
    parts: list[MetricsPart] = field(default_factory=list)  # columns the trainer's owner adds to the row

    def metrics_row(self) -> dict[str, Any]:
        """The step's metrics.jsonl row (without its "kind")."""
        row = self.metrics.metrics_row() | self.update.metrics_row()
        for part in self.parts:
            row |= part.metrics_row()
        return row


class Trainer:
    """Owns the policy, its optimizer seam, the baselines seam, the task and the metrics sink."""

    def __init__(self, cfg: TrainConfig, model, tokenizer, task, *, baselines: BaselineSource,
                 update: UpdateRule, metrics: MetricsSink, prompt_format: PromptFormat = PromptFormat()):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.prompt_format = prompt_format
        self.plan = UpdatePlan.of(cfg)
        self.peak_memory = PeakMemory(next(model.parameters()).device)
        self.baselines = baselines
        self.update = update
        self.metrics = metrics
        self.step = 0
        self.rng = random.Random(cfg.seed)
        self.eval_problems = task.eval_set(cfg.eval.num_problems)
        self.ref_model = None
        if cfg.loss.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        # overlap (sampling.max_staleness = 1): the next batch is sampled by a snapshot while the update runs
        self.overlap = UpdateOverlap() if cfg.sampling.max_staleness else None
        self.sampler = SamplerSnapshot(model) if cfg.sampling.max_staleness else None
        self.prefetched: Prefetched | None = None
        self.policy_version = 0  # updates applied to this trainer's weights (a replacement counts as one)
        self.stale_batches_dropped = 0  # prefetched batches dropped because the weights were replaced

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> StepReport:
        cfg, group = self.cfg, self.cfg.sampling.group_size
        timer = time.perf_counter
        self.peak_memory.reset()
        t0 = timer()
        ready, self.prefetched = self.prefetched, None
        if ready is not None and self.policy_version - ready.version <= cfg.sampling.max_staleness:
            problems, batch, time_generate = ready.problems, ready.batch, ready.seconds
            staleness = self.policy_version - ready.version
        else:  # sampled now, by the current weights
            problems, batch = self._sample(self.model)
            time_generate, staleness = timer() - t0, 0
        t_generate = timer()
        owners = [problems[i // group] for i in range(len(batch.texts))]
        rewards = torch.tensor([self.task.score(p, t, cfg.reward) for p, t in zip(owners, batch.texts)],
                               dtype=torch.float64)  # [B]
        correct = [self.task.is_correct(p, t) for p, t in zip(owners, batch.texts)]
        t_reward = timer()

        # the current policy (the one that sampled, unless the batch was sampled during the last update):
        # hidden states for shaping, old (the sampler's when stale) and reference log-probs
        self.model.train()
        first = first_pass(self.model, self.ref_model, batch, cfg, keep_graph=self.plan.single, stale=staleness > 0)
        t_forward = timer()

        # shaping: the first pass's ER/ERV/ERA (computed there, on `model.shaping_device`) against the
        # current baselines, on the CPU in float64 whatever the policy's device (per-rollout statistics)
        response_mask = batch.response_mask.cpu()
        indicators = first.indicators
        choice = self.baselines.current()
        baselines = choice.baselines
        a0 = base_advantages(rewards.view(-1, group), cfg.algo.estimator).reshape(-1)  # [B]
        aux = aux_signal(indicators, baselines, cfg.shaping) if cfg.shaping.enabled else None
        bonus = shaping_bonus(a0, aux.r_aux, cfg.shaping.kappa) if aux is not None else torch.zeros_like(a0)
        advantages = token_advantages(a0, bonus, response_mask,
                                      last_token=cfg.shaping.compat.last_token_bonus).to(batch.input_ids.device)
        t_shaping = timer()

        clock = PhaseClock()
        if self.plan.single:
            parts, reports = self._one_update(batch, first, advantages, clock)
        else:
            parts, reports = self._update_passes(batch, first, advantages, clock)
        update = combine_reports(reports)
        t_update = timer()

        stats = IndicatorStats.from_batch(indicators, rewards, aux.gate if aux is not None else None)
        self.baselines.observe(stats)
        self.step += 1
        metrics = StepMetrics(
            step=self.step, reward=float(rewards.mean()), accuracy=sum(correct) / len(correct),
            er=nanmean(indicators.er), erv=nanmean(indicators.erv), era=nanmean(indicators.era),
            er_deciles=Distribution.of(indicators.er), erv_deciles=Distribution.of(indicators.erv),
            era_deciles=Distribution.of(indicators.era),
            gate=float(aux.gate.mean()) if aux is not None else None,
            aux=float(aux.r_aux.mean()) if aux is not None else None, bonus=float(bonus.mean()),
            lambda_t=aux.lam if aux is not None else None,
            baselines=choice.source, baselines_global_age_s=choice.global_age_s,
            loss=parts.total, policy_loss=parts.policy, kl=parts.kl, entropy=parts.entropy,
            clip_fraction=parts.clip_fraction, response_tokens=batch.num_tokens,
            truncated=float(batch.truncated.float().mean()),
            time_generate=time_generate, time_reward=t_reward - t_generate,
            time_forward=t_forward - t_reward - first.indicator_seconds + clock.forward,
            time_shaping=t_shaping - t_forward + first.indicator_seconds,
            time_backward=clock.backward, time_update=clock.update, time_step=t_update - t0,
            time_update_wait=clock.update_wait, staleness=staleness,
            stale_batches_dropped=self.stale_batches_dropped,
            tokens_per_s=batch.num_tokens / max(t_update - t0, 1e-9),
            num_updates=len(reports), logprob_gap=first.logprob_gap,
            loss_scale=self.update.master.loss_scale if self.update.master.loss_scale != 1.0 else None,
            peak_memory_bytes=self.peak_memory.peak())
        return StepReport(self.step, metrics, update, stats)

    def _backward(self, parts: LossParts, clock: PhaseClock) -> None:
        started = time.perf_counter()
        self.update.master.scale(parts.total).backward()
        self.update.master.accumulate_grads()  # float32, whatever the model computes in
        clock.backward += time.perf_counter() - started

    def _sample(self, policy) -> tuple[list, RolloutBatch]:
        """Draw the next step's prompts and sample their rollouts with `policy`."""
        problems = self.task.sample(self.rng, self.cfg.algo.prompts_per_step)
        batch = sample_rollouts(policy, self.tokenizer, [p.prompt for p in problems], self.cfg.sampling,
                                prompt_format=self.prompt_format)
        return problems, batch

    def _prefetch(self, sampler, version: int) -> None:
        """Sample the next step's rollouts with the snapshot `sampler` of policy `version`."""
        started, rng_state = time.perf_counter(), self.rng.getstate()
        problems, batch = self._sample(sampler)
        self.prefetched = Prefetched(problems, batch, time.perf_counter() - started, rng_state, version)

    def _apply(self, num_samples: int, clock: PhaseClock, *, last: bool = False) -> UpdateReport:
        """One update (a swarm peer averages with the others here). The step's `last` one, with overlap
        on and a step still to come, runs in a worker thread while the next step's rollouts are sampled."""
        if last and self.overlap is not None and self.step + 2 <= self.cfg.steps:
            sampler, version = self.sampler.refresh(self.model), self.policy_version
            report, times = self.overlap.run(lambda: self.update.apply(num_samples),
                                             lambda: self._prefetch(sampler, version))
            clock.update += times.update
            clock.update_wait = (clock.update_wait or 0.0) + times.wait
        else:
            started = time.perf_counter()
            report = self.update.apply(num_samples)
            clock.update += time.perf_counter() - started
        behind = staleness_after(report)
        self.policy_version += 1 if behind is None else behind
        if behind is None and self.prefetched is not None:  # sampled by weights this peer no longer holds
            log.info("dropped the batch sampled during step %d's update: the weights were replaced", self.step + 1)
            self.prefetched = None
            self.stale_batches_dropped += 1
        return report

    def _one_update(self, batch: RolloutBatch, first: FirstPass, advantages: torch.Tensor, clock: PhaseClock
                    ) -> tuple[LossTotals, list[UpdateReport]]:
        """One update from the first pass's own graph: the whole batch in one forward."""
        out = first.graph
        parts = policy_loss(out.logprobs, first.old_logprobs, advantages, batch.response_mask, self.cfg.loss,
                            ref_logprobs=first.ref_logprobs, entropy=out.entropy)
        self._backward(parts, clock)
        totals = LossTotals()
        totals.add(parts)
        return totals.finish(1), [self._apply(len(batch.texts), clock, last=True)]

    def _update_passes(self, batch: RolloutBatch, first: FirstPass, advantages: torch.Tensor, clock: PhaseClock
                       ) -> tuple[LossTotals, list[UpdateReport]]:
        """`loss.ppo_epochs` passes over the rollouts, each in `loss.mini_batches` shuffled updates, each
        mini-batch forwarded in micro-batches whose gradients add up to the mini-batch's."""
        cfg = self.cfg
        num = len(batch.texts)
        micro = cfg.memory.micro_batch_size or num
        entropy = "grad" if cfg.loss.entropy_coef > 0 else "value"
        # seeded per step, not from the global stream: a resumed run shuffles as an uninterrupted one
        shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        device = batch.input_ids.device
        totals, reports = LossTotals(), []
        for epoch in range(cfg.loss.ppo_epochs):
            order = torch.randperm(num, generator=shuffle) if cfg.loss.mini_batches > 1 else torch.arange(num)
            minis = [mini for mini in torch.tensor_split(order, cfg.loss.mini_batches) if mini.numel()]
            for index, mini in enumerate(minis):
                num_tokens = int(batch.response_mask[mini.to(device)].sum())
                for rows in torch.split(mini.to(device), micro):
                    started = time.perf_counter()
                    sub = batch.select(rows)
                    out = policy_forward(self.model, sub, temperature=cfg.sampling.temperature, with_hidden=False,
                                         entropy=entropy, chunk_tokens=cfg.memory.logit_chunk_tokens)
                    ref = first.ref_logprobs[rows] if first.ref_logprobs is not None else None
                    parts = policy_loss(out.logprobs, first.old_logprobs[rows], advantages[rows], sub.response_mask,
                                        cfg.loss, ref_logprobs=ref, entropy=out.entropy, num_tokens=num_tokens)
                    clock.forward += time.perf_counter() - started
                    self._backward(parts, clock)
                    totals.add(parts)
                last = epoch == cfg.loss.ppo_epochs - 1 and index == len(minis) - 1
                reports.append(self._apply(len(mini), clock, last=last))
        return totals.finish(len(reports)), reports

    # -- evaluation and checkpoints --------------------------------------------------------
    def evaluate(self) -> EvalResult:
        """Held-out evaluation that leaves the training RNG stream untouched.

        Sampled pass@k draws from torch's global RNG. Without the fork, a run stopped after its
        final evaluation (which comes before the last checkpoint) and resumed would continue on a
        different stream than an uninterrupted run; the fixed seed also gives every evaluation
        the same random numbers, so estimates at different steps or arms are paired."""
        ev = self.cfg.eval
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.cfg.seed + _EVAL_SEED_OFFSET)
            return evaluate(self.model, self.tokenizer, self.task, self.eval_problems, self.cfg.sampling,
                            k=ev.pass_k, num_samples=ev.num_samples, prompt_format=self.prompt_format)

    def state_dict(self) -> dict[str, Any]:
        # a batch sampled ahead is not saved: a resumed run draws its prompts again
        rng_state = self.prefetched.rng_state if self.prefetched is not None else self.rng.getstate()
        version, internal, gauss = rng_state
        return {"baselines": self.baselines.state_dict(), "python_rng": [version, list(internal), gauss]}

    def save(self) -> None:
        # the float32 masters (the model's weights are their rounding), under the model's names
        save_checkpoint(f"{self.cfg.run_dir}/checkpoints", self.step, self.update.master, self.update.optimizer,
                        self.state_dict(), keep=self.cfg.checkpoint.keep)

    def resume(self) -> bool:
        """Restore the newest valid checkpoint of run_dir, if any; True when one was loaded."""
        path = latest_checkpoint(f"{self.cfg.run_dir}/checkpoints")
        if path is None:
            return False
        state = load_checkpoint(path, self.update.master, self.update.optimizer)
        self.step = int(state["step"])
        self.baselines.load_state_dict(state["baselines"])
        version, internal, gauss = state["python_rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        return True

    # -- the driver loop -------------------------------------------------------------------
    def run(self, on_step: Callable[[StepReport], None] | None = None,
            before_first_step: Callable[[], None] | None = None,
            after_last_step: Callable[[], None] | None = None) -> dict[str, Any]:
        """Train until `steps` (or `max_minutes`), evaluating and checkpointing on schedule.

        `before_first_step` runs after the start evaluation (a swarm peer downloads state there);
        `on_step` sees every step's report (a swarm peer publishes its meta-signal there);
        `after_last_step` runs before the final evaluation (a swarm peer settles its weights there)."""
        cfg = self.cfg
        resumed = cfg.checkpoint.resume and self.resume()
        if resumed:
            print(f"resumed from the checkpoint of step {self.step} in {cfg.run_dir}/checkpoints", flush=True)
        started = time.monotonic()
        first_eval = None
        if not resumed:
            first_eval = self.evaluate()
            self._log_eval(first_eval)
        if before_first_step is not None:
            before_first_step()
        try:
            while self.step < cfg.steps:
                if cfg.max_minutes is not None and time.monotonic() - started > cfg.max_minutes * 60:
                    log.info("max_minutes reached at step %d", self.step)
                    break
                report = self.train_step()
                if on_step is not None:
                    on_step(report)
                self.metrics.log({"kind": "train", **report.metrics_row()})
                if cfg.progress:
                    print_progress(report.metrics, cfg.steps)
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                    self._log_eval(self.evaluate())
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
                    self.save()
        finally:
            if self.overlap is not None:  # idle here: every overlapped update finished inside its step
                self.overlap.shutdown()
                self.overlap = None
        if after_last_step is not None:
            after_last_step()
        final_eval = self.evaluate()
        self._log_eval(final_eval)
        self.save()
        return {"steps": self.step, "minutes": (time.monotonic() - started) / 60,
                "eval_start": first_eval, "eval_end": final_eval}

    def _log_eval(self, result: EvalResult) -> None:
        self.metrics.log({"kind": "eval", "step": self.step, "greedy_accuracy": result.greedy_accuracy,
                          "pass_at_1": result.pass_at_1, "pass_at_k": result.pass_at_k, "k": result.k,
                          "num_problems": result.num_problems})
        if self.cfg.progress:
            extra = f" pass@{result.k} {result.pass_at_k:.3f}" if result.k else ""
            print(f"\n[eval] step {self.step}: greedy accuracy {result.greedy_accuracy:.3f}{extra}", flush=True)
