"""The trainer end to end on the embedded model: a step learns, resume is exact (and refuses a
corrupt checkpoint), reward rises."""

import logging
import time

import pytest
import torch

from node.training.build import build_trainer
from node.training.checkpoint import CheckpointError, checkpoint_dir
from node.training.config import TrainConfig
from node.training.telemetry import print_progress
from plumbing.metrics import read_jsonl


def _config(tmp_path, **overrides) -> TrainConfig:
    base = {
        "run_dir": str(tmp_path / "run"), "seed": 0, "steps": 2, "progress": False, "torch_threads": 1,
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
    m = report.metrics_row()
    assert torch.isfinite(torch.tensor(m["loss"])) and m["update_applied"]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert m["response_tokens"] > 0 and m["time_step"] > 0
    assert report.stats.to_dict()  # the meta-signal of the batch is serialisable
    assert m["kl"] >= 0.0 and m["entropy"] > 0.0  # a reference policy: KL is measured


@pytest.mark.unit
def test_without_a_reference_policy_kl_is_reported_as_not_measured(tmp_path, capsys):
    trainer = build_trainer(_config(tmp_path))  # loss.kl_coef 0: no reference copy, no KL
    m = trainer.train_step().metrics
    assert trainer.ref_model is None and m.kl is None and m.metrics_row()["kl"] is None
    print_progress(m, 2)
    line = capsys.readouterr().out
    assert " kl - ent " in line and f"ent {m.entropy:.2f}" in line


@pytest.mark.unit
def test_er_erv_era_count_as_shaping_time_not_forward(tmp_path, monkeypatch):
    """The first pass reduces hidden states to ER/ERV/ERA; that time is shaping's (on an H200 it was half
    of a step, and reported as forward time it hid there: docs/benchmarks.md, "The same on a GPU")."""
    import node.training.passes as passes

    reduce, pause = passes.compute_indicators, 0.5

    def slow_reduction(*args, **kwargs):
        time.sleep(pause)
        return reduce(*args, **kwargs)

    monkeypatch.setattr(passes, "compute_indicators", slow_reduction)
    m = build_trainer(_config(tmp_path)).train_step().metrics
    assert m.time_shaping >= pause
    assert m.time_forward + m.time_shaping <= m.time_step


# what a step computes, without the wall-clock timings and the memory it took (which differ run to run)
_TIMING = ("time_generate", "time_reward", "time_forward", "time_shaping", "time_backward", "time_step",
           "tokens_per_s", "time", "peak_memory_bytes")


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in _TIMING and not k.startswith("time_")}


@pytest.mark.unit
def test_resume_continues_exactly(tmp_path):
    straight = build_trainer(_config(tmp_path / "a", steps=4))
    expected_metrics = [_comparable(straight.train_step().metrics_row()) for _ in range(4)]
    expected = _weights(straight.model)

    first = build_trainer(_config(tmp_path / "b", steps=2))
    for _ in range(2):
        first.train_step()
    first.save()
    resumed = build_trainer(_config(tmp_path / "b", steps=4))
    assert resumed.resume() and resumed.step == 2
    metrics = [_comparable(resumed.train_step().metrics_row()) for _ in range(2)]
    assert metrics == expected_metrics[2:]  # rewards, loss, ER/ERV/ERA, gate, grad norm: all equal
    for a, b in zip(expected, resumed.model.parameters()):
        assert torch.equal(a, b)
    assert resumed.baselines.state_dict() == straight.baselines.state_dict()
    assert resumed.rng.getstate() == straight.rng.getstate()


def _train_rows(run_dir) -> dict[int, dict]:
    return {r["step"]: _comparable(r) for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.unit
def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Through the driver loop, with sampled pass@k evaluations in between: the stopped run
    evaluates (drawing random numbers) before its last checkpoint, which must not shift the
    training stream the resumed run continues on."""
    ev = {"every": 2, "num_problems": 4, "pass_k": 2, "num_samples": 2}
    straight = build_trainer(_config(tmp_path / "a", steps=3, eval=ev))
    straight_summary = straight.run()
    build_trainer(_config(tmp_path / "b", steps=1, eval=ev)).run()
    resumed = build_trainer(_config(tmp_path / "b", steps=3, eval=ev))
    summary = resumed.run()
    assert summary["eval_start"] is None and summary["steps"] == 3  # resumed, not restarted
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    expected, got = _train_rows(tmp_path / "a" / "run"), _train_rows(tmp_path / "b" / "run")
    assert sorted(got) == [1, 2, 3] and got == expected
    assert summary["eval_end"] == straight_summary["eval_end"]


@pytest.mark.unit
def test_resume_refuses_a_corrupt_checkpoint_and_skips_a_partial_one(tmp_path, caplog):
    trainer = build_trainer(_config(tmp_path, steps=1))
    trainer.train_step()
    trainer.save()
    trainer.train_step()
    newest = checkpoint_dir(tmp_path / "run" / "checkpoints", 2)
    trainer.save()
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match its manifest"):
        build_trainer(_config(tmp_path, steps=3)).run()

    (newest / "manifest.json").unlink()  # now it looks like an interrupted write
    fresh = build_trainer(_config(tmp_path, steps=3))
    with caplog.at_level(logging.WARNING, logger="node.training.checkpoint"):
        assert fresh.resume() and fresh.step == 1  # the complete step-1 checkpoint, not the partial one
    assert "step_00000002" in caplog.text and "partial" in caplog.text


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
