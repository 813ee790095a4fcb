"""A restarted coordinator keeps, by default, the key peers pin and the peer id they join at."""

from __future__ import annotations

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.server import Coordinator

pytestmark = pytest.mark.integration


def test_a_restarted_coordinator_keeps_its_key_and_dht_peer_id(tmp_path):
    cfg = CoordinatorConfig(run="identity-test", listen="127.0.0.1:0", http_listen=None,
                            db_path=str(tmp_path / "coordinator" / "history.db"),
                            dht={"host_maddrs": ["/ip4/127.0.0.1/tcp/0"]})
    with Coordinator(cfg) as first:
        key, peer_id = first.identity.fingerprint, first.visible_maddrs()[0].rsplit("/p2p/", 1)[1]
    with Coordinator(cfg) as again:
        assert again.identity.fingerprint == key
        assert again.visible_maddrs()[0].rsplit("/p2p/", 1)[1] == peer_id
    assert sorted(p.name for p in (tmp_path / "coordinator").iterdir() if p.name in ("signing.key", "dht.identity")) \
        == ["dht.identity", "signing.key"]
