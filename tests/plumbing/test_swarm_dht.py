"""Joining a swarm: config validation and a clear error when no initial peer answers (real p2pd)."""

import pytest

from plumbing.swarm_dht import BootstrapError, DHTConfig, start_dht, visible_addresses

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


@pytest.mark.unit
def test_initial_peer_needs_a_peer_id():
    with pytest.raises(ValueError, match="no /p2p/<peer id> part"):
        DHTConfig(initial_peers=["/ip4/127.0.0.1/tcp/4000"])
    with pytest.raises(ValueError, match="is not a multiaddr"):
        DHTConfig(initial_peers=["127.0.0.1:4000"])


@pytest.mark.integration
def test_join_and_clear_error_when_nobody_answers():
    first = start_dht(DHTConfig(host_maddrs=LOOPBACK))
    try:
        addrs = visible_addresses(first)
        assert addrs and all("/p2p/" in a for a in addrs)
        second = start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=addrs))
        second.shutdown()
        peer_id = addrs[0].split("/p2p/")[1]
    finally:
        first.shutdown()
    # the first peer is gone: joining through it must fail with advice, not hang or warn silently
    dead = f"/ip4/127.0.0.1/tcp/9/p2p/{peer_id}"
    with pytest.raises(BootstrapError, match="none of the initial peers answered") as info:
        start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=[dead]))
    assert dead in str(info.value)
