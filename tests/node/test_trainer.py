"""The trainer end to end on the embedded model: a step learns, resume is exact, reward rises."""

import pytest
import torch

from node.training.build import build_trainer
from node.training.config import TrainConfig
from rankswarm.metrics import read_jsonl


def _config(tmp_path, **overrides) -> TrainConfig:
    base = {
        "run_dir": str(tmp_path / "run"), "seed": 0, "steps": 2, "progress": False, "torch_threads": 2,
        "algo": {"prompts_per_step": 4}, "sampling": {"group_size": 4, "max_new_tokens": 40},
        "eval": {"every": 0, "num_problems": 8}, "checkpoint": {"every": 0},
        "task": {"type": "arithmetic", "digits": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrainConfig.model_validate(base)


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.unit
def test_one_step_changes_weights_with_a_finite_loss(tmp_path):
    trainer = build_trainer(_config(tmp_path, loss={"kl_coef": 0.01, "entropy_coef": 0.001}))
    before = _weights(trainer.model)
    report = trainer.train_step()
    m = report.metrics
    assert torch.isfinite(torch.tensor(m["loss"])) and m["update_applied"]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert m["response_tokens"] > 0 and m["time_step"] > 0
    assert report.stats.to_dict()  # the meta-signal of the batch is serialisable


@pytest.mark.unit
def test_resume_continues_exactly(tmp_path):
    straight = build_trainer(_config(tmp_path / "a", steps=4))
    for _ in range(4):
        straight.train_step()
    expected = _weights(straight.model)

    first = build_trainer(_config(tmp_path / "b", steps=2))
    for _ in range(2):
        first.train_step()
    first.save()
    resumed = build_trainer(_config(tmp_path / "b", steps=4))
    assert resumed.resume() and resumed.step == 2
    for _ in range(2):
        resumed.train_step()
    for a, b in zip(expected, resumed.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_short_seeded_run_raises_reward_on_an_easy_task(tmp_path):
    cfg = _config(tmp_path, steps=30, task={"type": "arithmetic", "digits": 1, "min_digits": 1,
                                            "eval_size": 20},
                  algo={"prompts_per_step": 8}, optim={"lr": 5e-5}, eval={"every": 0, "num_problems": 20})
    trainer = build_trainer(cfg)
    summary = trainer.run()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    early = sum(r["reward"] for r in rows[:8]) / 8
    late = sum(r["reward"] for r in rows[-8:]) / 8
    assert late > early + 0.05, (early, late)
    assert summary["steps"] == 30
