"""PPO that can act: several updates per step, against the log-probs of the policy that sampled.

With one update per step the ratio is exactly 1 and the clip never acts (the default, as before);
with `loss.ppo_epochs=2` (and mini-batches) later updates see weights the earlier ones moved, so
the ratio leaves 1 and tokens get clipped. The reference policy for the KL is only copied when
`loss.kl_coef` > 0.
"""

import pytest
import torch

from node.training.build import build_trainer
from node.training.config import TrainConfig

pytestmark = pytest.mark.unit


def _config(tmp_path, **loss) -> TrainConfig:
    return TrainConfig.model_validate({
        "run_dir": str(tmp_path), "seed": 1, "steps": 1, "progress": False, "torch_threads": 1,
        "algo": {"prompts_per_step": 4}, "sampling": {"group_size": 4, "max_new_tokens": 40},
        "eval": {"every": 0, "num_problems": 4}, "optim": {"lr": 2e-3},
        "task": {"type": "arithmetic", "digits": 2}, "loss": loss})


def test_one_update_per_step_never_clips(tmp_path):
    trainer = build_trainer(_config(tmp_path))
    m = trainer.train_step().metrics
    assert m.num_updates == 1 and m.clip_fraction == 0.0


def test_two_ppo_epochs_in_mini_batches_clip_tokens(tmp_path):
    trainer = build_trainer(_config(tmp_path, ppo_epochs=2, mini_batches=2, clip_eps=0.05))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    report = trainer.train_step()
    m = report.metrics
    assert m.num_updates == 4 and report.update.applied
    assert m.clip_fraction > 0.0, "later updates saw moved weights, some ratios must leave [0.95, 1.05]"
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_sampler_logprobs_can_be_the_old_policy(tmp_path):
    trainer = build_trainer(_config(tmp_path, old_logprobs="sampler"))
    m = trainer.train_step().metrics
    # float32: the sampler's and the training forward's log-probs differ by rounding only
    assert m.logprob_gap < 1e-4 and m.clip_fraction == 0.0


def test_the_reference_policy_is_copied_only_for_a_kl_penalty(tmp_path):
    assert build_trainer(_config(tmp_path / "a")).ref_model is None
    with_kl = build_trainer(_config(tmp_path / "b", kl_coef=0.05, ppo_epochs=2))
    m = with_kl.train_step().metrics
    assert with_kl.ref_model is not None and m.kl is not None and m.kl > 0.0  # the second epoch moved away
