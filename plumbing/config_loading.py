"""Layered configuration: pydantic defaults < TOML files < command-line overrides.

Every runnable role (`rankswarm train`, `node`, `coordinator`, `demo`) owns one pydantic
model; this module turns files and `--set key.sub=value` flags into a validated
instance and writes the resolved config next to a run's outputs.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """A config file, key or value the user has to fix; the message says which."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` where value is a TOML literal (bare words fall back to strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [part.strip() for part in key.split(".")], value


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read one TOML file, naming the file in any error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err


def _describe(err: ValidationError, model: type[BaseModel]) -> str:
    lines = [f"invalid {model.__name__}:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key (check the spelling; see `rankswarm config show <role>`)")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_config(
    model: type[ConfigT],
    files: list[str | Path] | tuple[str | Path, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
) -> ConfigT:
    """Build `model` from defaults, then each TOML file in order, then `key=value` overrides."""
    tree: dict[str, Any] = {}
    for path in files:
        tree = _deep_merge(tree, read_toml(path))
    for text in overrides:
        path, value = parse_override(text)
        _set_path(tree, path, value)
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err, model)) from None


RESOLVED_NAME = "config.resolved.json"


def write_resolved(config: BaseModel, run_dir: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the fully resolved config beside a run's outputs, so a run can be reproduced."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / name
    out.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return out
