"""TrainConfig layering (partial sections keep the train-level defaults, not the class defaults)
and clear errors that name the key, whether it came from a TOML file or a `--set` override."""

from __future__ import annotations

import pytest

from node.training.config import TrainConfig
from plumbing.config_loading import ConfigError, load_config


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
    baselines = LocalBaselines(compat).current().baselines
    assert baselines.alpha == 0.5
    assert baselines.corrected is False and baselines.ready  # reference mode: zero baselines from step 1
    ours = LocalBaselines(ShapingConfig()).current().baselines
    assert ours.corrected is True and not ours.ready


# -- errors a user can fix: named key, from a TOML file or from --set ------------------------------

def _toml(tmp_path, text: str):
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


@pytest.mark.unit
def test_toml_and_overrides_layer_into_a_train_config(tmp_path):
    path = _toml(tmp_path, 'steps = 7\n[optim]\nlr = 2e-5\n[task]\ntype = "arithmetic"\ndigits = 2\n')
    cfg = load_config(TrainConfig, [path], ["optim.lr=1e-5", "sampling.group_size=4"])
    assert (cfg.steps, cfg.optim.lr, cfg.sampling.group_size, cfg.task.root.digits) == (7, 1e-5, 4, 2)
    assert cfg.eval.every == TrainConfig().eval.every  # untouched keys keep their defaults


@pytest.mark.unit
@pytest.mark.parametrize("text, where", [
    ("[optim]\nlearning_rate = 1e-5\n", r"optim\.learning_rate: unknown key"),
    ("[optimizer]\nlr = 1e-5\n", r"optimizer: unknown key"),
    ("stepz = 3\n", r"stepz: unknown key"),
    ("[shaping.compat]\nlast_token = true\n", r"shaping\.compat\.last_token: unknown key"),
    ('[task]\ntype = "arithmetic"\nnum_digits = 2\n', r"task\.arithmetic\.num_digits: unknown key"),
    ("[sampling]\ngroup_size = 1\n", r"sampling\.group_size: .*greater than or equal to 2"),
    ('[algo]\nestimator = "ppo"\n', r"algo\.estimator: .*'grpo', 'dr_grpo' or 'rloo'"),
    ('[optim]\nlr = "fast"\n', r"optim\.lr: .*valid number"),
])
def test_bad_toml_key_or_value_is_named(tmp_path, text, where):
    with pytest.raises(ConfigError, match=where):
        load_config(TrainConfig, [_toml(tmp_path, text)])


@pytest.mark.unit
@pytest.mark.parametrize("override, where", [
    ("optim.learning_rate=1e-5", r"optim\.learning_rate: unknown key"),
    ("loss.kl=0.1", r"loss\.kl: unknown key"),
    ("optim.lr=0.5", r"optim\.lr: .*less than or equal to 0\.01"),
    ("loss.clip_eps=1.5", r"loss\.clip_eps: .*less than 1"),
    ("shaping.kappa=0", r"shaping\.kappa: .*greater than 0"),
    ("task.type=chess", r"task: .*'chess'.*'arithmetic', 'reasoning_gym', 'jsonl'"),
    ("run_dir=' '", r"run_dir: .*non-empty"),
])
def test_bad_override_key_or_value_is_named(override, where):
    with pytest.raises(ConfigError, match=where):
        load_config(TrainConfig, [], [override])


@pytest.mark.unit
def test_override_wins_over_a_bad_toml_value(tmp_path):
    path = _toml(tmp_path, "[sampling]\ngroup_size = 1\n")
    assert load_config(TrainConfig, [path], ["sampling.group_size=2"]).sampling.group_size == 2


@pytest.mark.unit
def test_cli_train_reports_config_errors_and_exits_2(tmp_path, capsys, monkeypatch):
    from rankswarm.cli import main

    monkeypatch.chdir(tmp_path)  # the default run_dir is relative: nothing may appear here
    path = _toml(tmp_path, "[optim]\nlearning_rate = 1e-5\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "optim.learning_rate: unknown key" in err
    assert main(["train", "--set", "sampling.temperature=-1"]) == 2
    assert "sampling.temperature" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before any run directory was made
