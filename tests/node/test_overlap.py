"""Overlap (sampling.max_staleness = 1): the next batch is sampled during the update, by the weights
from before it; the loss then divides by the sampler's log-probs; a batch from replaced weights is
dropped; a checkpoint taken while a batch waits resumes on the same prompt stream."""

import threading
import time

import pytest
import torch

from node.training.build import build_trainer
from node.training.config import TrainConfig
from node.training.overlap import UpdateOverlap
from node.training.seams import UpdateReport


def _config(tmp_path, max_staleness: int = 1, **overrides) -> TrainConfig:
    base = {
        "run_dir": str(tmp_path / "run"), "seed": 0, "steps": 4, "progress": False, "torch_threads": 1,
        "algo": {"prompts_per_step": 2}, "sampling": {"group_size": 4, "max_new_tokens": 24,
                                                      "max_staleness": max_staleness},
        "eval": {"every": 0, "num_problems": 4}, "checkpoint": {"every": 0},
        "task": {"type": "arithmetic", "digits": 2},
    }
    return TrainConfig.model_validate({**base, **overrides})


class _WaitForTheNextBatch:
    """Wraps a trainer's update rule: an update off the trainer's thread blocks until the next batch has
    been sampled. Only an update that runs while the trainer samples can ever see that batch; a serial
    trainer updates on its own thread and samples after the update returned."""

    def __init__(self, trainer, timeout_s: float = 120.0):
        self.trainer, self.inner, self.timeout_s = trainer, trainer.update, timeout_s
        self.saw_next_batch: list[bool] = []
        self.threads: set[str] = set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply(self, num_samples: int) -> UpdateReport:
        self.threads.add(threading.current_thread().name)
        deadline = time.monotonic() + self.timeout_s
        while (threading.current_thread() is not threading.main_thread() and self.trainer.prefetched is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
        self.saw_next_batch.append(self.trainer.prefetched is not None)
        return self.inner.apply(num_samples)


@pytest.mark.unit
def test_next_batch_is_sampled_while_the_update_runs_and_trains_one_version_stale(tmp_path):
    trainer = build_trainer(_config(tmp_path, steps=3))
    trainer.update = _WaitForTheNextBatch(trainer)
    rows = []
    for _ in range(3):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        rows.append(trainer.train_step().metrics_row())
        if trainer.prefetched is not None:  # sampled by the weights from before this step's update
            assert all(torch.equal(a, b) for a, b in zip(before, trainer.sampler.model.parameters()))
    # steps 1 and 2 overlapped their update with the next batch; the last step has no next batch
    assert trainer.update.saw_next_batch == [True, True, False]
    assert [r["staleness"] for r in rows] == [0, 1, 1]
    assert rows[0]["time_update_wait"] is not None and rows[2]["time_update_wait"] is None
    assert any(name.startswith("update") for name in trainer.update.threads)
    assert trainer.prefetched is None and trainer.policy_version == 3


@pytest.mark.unit
def test_a_stale_batch_divides_by_the_samplers_logprobs(tmp_path):
    from node.training.passes import first_pass

    trainer = build_trainer(_config(tmp_path, steps=3))
    trainer.train_step()
    stale = trainer.prefetched.batch
    fresh = first_pass(trainer.model, None, stale, trainer.cfg, keep_graph=False)
    old = first_pass(trainer.model, None, stale, trainer.cfg, keep_graph=False, stale=True)
    assert torch.equal(old.old_logprobs, stale.sample_logprobs)
    # the update moved the policy, so the current weights' log-probs are not the sampler's
    mask = stale.response_mask
    assert float(((fresh.old_logprobs - stale.sample_logprobs).abs() * mask).sum() / mask.sum()) > 1e-4
    row = trainer.train_step().metrics_row()
    assert row["staleness"] == 1 and row["clip_fraction"] >= 0.0 and torch.isfinite(torch.tensor(row["loss"]))


class _ReplacesWeights:
    """Wraps an update rule: its next update also reports the weights replaced (as a swarm state download
    would, after putting other weights in place)."""

    def __init__(self, inner):
        self.inner = inner
        self.replace_next = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply(self, num_samples: int) -> UpdateReport:
        report = self.inner.apply(num_samples)
        if self.replace_next:
            self.replace_next = False
            with torch.no_grad():
                for p in self.inner.master.params:
                    p.add_(0.01)
            report = UpdateReport(report.applied, report.grad_norm, weights_replaced=True)
        return report


@pytest.mark.unit
def test_a_batch_sampled_before_the_weights_were_replaced_is_dropped(tmp_path):
    trainer = build_trainer(_config(tmp_path, steps=4))
    trainer.update = _ReplacesWeights(trainer.update)
    trainer.train_step()
    trainer.update.replace_next = True
    row = trainer.train_step().metrics_row()  # its update replaced the weights: the batch sampled meanwhile is useless
    assert trainer.prefetched is None and row["stale_batches_dropped"] == 1
    assert trainer.train_step().metrics_row()["staleness"] == 0  # sampled afresh by the current weights


@pytest.mark.unit
def test_a_finished_run_leaves_no_update_thread_behind(tmp_path):
    # threads only this trainer can have started: other tests' trainers that never ran `run()` keep their idle
    # workers (named alike) until they are collected
    before = set(threading.enumerate())
    trainer = build_trainer(_config(tmp_path, steps=2))
    overlap = trainer.overlap  # held here, so only a shutdown (not the collector) can end its worker
    trainer.run()
    assert overlap is not None and trainer.metrics.latest()  # it ran: step 1's update went through the worker thread
    assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith("update")]


@pytest.mark.unit
def test_checkpoint_while_a_batch_waits_resumes_on_the_same_prompt_stream(tmp_path):
    overlapped = build_trainer(_config(tmp_path / "a"))
    serial = build_trainer(_config(tmp_path / "b", max_staleness=0))
    overlapped.train_step()
    serial.train_step()
    assert overlapped.prefetched is not None
    # the waiting batch's prompts are not in the saved state: a resumed run draws them again
    assert overlapped.state_dict()["python_rng"] == serial.state_dict()["python_rng"]
    overlapped.save()
    resumed = build_trainer(_config(tmp_path / "a"))
    assert resumed.resume() and resumed.step == 1
    drawn = resumed.task.sample(resumed.rng, 2)
    assert [p.prompt for p in drawn] == [p.prompt for p in overlapped.prefetched.problems]


@pytest.mark.unit
def test_overlap_raises_the_updates_error_after_sampling_finished():
    overlap = UpdateOverlap()
    sampled = []

    def failing_update():
        raise RuntimeError("averaging failed")

    with pytest.raises(RuntimeError, match="averaging failed"):
        overlap.run(failing_update, lambda: sampled.append(True))
    assert sampled == [True]
    overlap.shutdown()


@pytest.mark.unit
def test_max_staleness_above_one_is_refused():
    with pytest.raises(ValueError, match="max_staleness"):
        TrainConfig.model_validate({"sampling": {"max_staleness": 2}})
