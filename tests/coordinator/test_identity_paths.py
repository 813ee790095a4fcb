"""The coordinator keeps its signing key and DHT identity next to its history unless told otherwise."""

from __future__ import annotations

import pytest

from coordinator.config import CoordinatorConfig

pytestmark = pytest.mark.unit


def test_key_and_identity_default_next_to_the_history(tmp_path):
    cfg = CoordinatorConfig(run="r", db_path=str(tmp_path / "state" / "history.db"))
    assert cfg.signing_key_path == str(tmp_path / "state" / "signing.key")
    assert cfg.dht.identity_path == str(tmp_path / "state" / "dht.identity")
    again = CoordinatorConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg  # the resolved config round-trips (config.resolved.json, the ready file)


def test_explicit_paths_are_kept(tmp_path):
    cfg = CoordinatorConfig(run="r", db_path=str(tmp_path / "h.db"), signing_key_path="/keys/k",
                            dht={"identity_path": "/keys/id"})
    assert (cfg.signing_key_path, cfg.dht.identity_path) == ("/keys/k", "/keys/id")
