"""Peer states, alert rules, alert start/end times and the swarm summary (coordinator/health.py, monitor.py)."""

import pytest
from coordinator_fakes import peer_status
from dashboard_fakes import PEER_TIMEOUT, ROUND_S, START, FakeSwarm

from coordinator.config import HealthConfig
from coordinator.health import PeerMemory, classify_peers, epoch_lags, peer_conditions, summarize, swarm_conditions
from coordinator.monitor import Monitor
from coordinator.views import state_of
from protos import records, swarm_pb2

CFG = HealthConfig()


def _peer(peer_id="p", *, last_seen=100.0, contributions=3, active=True, **status) -> swarm_pb2.PeerState:
    record = peer_status(peer_id, status.pop("reported_at", last_seen), **status)
    return swarm_pb2.PeerState(peer_id=peer_id, first_seen=0.0, last_seen=last_seen, last_step=5,
                               num_contributions=contributions, active=active, status=record)


def _states(swarm: FakeSwarm) -> dict[int, str]:
    peers = {p.peer_id: p for p in swarm.monitor.snapshot(swarm.now, fresh=True).state.peers}
    return {fake.index: state_of(peers[fake.peer_id]) for fake in swarm.peers if fake.peer_id in peers}


@pytest.mark.unit
def test_every_state_arises_from_what_the_peers_do(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=6)
    swarm.announcing.add(5)
    swarm.run(3)
    swarm.silent.add(1)                       # gone after the peer timeout
    swarm.run(int(PEER_TIMEOUT / ROUND_S) + 1)
    swarm.lagging.add(2)                      # its epoch stops while the others advance
    swarm.run(CFG.behind_epochs + 1)
    assert _states(swarm) == {0: "online", 1: "gone", 2: "behind", 3: "online", 4: "online", 5: "joining"}
    swarm.silent.add(4)                       # quiet for longer than silent_after_s: unreachable, not yet gone
    swarm.run(int(CFG.silent_after_s / ROUND_S) + 1)
    states = _states(swarm)
    assert states[4] == "unreachable" and states[1] == "gone"
    peers = {p.peer_id: p for p in swarm.monitor.snapshot(swarm.now, fresh=True).state.peers}
    assert peers[swarm.peers[2].peer_id].epoch_lag == CFG.behind_epochs + 1 + int(CFG.silent_after_s / ROUND_S) + 1


@pytest.mark.unit
def test_behind_compares_reports_of_about_the_same_time():
    # b reports a higher epoch only after a's report: a was not behind when it reported
    memories = {"a": PeerMemory(epochs=[(100.0, 10)]), "b": PeerMemory(epochs=[(90.0, 9), (105.0, 14)])}
    assert epoch_lags(memories, ["a", "b"]) == {"a": 0, "b": 0}
    memories["b"].epochs.insert(1, (95.0, 13))  # ... but had it said 13 before a said 10, a was 3 behind
    assert epoch_lags(memories, ["a", "b"]) == {"a": 3, "b": 0}
    memories["a"].epochs.insert(0, (50.0, 40))  # a's own earlier (pre-restart) epochs never count against it
    assert epoch_lags(memories, ["a"]) == {"a": 3}


@pytest.mark.unit
def test_silence_allowed_grows_with_the_peers_own_step_time():
    slow = [_peer("s", last_seen=100.0, step_seconds=20.0)]
    assert state_of(classify_peers(slow, {}, 159.0, CFG, "0.1.0")[0]) == "online"       # 3 steps = 60 s
    assert state_of(classify_peers(slow, {}, 161.0, CFG, "0.1.0")[0]) == "unreachable"
    fast = [_peer("f", last_seen=100.0, step_seconds=1.0)]
    assert state_of(classify_peers(fast, {}, 131.0, CFG, "0.1.0")[0]) == "unreachable"  # silent_after_s = 30 s
    assert classify_peers(fast, {}, 131.0, CFG, "0.1.0")[0].version_mismatch is False  # no version reported
    other = [_peer("v", version="0.0.9")]
    assert classify_peers(other, {}, 100.0, CFG, "0.1.0")[0].version_mismatch


