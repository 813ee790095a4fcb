"""TrainConfig layering: partial sections keep the train-level defaults, not the class defaults."""

from __future__ import annotations

import pytest

from node.training.config import TrainConfig
from rankswarm.config_loading import load_config


@pytest.mark.unit
def test_partial_shaping_override_keeps_task_sized_stride():
    cfg = load_config(TrainConfig, overrides=["shaping.enabled=false"])
    assert cfg.shaping.enabled is False
    assert cfg.shaping.stride == TrainConfig().shaping.stride == 4
    assert cfg.shaping.window == 512


@pytest.mark.unit
def test_explicit_shaping_stride_still_wins():
    cfg = load_config(TrainConfig, overrides=["shaping.stride=40", "shaping.compat.last_token_bonus=true"])
    assert cfg.shaping.stride == 40
    assert cfg.shaping.compat.last_token_bonus is True


@pytest.mark.unit
def test_local_baselines_follow_the_shaping_config():
    from node.training.seams import LocalBaselines
    from shaping import ShapingConfig

    compat = ShapingConfig(alpha=0.5, compat={"zero_start_baselines": True})
    baselines, _ = LocalBaselines(compat).current()
    assert baselines.alpha == 0.5
    assert baselines.corrected is False and baselines.ready  # reference mode: zero baselines from step 1
    ours, _ = LocalBaselines(ShapingConfig()).current()
    assert ours.corrected is True and not ours.ready
