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
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.dht_records import BalanceRecord, expires_in, publish_balance
from plumbing.swarm_dht import DHTConfig, start_dht
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


def balance(identity: SigningIdentity, round_: int, value: float, issued_at: float) -> BalanceRecord:
    return BalanceRecord(run=RUN, round=round_, baselines=ready_baselines(value), lambda_t=1.0,
                         merged=stats(value), num_peers=2, num_contributions=2, issued_at=issued_at,
                         coordinator_key=identity.fingerprint)


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
        assert source.current()[1] == "local"  # nothing published yet: never waits
        record = balance(coordinator, 1, 7.0, get_dht_time())
        assert publish_balance(coord_dht, RUN, record, expires_in(60), identity=coordinator)
        assert wait_for(lambda: source.current()[1] == "global"), "the fresh record was never used"
        baselines, _ = source.current()
        assert baselines.value("er") == pytest.approx(record.baselines.value("er"))
    finally:
        source.stop()


def test_stale_or_foreign_records_leave_the_peer_on_its_local_ema(swarm):
    coordinator, coord_dht, peer_dht = swarm
    stale = balance(coordinator, 2, 3.0, get_dht_time() - 600)
    assert publish_balance(coord_dht, RUN, stale, expires_in(60), identity=coordinator)
    source = SwarmBaselines(LocalBaselines(ShapingConfig()), peer_dht, RUN, coordinator.fingerprint,
                            max_age_s=30, poll_interval_s=0.2).start()
    impostor = SwarmBaselines(LocalBaselines(ShapingConfig()), peer_dht, RUN, SigningIdentity.generate().fingerprint,
                              max_age_s=30, poll_interval_s=0.2).start()
    try:
        assert wait_for(lambda: source.latest is not None and source.latest.round == 2)
        assert source.current()[1] == "local"  # seen, but older than max_age_s
        time.sleep(1.0)
        assert impostor.latest is None and impostor.current()[1] == "local"  # signed by a key it does not trust
    finally:
        source.stop()
        impostor.stop()


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