@pytest.mark.unit
def test_swarm_alerts_stale_weights_and_no_peers():
    online = classify_peers([_peer("a", last_seen=500.0)], {}, 500.0, CFG, "0.1.0")
    assert swarm_conditions(online, None, 500.0, CFG, stale_after_s=60.0)  # online since 0 s, no round yet
    stale = swarm_conditions(online, None, 500.0, CFG, stale_after_s=600.0)
    assert stale == []
    gone = classify_peers([_peer("a", active=False)], {}, 500.0, CFG, "0.1.0")
    [condition] = swarm_conditions(gone, None, 500.0, CFG, stale_after_s=60.0)
    assert condition.kind == "no_peers" and "1 gone" in condition.message
    rejected = [(10.0, "x#1", "bad"), (20.0, "y#2", "worse")]
    [condition] = swarm_conditions([], None, 30.0, CFG, stale_after_s=60.0, rejected=rejected)
    assert condition.kind == "records_rejected" and condition.since == 10.0 and "y#2: worse" in condition.message


@pytest.mark.unit
def test_peer_alerts_say_what_is_wrong_and_since_when(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=3)
    swarm.run(2)
    swarm.failing.add(1)
    swarm.peers[2].version = "0.0.9"
    swarm.run(2)
    first_failure = swarm.now - ROUND_S - 0.5  # the status that first showed a rise
    alerts = {a.kind: a for a in swarm.monitor.snapshot(swarm.now).state.alerts}
    assert set(alerts) == {"averaging_failures", "version_mismatch"}
    failing = alerts["averaging_failures"]
    assert failing.peer_id == swarm.peers[1].peer_id and failing.started_at == first_failure
    assert "2 averaging failure(s)" in failing.message and "TimeoutError: no group" in failing.message
    assert "runs rankswarm 0.0.9, the coordinator 0.1.0" in alerts["version_mismatch"].message
    swarm.run(2)
    still = {a.kind: a for a in swarm.monitor.snapshot(swarm.now).state.alerts}["averaging_failures"]
    assert still.started_at == first_failure and "4 averaging failure(s)" in still.message


@pytest.mark.unit
def test_peer_shaping_with_old_or_local_baselines_is_flagged(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=1)
    swarm.run(CFG.stale_weights_rounds + 4)
    peer = swarm.monitor.snapshot(swarm.now).state.peers[0]
    rounds = [(r.record.issued_at, r.record.round) for r in swarm.results]
    latest = swarm.results[-1].record
    assert peer_conditions(peer, None, latest, swarm.now, CFG, coordinator_version="0.1.0", rounds_by_time=rounds) == []
    old = records.replace(peer, status=records.replace(peer.status, balance_round=1))
    [condition] = peer_conditions(old, None, latest, swarm.now, CFG, coordinator_version="0.1.0",
                                  rounds_by_time=rounds)
    assert condition.kind == "peer_stale_weights" and "round 1's weights" in condition.message
    local = records.replace(peer, status=records.replace(peer.status, balance_round=None, baselines_source="local"))
    [condition] = peer_conditions(local, None, latest, swarm.now, CFG, coordinator_version="0.1.0",
                                  rounds_by_time=rounds)
    assert "its local baselines" in condition.message


@pytest.mark.unit
def test_alerts_close_with_their_end_time_and_survive_a_restart(tmp_path):
    swarm = FakeSwarm(tmp_path, num_peers=2)
    swarm.run(2)
    swarm.silent.add(1)
    swarm.run(4)
    [alert] = swarm.monitor.snapshot(swarm.now).state.alerts
    assert alert.kind == "peer_unreachable"
    assert alert.started_at == START + ROUND_S + CFG.silent_after_s  # last seen in round 2, plus the allowed silence
    # a restarted coordinator (new monitor, same store) keeps the alert's start
    restarted = Monitor(swarm.ledger, swarm.events, CFG, version="0.1.0", round_interval=ROUND_S,
                        peer_timeout=PEER_TIMEOUT, max_age_s=0.0, now=swarm.now)
    assert list(restarted.snapshot(swarm.now).state.alerts) == [alert]
    swarm.monitor = restarted
    swarm.silent.discard(1)
    swarm.peers[1].epoch = swarm.peers[0].epoch  # it downloads the swarm's state as it returns
    swarm.run(1)
    assert list(swarm.monitor.snapshot(swarm.now).state.alerts) == []
    [resolved] = swarm.store.alerts(active=False)
    assert (resolved.key, resolved.started_at, resolved.ended_at) == (alert.key, alert.started_at, swarm.now)
    assert resolved.ended_round == swarm.results[-1].record.round


