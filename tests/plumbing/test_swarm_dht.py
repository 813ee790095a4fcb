"""Joining a swarm: config validation and a clear error when no initial peer answers (real p2pd)."""

import faulthandler
import multiprocessing as mp
import os
import signal
import time

import pytest
from hivemind.utils import get_dht_time

from plumbing.swarm_dht import START_ATTEMPTS, BootstrapError, DHTConfig, start_dht, visible_addresses

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


def _crash_the_first_children(monkeypatch, crashes: int):
    """Make the next `crashes` DHT child processes die as the segfaulting one did (SIGSEGV while starting)."""
    import hivemind

    left = mp.get_context("fork").Value("i", crashes)  # shared with the forked children
    run = hivemind.DHT.run

    def crash_first(self):
        with left.get_lock():
            crash = left.value > 0
            left.value -= crash
        if crash:
            faulthandler.disable()  # a deliberate crash: no "Fatal Python error" dump in the test log
            os.kill(os.getpid(), signal.SIGSEGV)
        run(self)

    monkeypatch.setattr(hivemind.DHT, "run", crash_first)
    return left


@pytest.mark.integration
def test_a_dht_child_that_dies_while_starting_is_started_again(monkeypatch, caplog):
    left = _crash_the_first_children(monkeypatch, crashes=1)
    dht = start_dht(DHTConfig(host_maddrs=LOOPBACK, startup_timeout=20))
    try:
        assert left.value == 0 and "died while starting (exit code -11): starting it again" in caplog.text
        assert dht.store("key", "value", get_dht_time() + 60) and dht.get("key", latest=True).value == "value"
    finally:
        dht.shutdown()


@pytest.mark.integration
def test_a_dht_child_that_keeps_dying_is_an_error_not_a_hang(monkeypatch):
    _crash_the_first_children(monkeypatch, crashes=START_ATTEMPTS)
    started = time.monotonic()
    with pytest.raises(BootstrapError, match=f"died while starting, on all {START_ATTEMPTS} attempts"):
        start_dht(DHTConfig(host_maddrs=LOOPBACK, startup_timeout=20))
    assert time.monotonic() - started < 20  # (hivemind alone waits for a dead child forever)
