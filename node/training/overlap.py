"""Generating the next batch while this step's update is applied (`sampling.max_staleness = 1`).

On a swarm peer the update is where the time goes between datacenters: the all-reduce of a
round (every step in sync mode, every H-th in diloco mode) waits on the network while the
GPU idles. With overlap the trainer hands the update to a worker thread and samples the next
step's rollouts meanwhile, from a snapshot of the weights taken before the update
(`SamplerSnapshot`), so the update never changes weights under a running `generate`.

Those rollouts are then one policy version stale when the update applied: the loss divides by
the sampler's own log-probs, recorded during generation (`RolloutBatch.sample_logprobs`), so
the PPO ratio is the importance ratio pi_now / pi_sampler and its clip bounds how far the
stale batch can move the policy (asynchronous RL does the same: prime-rl and INTELLECT-2 train
on rollouts a few policy versions old, https://arxiv.org/abs/2505.07291). A batch is never
older than one version: if the update replaced the weights with the swarm's (a state
download or a resync) the prefetched batch is dropped and the step samples afresh.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from node.training.rollout import RolloutBatch
from node.training.seams import UpdateReport


@dataclass
class Prefetched:
    """Rollouts sampled during the previous step's update, waiting for the step that trains on them."""

    problems: list  # the task problems they answer, one per prompt
    batch: RolloutBatch
    seconds: float  # spent generating them
    rng_state: Any  # the prompt stream before they were drawn: what a checkpoint saves while they wait
    version: int  # the trainer's policy version they were sampled from


class SamplerSnapshot:
    """A frozen copy of the policy that generates while the update changes the real one.

    Costs one more copy of the weights (in the model's dtype, on its device); refreshed by copying
    the weights in before each use, which is a small fraction of one generation."""

    def __init__(self, model: torch.nn.Module):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def refresh(self, model: torch.nn.Module) -> torch.nn.Module:
        """Copy `model`'s current weights in; the snapshot to generate with."""
        self.model.load_state_dict(model.state_dict())
        return self.model


@dataclass
class OverlapTimes:
    update: float  # seconds the update took in its worker thread
    wait: float  # seconds the trainer waited for it after generating (0 when generation took longer)


class UpdateOverlap:
    """Runs an update in a worker thread while the caller's thread does something else."""

    def __init__(self):
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="update")

    def run(self, apply: Callable[[], UpdateReport], meanwhile: Callable[[], None]
            ) -> tuple[UpdateReport, OverlapTimes]:
        """`apply()` in the worker, `meanwhile()` here; the update's report once both are done.

        An error in either is raised here, after the other finished (never a half-applied update
        left running behind the caller's back)."""
        def timed() -> tuple[UpdateReport, float]:
            started = time.perf_counter()
            return apply(), time.perf_counter() - started

        future = self._worker.submit(timed)
        try:
            meanwhile()
        finally:
            waited_from = time.perf_counter()
            report, seconds = future.result()
        return report, OverlapTimes(update=seconds, wait=time.perf_counter() - waited_from)

    def shutdown(self) -> None:
        self._worker.shutdown(wait=True)


def staleness_after(report: UpdateReport) -> int | None:
    """Policy versions a batch sampled before this update is behind the weights after it:
    0 (nothing applied), 1 (one update), None (the weights were replaced: too stale to use)."""
    if report.weights_replaced:
        return None
    return 1 if report.applied else 0
