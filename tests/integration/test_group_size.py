"""`gossip.group_size`: a round starts as soon as that many peers joined it, instead of after the
leader waited out `matchmaking_time` (hivemind's target_group_size). Real `GradientGossip` peers on
loopback (tests/integration/gossip_peers.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from gossip_peers import RTOL, Peer, rounds_until

from node.gossip.consensus import fingerprints_agree
from plumbing.swarm_dht import visible_addresses

pytestmark = pytest.mark.integration

# long enough that a round which waited it out could not pass for one that started at once, even on a
# loaded machine; the averaging timeout must cover it, as it covers matchmaking in hivemind
MATCHMAKING_S = 40.0


def test_a_full_group_starts_its_round_without_waiting_out_matchmaking():
    gossip = {"matchmaking_time": MATCHMAKING_S, "averaging_timeout": 2 * MATCHMAKING_S, "group_size": 2}
    first = Peer("group-size", 0, [], gossip=gossip)
    second = Peer("group-size", 1, visible_addresses(first.dht), gossip=gossip)
    try:
        with ThreadPoolExecutor(2) as pool:
            reports = rounds_until([first, second], pool, epoch=2, timeout=2 * MATCHMAKING_S)
        averaged = [r for step in reports for r in step if r.applied and r.bytes_sent > 0]
        assert len(averaged) >= 2, reports
        slowest = max(r.averaging_seconds for r in averaged)
        assert slowest < MATCHMAKING_S / 2, f"a round took {slowest:.1f}s: it waited for matchmaking_time"
        assert fingerprints_agree(first.fingerprint(), second.fingerprint(), RTOL)
    finally:
        first.close()
        second.close()