@pytest.mark.unit
def test_summary_adds_live_peers_and_averages_their_latest_numbers():
    peers = classify_peers([
        _peer("a", tokens_per_s=100.0, throughput=2.0, bytes_sent=1000, bytes_received=10, compression_ratio=10.0,
              reward=0.5, kl=0.1, epoch=7, averaging_failures=1, averaging_rounds=9, version="0.1.0"),
        _peer("b", tokens_per_s=300.0, throughput=4.0, bytes_sent=3000, bytes_received=30, compression_ratio=20.0,
              reward=-0.5, epoch=9, version="0.1.0"),
        _peer("c", active=False, tokens_per_s=999.0, throughput=9.0, bytes_sent=5, reward=9.0, version="0.0.1"),
    ], {}, 100.0, CFG, "0.1.0")
    summary = summarize(peers)
    assert summary.by_state == {"online": 2, "joining": 0, "behind": 0, "unreachable": 0, "gone": 1}
    assert (summary.tokens_per_s, summary.rollouts_per_s) == (400.0, 6.0)  # the gone peer is not counted
    assert (summary.bytes_sent, summary.bytes_received) == (4005, 40)    # traffic counts everyone
    assert summary.compression_ratio == pytest.approx((10 * 1000 + 20 * 3000) / 4000)
    assert summary.means["reward"] == 0.0 and summary.means["kl"] == 0.1 and summary.epoch == 9
    assert summary.versions == {"0.1.0": 2} and summary.averaging_failures == 1


@pytest.mark.unit
def test_summary_leaves_what_no_peer_measured_unknown_rather_than_zero():
    nobody = summarize(())
    assert (nobody.tokens_per_s, nobody.rollouts_per_s, nobody.bytes_sent, nobody.averaging_failures) == (
        None, None, None, None)
    assert all(value is None for value in nobody.means.values())
    # schema 1 had no averaging counters: its record reads 0 there, which was never counted
    old = _peer("old", schema_version=1, throughput=2.0, bytes_sent=10)
    without_kl = _peer("new", throughput=1.0, bytes_sent=20, averaging_rounds=4, averaging_failures=1, reward=0.5)
    summary = summarize(classify_peers([old, without_kl], {}, 100.0, CFG, ""))
    assert (summary.averaging_rounds, summary.averaging_failures, summary.bytes_sent) == (4, 1, 30)
    assert summary.means["kl"] is None and summary.means["reward"] == 0.5
    assert summarize(classify_peers([old], {}, 100.0, CFG, "")).averaging_failures is None


@pytest.mark.unit
def test_a_cached_snapshot_never_predates_the_latest_committed_round(tmp_path):
    """The monitor caches an evaluation for max_age_s; a round committed meanwhile must show at once (a client
    that ran or saw a round, then asked for the swarm's state, was served the state before it: ci24)."""
    swarm = FakeSwarm(tmp_path, num_peers=2).run(1)
    swarm.monitor.max_age_s = 3600.0
    before = swarm.monitor.snapshot(swarm.now)
    newcomer = FakeSwarm(tmp_path / "other", num_peers=3).peers[2]
    swarm.step_peer(newcomer, 1)
    result = swarm.ledger.ingest([newcomer.published[-1]], swarm.now + 1.0)  # committed, the monitor not told
    assert result is not None
    after = swarm.monitor.snapshot(swarm.now + 1.0)
    assert after.state.round == result.record.round > before.state.round
    assert newcomer.peer_id in {p.peer_id for p in after.state.peers}
    assert swarm.monitor.snapshot(swarm.now + 1.0) is after  # still one evaluation per max_age_s otherwise
