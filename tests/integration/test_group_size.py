"""`gossip.group_size`: a round starts as soon as that many peers joined it, instead of after the
leader waited out `matchmaking_time` (hivemind's target_group_size). Real `GradientGossip` peers on
loopback (tests/integration/gossip_peers.py).

Each peer steps on its own thread, as real peers do: stepped in lockstep, a peer whose tracker saw
the target first would sit in matchmaking while the other, not yet ready, could only join at its
next call, which lockstep holds back until the first returns.

The first rounds can still wait: rounds dropped while the peers start leave a matchmaking attempt
in flight, and hivemind finishes it (up to matchmaking_time) before it looks for the next group.
So the check is on the typical round, not the slowest."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gossip_peers import RTOL, STEP_SECONDS, Peer

from node.gossip.consensus import fingerprints_agree
from plumbing.swarm_dht import visible_addresses

pytestmark = pytest.mark.integration

# long enough that a round which waited it out could not pass for one that started at once, even on a
# loaded machine; the averaging timeout must cover it, as it covers matchmaking in hivemind
MATCHMAKING_S = 40.0
EPOCHS = 4


def step_until(peer: Peer, peers: list[Peer], done: threading.Event, deadline: float) -> list:
    """Local steps every STEP_SECONDS or so until every peer reached EPOCHS (or the deadline)."""
    reports = []
    while not done.is_set() and time.monotonic() < deadline:
        reports.append(peer.local_step())
        if min(p.gossip.epoch for p in peers) >= EPOCHS:
            done.set()
        time.sleep(STEP_SECONDS)
    return reports


def test_a_full_group_starts_its_round_without_waiting_out_matchmaking():
    gossip = {"matchmaking_time": MATCHMAKING_S, "averaging_timeout": 2 * MATCHMAKING_S, "group_size": 2}
    first = Peer("group-size", 0, [], gossip=gossip)
    second = Peer("group-size", 1, visible_addresses(first.dht), gossip=gossip)
    peers, done = [first, second], threading.Event()
    try:
        deadline = time.monotonic() + 4 * MATCHMAKING_S
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(step_until, peer, peers, done, deadline) for peer in peers]
            reports = [future.result(timeout=6 * MATCHMAKING_S) for future in futures]
        assert min(p.gossip.epoch for p in peers) >= EPOCHS, [p.gossip.epoch for p in peers]
        averaged = [r for steps in reports for r in steps if r.applied and r.bytes_sent > 0]
        assert len(averaged) >= 2 * EPOCHS - 2, reports
        seconds = sorted(r.averaging_seconds for r in averaged)
        # without group_size every round takes matchmaking_time, the median included
        assert statistics.median(seconds) < MATCHMAKING_S / 4, f"rounds took {seconds}: they waited for matchmaking"
        assert fingerprints_agree(first.fingerprint(), second.fingerprint(), RTOL)
    finally:
        done.set()
        first.close()
        second.close()
