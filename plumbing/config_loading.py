"""Layered configuration: pydantic defaults < TOML files < environment variables < command-line overrides.

Every runnable role (`rankswarm train`, `node`, `coordinator`, `demo`) owns one pydantic
model; this module turns files, `RANKSWARM_<ROLE>_...` variables and `--set key.sub=value`
flags into a validated instance and writes the resolved config next to a run's outputs.

Environment variables exist for containers, where a file or a flag is awkward to pass:

    RANKSWARM_NODE_RUN_ID=my-run                                   -> run_id = "my-run"
    RANKSWARM_NODE_DHT__INITIAL_PEERS='["/ip4/10.0.0.2/tcp/31337/p2p/12D3Koo..."]'
                                                                   -> dht.initial_peers = [...]

The prefix names the role (`env_prefix("node")`), `__` separates sections, names are
case-insensitive and values are TOML literals exactly as after `--set key=` (a bare word is a
string). They sit between the files and `--set`, so a `--set` on the command line still wins
over the container's environment. Every error names the file, variable or flag that set the
offending value.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)

ENV_SECTION_SEPARATOR = "__"


class ConfigError(ValueError):
    """A config file, key or value the user has to fix; the message says which."""


def env_prefix(role: str) -> str:
    """The environment variable prefix of a role: `RANKSWARM_NODE_` for "node"."""
    return f"RANKSWARM_{role.upper()}_"


def _parse_value(raw: str, where: str) -> Any:
    """A TOML literal (bare words fall back to strings); a broken array, table or quoted string is an error."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as err:
        if raw[:1] in ("[", "{", '"', "'"):
            raise ConfigError(f"{where}: {raw!r} is not a valid TOML value ({err}); write lists as "
                              f'["a", "b"], tables as {{key = 1}} and quote strings with "') from None
        return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` where value is a TOML literal (bare words fall back to strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    return [part.strip() for part in key.split(".")], _parse_value(raw, f"--set {text}")


def parse_env(name: str, value: str, prefix: str) -> tuple[list[str], Any]:
    """Parse one variable `<prefix>SECTION__KEY=value` into (["section", "key"], value)."""
    parts = name[len(prefix):].lower().split(ENV_SECTION_SEPARATOR)
    if not all(parts):
        raise ConfigError(f"environment variable {name}: expected {prefix}KEY or {prefix}SECTION__KEY "
                          f"(sections separated by a double underscore)")
    return parts, _parse_value(value, f"environment variable {name}")


class _Tree:
    """The merged raw config and, for each value set, where it was set (for error messages)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], str] = {}

    def set(self, path: list[str], value: Any, source: str) -> None:
        node = self.values
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = self.sources.get(tuple(path[:depth + 1]))
                raise ConfigError(f"{source}: cannot set {'.'.join(path)}: {part!r} is a value, not a section"
                                  + (f" (set by {where})" if where else ""))
            node = child
        key = tuple(path)
        if isinstance(value, dict):  # a table merges into what earlier layers set, key by key
            if not isinstance(node.get(path[-1]), dict):
                node[path[-1]] = {}
                self.sources = {p: s for p, s in self.sources.items() if p[:len(key)] != key}
                self.sources[key] = source
            for sub, item in value.items():
                self.set([*path, sub], item, source)
            return
        self.sources = {p: s for p, s in self.sources.items() if p[:len(key)] != key}
        node[path[-1]] = value
        self.sources[key] = source

    def source_of(self, loc: tuple) -> str | None:
        parts = tuple(str(p) for p in loc)
        for end in range(len(parts), 0, -1):
            if parts[:end] in self.sources:
                return self.sources[parts[:end]]
        return None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read one TOML file, naming the file in any error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err


def _describe(err: ValidationError, model: type[BaseModel], tree: _Tree, prefix: str | None) -> str:
    lines = [f"invalid {model.__name__}:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        source = tree.source_of(item["loc"])
        origin = f"; set by {source}" if source else ""
        if item["type"] == "extra_forbidden":
            hint = " (check the spelling; see `rankswarm config show <role>`"
            if source and source.startswith("environment") and prefix:
                hint += f"; sections are separated by a double underscore, e.g. {prefix}DHT__CLIENT_MODE"
            lines.append(f"  {where}: unknown key{hint}){origin}")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r}){origin}")
    return "\n".join(lines)


def load_config(
    model: type[ConfigT],
    files: list[str | Path] | tuple[str | Path, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConfigT:
    """Build `model` from defaults, then each TOML file in order, then the variables of `environ` (default
    os.environ) named `<env_prefix>...` (none when env_prefix is None), then `key=value` overrides."""
    tree = _Tree()
    for path in files:
        for key, value in read_toml(path).items():
            tree.set([key], value, f"config file {path}")
    if env_prefix is not None:
        environ = os.environ if environ is None else environ
        for name in sorted(n for n in environ if n.upper().startswith(env_prefix)):
            parts, value = parse_env(name.upper(), environ[name], env_prefix)
            tree.set(parts, value, f"environment variable {name}")
    for text in overrides:
        path, value = parse_override(text)
        tree.set(path, value, f"--set {text}")
    try:
        return model.model_validate(tree.values)
    except ValidationError as err:
        raise ConfigError(_describe(err, model, tree, env_prefix)) from None


RESOLVED_NAME = "config.resolved.json"


def write_resolved(config: BaseModel, run_dir: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the fully resolved config beside a run's outputs, so a run can be reproduced."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / name
    out.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return out
