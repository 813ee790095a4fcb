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
