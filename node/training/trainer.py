"""The single-peer trainer: one VERL-shaped GRPO step at a time, plus its driver loop.

A step: sample prompts -> G rollouts each -> verifiable rewards -> one policy forward that
yields log-probs *and* the final post-norm hidden states -> ER/ERV/ERA -> auxiliary signal
against the current baselines -> shaped advantages -> PPO-clip loss -> update -> fold the
batch statistics into the baselines (after the signals, so a step never sees its own batch).

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
from node.training.loss import policy_loss
from node.training.policy_forward import policy_forward
from node.training.rollout import sample_rollouts
from node.training.seams import BaselineSource, MetricsPart, UpdateReport, UpdateRule
from node.training.telemetry import Distribution, StepMetrics, nanmean, print_progress
from plumbing.metrics import MetricsSink
from shaping import IndicatorStats, aux_signal, base_advantages, compute_indicators, shaping_bonus, token_advantages

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
                 update: UpdateRule, metrics: MetricsSink):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.baselines = baselines
        self.update = update
        self.metrics = metrics
        self.step = 0
        self.rng = random.Random(cfg.seed)
        self.eval_problems = task.eval_set(cfg.eval.num_problems)
        self.ref_model = None
        if cfg.loss.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> StepReport:
        cfg, group = self.cfg, self.cfg.sampling.group_size
        timer = time.perf_counter
        t0 = timer()
        problems = self.task.sample(self.rng, cfg.algo.prompts_per_step)
        batch = sample_rollouts(self.model, self.tokenizer, [p.prompt for p in problems], cfg.sampling)
        t_generate = timer()
        owners = [problems[i // group] for i in range(len(batch.texts))]
        rewards = torch.tensor([self.task.score(p, t, cfg.reward) for p, t in zip(owners, batch.texts)],
                               dtype=torch.float64)  # [B]
        correct = [self.task.is_correct(p, t) for p, t in zip(owners, batch.texts)]
        t_reward = timer()

        self.model.train()
        out = policy_forward(self.model, batch, temperature=cfg.sampling.temperature)
        ref_logprobs = None
        if self.ref_model is not None:
            with torch.no_grad():
                ref_logprobs = policy_forward(self.ref_model, batch, temperature=cfg.sampling.temperature,
                                              with_hidden=False).logprobs
        t_forward = timer()

        # shaping: detached data computed from the hidden states the loss forward produced
        # on the CPU in float64 whatever the policy's device (a no-op on a CPU run): the statistics are
        # tiny next to the forward, and the shaping maths builds its small tensors on the CPU
        response_mask = batch.response_mask.cpu()
        indicators = compute_indicators(out.hidden.detach().cpu(), response_mask, cfg.shaping)
        baselines, baseline_source = self.baselines.current()
        a0 = base_advantages(rewards.view(-1, group), cfg.algo.estimator).reshape(-1)  # [B]
        aux = aux_signal(indicators, baselines, cfg.shaping) if cfg.shaping.enabled else None
        bonus = shaping_bonus(a0, aux.r_aux, cfg.shaping.kappa) if aux is not None else torch.zeros_like(a0)
        advantages = token_advantages(a0, bonus, response_mask,
                                      last_token=cfg.shaping.compat.last_token_bonus).to(out.logprobs.device)
        t_shaping = timer()

        parts = policy_loss(out.logprobs, out.logprobs.detach(), advantages, batch.response_mask, cfg.loss,
                            ref_logprobs=ref_logprobs, entropy=out.entropy)
        parts.total.backward()
        t_backward = timer()
        update = self.update.apply(len(batch.texts))  # a swarm peer averages with the others here
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
            lambda_t=aux.lam if aux is not None else None, baselines=baseline_source,
            loss=float(parts.total.detach()), policy_loss=parts.policy, kl=parts.kl, entropy=parts.entropy,
            clip_fraction=parts.clip_fraction, response_tokens=batch.num_tokens,
            truncated=float(batch.truncated.float().mean()),
            time_generate=t_generate - t0, time_reward=t_reward - t_generate, time_forward=t_forward - t_reward,
            time_shaping=t_shaping - t_forward, time_backward=t_backward - t_shaping,
            time_update=t_update - t_backward, time_step=t_update - t0,
            tokens_per_s=batch.num_tokens / max(t_update - t0, 1e-9))
        return StepReport(self.step, metrics, update, stats)

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
                            k=ev.pass_k, num_samples=ev.num_samples)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"baselines": self.baselines.state_dict(), "python_rng": [version, list(internal), gauss]}

    def save(self) -> None:
        save_checkpoint(f"{self.cfg.run_dir}/checkpoints", self.step, self.model, self.update.optimizer,
                        self.state_dict(), keep=self.cfg.checkpoint.keep)

    def resume(self) -> bool:
        """Restore the newest valid checkpoint of run_dir, if any; True when one was loaded."""
        path = latest_checkpoint(f"{self.cfg.run_dir}/checkpoints")
        if path is None:
            return False
        state = load_checkpoint(path, self.model, self.update.optimizer)
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
