"""Layered config loading: defaults < TOML files < overrides, and errors that name the key."""

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from plumbing.config_loading import ConfigError, load_config, parse_override, write_resolved

pytestmark = pytest.mark.unit


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0)
    mode: Literal["a", "b"] = "a"


class Root(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"
    steps: int = Field(10, ge=0)
    inner: Inner = Inner()


def test_layers_apply_in_order(tmp_path):
    first = tmp_path / "a.toml"
    first.write_text('name = "from-a"\nsteps = 5\n[inner]\nlr = 0.5\n')
    second = tmp_path / "b.toml"
    second.write_text("steps = 7\n")
    cfg = load_config(Root, [first, second], ["inner.mode=b", "name=cli"])
    assert (cfg.name, cfg.steps, cfg.inner.lr, cfg.inner.mode) == ("cli", 7, 0.5, "b")


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[inner]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"inner\.learning_rate: unknown key"):
        load_config(Root, [path])


def test_invalid_value_is_named():
    with pytest.raises(ConfigError, match=r"steps: .*greater than or equal to 0"):
        load_config(Root, [], ["steps=-3"])


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("steps = = 3\n")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        load_config(Root, [path])


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Root, ["/nonexistent/rankswarm.toml"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("no-equals-sign")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(Root, [], ["name=x", "name.sub=1"])


def test_override_values_parse_as_toml_literals():
    assert parse_override("a.b=3")[1] == 3
    assert parse_override("a=true")[1] is True
    assert parse_override("a=[1, 2]")[1] == [1, 2]
    assert parse_override("a=hello")[1] == "hello"


def test_write_resolved_round_trips(tmp_path):
    cfg = load_config(Root, [], ["steps=3"])
    out = write_resolved(cfg, tmp_path / "run")
    assert Root.model_validate_json(out.read_text()) == cfg


def test_environment_sits_between_files_and_overrides(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('name = "from-file"\nsteps = 5\n[inner]\nlr = 0.5\nmode = "b"\n')
    environ = {"RS_NAME": "from-env", "RS_INNER__LR": "0.25", "RS_STEPS": "6", "OTHER_STEPS": "99"}
    cfg = load_config(Root, [path], ["steps=8"], env_prefix="RS_", environ=environ)
    assert (cfg.name, cfg.steps, cfg.inner.lr, cfg.inner.mode) == ("from-env", 8, 0.25, "b")
    assert load_config(Root, [path], env_prefix=None, environ=environ).name == "from-file"


def test_environment_names_are_case_insensitive_and_tables_merge():
    environ = {"rs_inner": '{mode = "b"}', "RS_INNER__LR": "2e-3", "RS_NAME": "bare words stay strings"}
    cfg = load_config(Root, env_prefix="RS_", environ=environ)
    assert (cfg.inner.mode, cfg.inner.lr, cfg.name) == ("b", 2e-3, "bare words stay strings")


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match=r"steps: .*integer.*set by environment variable RS_STEPS"):
        load_config(Root, env_prefix="RS_", environ={"RS_STEPS": "many"})
    with pytest.raises(ConfigError, match=r"inner_lr: unknown key.*double underscore.*RS_INNER_LR"):
        load_config(Root, env_prefix="RS_", environ={"RS_INNER_LR": "0.1"})
    with pytest.raises(ConfigError, match=r"environment variable RS_NAME: .*not a valid TOML value"):
        load_config(Root, env_prefix="RS_", environ={"RS_NAME": '["unclosed"'})
    with pytest.raises(ConfigError, match=r"environment variable RS_INNER____LR: expected RS_KEY"):
        load_config(Root, env_prefix="RS_", environ={"RS_INNER____LR": "1"})


def test_errors_name_the_file_or_flag_that_set_the_value(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text("[inner]\nlr = -1.0\n")
    with pytest.raises(ConfigError, match=r"inner\.lr: .*greater than 0.*set by config file .*a\.toml"):
        load_config(Root, [path])
    with pytest.raises(ConfigError, match=r"inner\.lr: .*set by --set inner.lr=-2"):
        load_config(Root, [path], ["inner.lr=-2"])


def test_an_empty_table_in_a_later_file_keeps_what_earlier_layers_set(tmp_path):
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text("[inner]\nlr = 0.5\n")
    second.write_text("[inner]\n")
    assert load_config(Root, [first, second]).inner.lr == 0.5
