"""A peer shapes with the coordinator's baselines only when they are signed, fresh and ready.

Real hivemind DHT on 127.0.0.1; the coordinator is just its signing identity publishing
balance records, so each case controls what the peer can see.
"""

from __future__ import annotations

import time

import pytest
import torch
from hivemind.utils import get_dht_time

from node.swarm.baselines import SwarmBaselines
from node.training.seams import LocalBaselines
from plumbing.dht_keys import balance_key
from plumbing.dht_records import expires_in, fetch_balance_result, publish
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.swarm_dht import DHTConfig, start_dht
from protos import records, swarm_pb2
from shaping import Baselines, IndicatorStats, RankIndicators, ShapingConfig

pytestmark = pytest.mark.integration
RUN = "baselines-test"


def stats(value: float) -> IndicatorStats:
    column = torch.full((4,), value, dtype=torch.float64)
    return IndicatorStats.from_batch(RankIndicators(column, column, column), column, torch.full((4,), 0.5))


def ready_baselines(value: float) -> Baselines:
    cfg = ShapingConfig()
    return Baselines.initial(cfg).update(stats(value), cfg)


@pytest.fixture(scope="module")
def swarm():
    coordinator = SigningIdentity.generate()
    peer = SigningIdentity.generate()
    coord_dht = start_dht(DHTConfig(host_maddrs=["/ip4/127.0.0.1/tcp/0"]),
                          record_validators=build_record_validators(coordinator, RUN))
    maddrs = [str(a) for a in coord_dht.get_visible_maddrs()]
    peer_dht = start_dht(DHTConfig(host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=maddrs),
                         record_validators=build_record_validators(peer, RUN))
    yield coordinator, coord_dht, peer_dht
    peer_dht.shutdown()
    coord_dht.shutdown()


def balance(identity: SigningIdentity, round_: int, value: float, issued_at: float) -> swarm_pb2.BalanceWeights:
    return records.build(swarm_pb2.BalanceWeights, run_id=RUN, round=round_,
                         baselines=records.baselines_message(ready_baselines(value)), lambda_t=1.0,
                         merged=records.stats_message(stats(value)), num_peers=2, num_contributions=2,
                         issued_at=issued_at, coordinator_key=identity.fingerprint)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_local_until_a_signed_fresh_record_arrives_then_global(swarm):
    coordinator, coord_dht, peer_dht = swarm
    source = SwarmBaselines(LocalBaselines(ShapingConfig()), peer_dht, RUN, coordinator.fingerprint,
                            max_age_s=30, poll_interval_s=0.2).start()
    try:
        assert source.current() == (source.local.baselines, "local", None)  # nothing published yet: never waits
        record = balance(coordinator, 1, 7.0, get_dht_time())
        assert publish(coord_dht, record, expires_in(60), identity=coordinator)
        assert wait_for(lambda: source.current()[1] == "global"), "the fresh record was never used"
        assert source.latest == record  # the record crossed the DHT as protobuf bytes, unchanged
        choice = source.current()
        assert choice.baselines == ready_baselines(7.0)  # the exact EMA state, not just the displayed m_k
        assert 0 <= choice.global_age_s <= get_dht_time() - record.issued_at
    finally:
        source.stop()


def test_stale_or_foreign_records_leave_the_peer_on_its_local_ema(swarm):
    coordinator, coord_dht, peer_dht = swarm
    stale = balance(coordinator, 2, 3.0, get_dht_time() - 600)
    assert publish(coord_dht, stale, expires_in(60), identity=coordinator)
    source = SwarmBaselines(LocalBaselines(ShapingConfig()), peer_dht, RUN, coordinator.fingerprint,
                            max_age_s=30, poll_interval_s=0.2).start()
    impostor = SwarmBaselines(LocalBaselines(ShapingConfig()), peer_dht, RUN, SigningIdentity.generate().fingerprint,
                              max_age_s=30, poll_interval_s=0.2).start()
    try:
        assert wait_for(lambda: source.latest is not None and source.latest.round == 2)
        choice = source.current()
        assert choice.source == "local" and choice.global_age_s >= 600  # seen, but older than max_age_s
        time.sleep(1.0)
        assert impostor.latest is None and impostor.current()[1] == "local"  # signed by a key it does not trust
    finally:
        source.stop()
        impostor.stop()


def test_a_corrupt_or_old_format_balance_record_is_rejected_with_a_reason_and_never_used(swarm):
    coordinator, coord_dht, peer_dht = swarm
    run = RUN + "-corrupt"
    for dht in (coord_dht, peer_dht):
        dht.add_validators(build_record_validators(coordinator, run)[1:])
    good = records.replace(balance(coordinator, 5, 2.0, get_dht_time()), run_id=run)
    truncated = records.encode(good)[:-1]
    # the coordinator's own key signs these, so only rankswarm's validation stands in their way
    for value in (truncated, {"round": 5, "run": run}):  # cut short, and a dict as rankswarm 0.1 wrote
        assert coord_dht.store(balance_key(run), value, expires_in(60), subkey=coordinator.owner_subkey())
        deadline = time.monotonic() + 10
        while not (fetched := fetch_balance_result(peer_dht, run, coordinator.fingerprint)).rejected:
            assert time.monotonic() < deadline, "the bad record never arrived"
            time.sleep(0.1)
        assert fetched.records == [] and fetched.reachable
        [(subkey, reason, _)] = fetched.rejected
        assert subkey == coordinator.fingerprint and "BalanceWeights" in reason
    assert "msgpack dict" in reason  # the old format is named as such
    assert publish(coord_dht, good, expires_in(60), identity=coordinator)
    assert wait_for(lambda: fetch_balance_result(peer_dht, run, coordinator.fingerprint).records == [good])


def test_a_dead_dht_never_blocks_the_training_step(swarm):
    coordinator, _, _ = swarm
    lonely = start_dht(DHTConfig(host_maddrs=["/ip4/127.0.0.1/tcp/0"]),
                       record_validators=build_record_validators(SigningIdentity.generate(), RUN))
    source = SwarmBaselines(LocalBaselines(ShapingConfig()), lonely, RUN, coordinator.fingerprint,
                            max_age_s=30, poll_interval_s=0.2).start()
    try:
        lonely.shutdown()  # every poll now fails
        started = time.perf_counter()
        for _ in range(100):
            assert source.current()[1] == "local"
            source.observe(stats(1.0))
        assert time.perf_counter() - started < 0.5
        assert wait_for(lambda: source.failures >= 1, timeout=5.0), "poll failures were not counted"
    finally:
        source.stop()
