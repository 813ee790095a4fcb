"""What a peer takes from the coordinator's bootstrap info, and what it refuses."""

from __future__ import annotations

import pytest

from node.swarm.config import NodeConfig
from node.swarm.joining import CoordinatorKeyMismatch, adopt
from plumbing.bootstrap import BootstrapInfo
from plumbing.swarm_dht import BootstrapError

pytestmark = pytest.mark.unit

PEER = "12D3KooWNkmZBtLxs5Khuu7GYNSmZ5wtmk89Wo99m7vfVM374yKU"
INFO = BootstrapInfo(run="swarm-a", public_key="key-a", maddrs=(f"/ip4/127.0.0.1/tcp/31337/p2p/{PEER}",
                                                                  f"/dns4/coordinator/tcp/31337/p2p/{PEER}"),
                     grpc_address=None, http_address=None, version="0.1.0", now=None, source="http://c:8080")


def test_an_unset_run_and_key_are_taken_from_the_coordinator():
    joined = adopt(NodeConfig.model_validate({}), INFO)
    assert joined.run_id == "swarm-a" and joined.coordinator.trusted_key == "key-a"
    assert joined.dht.initial_peers == [f"/dns4/coordinator/tcp/31337/p2p/{PEER}"]  # loopback of another host dropped


def test_own_initial_peers_come_first_and_a_matching_pin_is_kept():
    own = f"/ip4/10.0.0.9/tcp/1/p2p/{PEER}"
    cfg = NodeConfig.model_validate({"run_id": "swarm-a", "coordinator": {"trusted_key": "key-a"},
                                     "dht": {"initial_peers": [own]}})
    assert adopt(cfg, INFO).dht.initial_peers == [own, f"/dns4/coordinator/tcp/31337/p2p/{PEER}"]


def test_a_different_pinned_key_or_run_is_refused_naming_both():
    with pytest.raises(CoordinatorKeyMismatch, match="pins key-b but the coordinator at http://c:8080 signs with "
                                                     "key-a"):
        adopt(NodeConfig.model_validate({"coordinator": {"trusted_key": "key-b"}}), INFO)
    with pytest.raises(BootstrapError, match="run_id is 'swarm-b' but the coordinator at http://c:8080 runs 'swarm-a'"):
        adopt(NodeConfig.model_validate({"run_id": "swarm-b"}), INFO)
