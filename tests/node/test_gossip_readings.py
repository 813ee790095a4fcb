"""`Steady`, `RecentMax` and `RoundSize` (node/gossip/readings.py): how far readings of the DHT are believed."""

import pytest

from node.gossip import readings
from node.gossip.readings import RecentMax, RoundSize, Steady


def test_a_condition_is_believed_only_after_it_held_without_a_break(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(readings.time, "monotonic", lambda: now[0])
    alone = Steady(seconds=1.0)
    assert not alone.holds(True)  # one read is no evidence
    now[0] += 0.6
    assert not alone.holds(True)
    now[0] += 0.5
    assert alone.holds(True)  # 1.1 s of reads that said so
    assert not alone.holds(False)  # a read that says otherwise starts it over
    now[0] += 0.1
    assert not alone.holds(True)
    now[0] += 1.0
    assert alone.holds(True)


def test_a_recent_max_drops_only_once_the_larger_reading_is_older_than_its_window(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(readings.time, "monotonic", lambda: now[0])
    peers = RecentMax(seconds=6.0)
    assert peers.note(3) == 3
    now[0] += 1.0
    assert peers.note(2) == 3  # one read short of a peer: still three
    now[0] += 4.0
    assert peers.note(2) == 3
    now[0] += 1.5
    assert peers.note(2) == 2  # the last read of three is 6.5 s old
    assert peers.note(4) == 4  # a rise counts at once


def test_the_round_size_counts_the_expected_peers_until_reads_have_shown_them_once(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(readings.time, "monotonic", lambda: now[0])
    size = RoundSize(expected=3, memory_s=5.0)
    assert size.note(1) == 3  # startup: the others' records come after their first steps
    now[0] += 30.0
    assert size.note(2) == 3  # however long it takes
    assert size.note(3) == 3
    now[0] += 6.0
    assert size.note(2) == 2  # formed: a peer that left (or was refused) stops counting after 5 s
    assert RoundSize(expected=1, memory_s=5.0).note(1) == 1


def progress_records(*entries: tuple[int, int, float, float]) -> dict:
    """Progress records of made-up peers, one per (epoch, samples, samples per second, seconds ago)."""
    from hivemind.utils import ValueWithExpiration, get_dht_time

    now = get_dht_time()
    return {f"peer{i}".encode(): ValueWithExpiration(
        {"peer_id": f"peer{i}".encode(), "epoch": epoch, "samples_accumulated": samples,
         "samples_per_second": rate, "time": now - ago, "client_mode": False}, now + 60)
        for i, (epoch, samples, rate, ago) in enumerate(entries)}


@pytest.fixture(scope="module")
def dht():
    from plumbing.swarm_dht import DHTConfig, start_dht

    dht = start_dht(DHTConfig(host_maddrs=["/ip4/127.0.0.1/tcp/0"]))
    yield dht
    dht.shutdown()


def test_exact_rounds_are_due_when_the_samples_are_there_not_when_rates_extrapolate_there(dht):
    """diloco peers report H steps of samples in one burst: hivemind extrapolates each record by its rate, and a
    round became due while the last peer was still training (a WAN run: two peers averaged without it). With
    exact rounds only reported samples count, and a peer that has reported re-reads the records soon."""
    from hivemind.utils import get_dht_time

    from node.gossip.hivemind_internals.optimizer import TrustingProgressTracker

    # two peers reported their 4,096; the third reported nothing since its last round 50 s ago, at 100 samples/s
    waiting = progress_records((0, 4096, 100.0, 1.0), (0, 4096, 100.0, 1.0), (0, 0, 100.0, 50.0))
    hivemind_way = TrustingProgressTracker(dht, "exact-off", 12288, trusted=lambda records: records, start=False)
    assert hivemind_way._parse_swarm_progress_data(waiting).eta_next_epoch <= get_dht_time()  # due: extrapolated

    exact = TrustingProgressTracker(dht, "exact-on", 12288, trusted=lambda records: records, straggler_wait_s=30.0,
                                    start=False)
    assert exact._parse_swarm_progress_data(waiting).eta_next_epoch == float("inf")
    exact.global_progress.next_fetch_time = get_dht_time() + 10  # planned while it trained
    exact.report_local_progress(0, 4096)  # this peer is one of the two that wait: it reads the records at once
    assert exact.global_state_updated.is_set() and exact.global_progress.next_fetch_time <= get_dht_time()
    progress = exact._parse_swarm_progress_data(waiting)
    assert progress.next_fetch_time <= get_dht_time() + exact.min_refresh_period
    arrived = progress_records((0, 4096, 100.0, 1.0), (0, 4096, 100.0, 1.0), (0, 4096, 100.0, 0.1))
    assert exact._parse_swarm_progress_data(arrived).eta_next_epoch <= get_dht_time()


def test_an_exact_round_goes_ahead_without_a_straggler_once_the_peer_has_waited_long_enough(dht):
    """A peer that dropped the last round (or downloaded) reports its samples only H steps later: the peers that
    reported wait gossip.straggler_wait_s for it, then round without it, two of them at least."""
    from hivemind.utils import get_dht_time

    from node.gossip.hivemind_internals.optimizer import TrustingProgressTracker

    tracker = TrustingProgressTracker(dht, "straggler", 12288, trusted=lambda records: records,
                                      straggler_wait_s=30.0, start=False)
    tracker.report_local_progress(0, 4096)
    two_reported = progress_records((0, 4096, 100.0, 1.0), (0, 4096, 100.0, 1.0), (0, 0, 100.0, 5.0))
    assert tracker._parse_swarm_progress_data(two_reported).eta_next_epoch == float("inf")  # not waited yet
    tracker.arrived_at = get_dht_time() - 31
    assert tracker._parse_swarm_progress_data(two_reported).eta_next_epoch <= get_dht_time()
    alone = progress_records((0, 4096, 100.0, 1.0), (0, 0, 100.0, 5.0), (0, 0, 100.0, 5.0))
    assert tracker._parse_swarm_progress_data(alone).eta_next_epoch == float("inf")  # nobody to round with
    tracker.report_local_progress(1, 0)  # the round is over: the next wait starts at the next report
    assert tracker.arrived_at is None


def test_a_target_per_peer_counts_the_records_of_the_round_but_never_exceeds_the_fixed_target(dht):
    """TrustingProgressTracker with gossip.target_batch_per_peer: the target follows the records within an epoch
    of the newest (a refused peer stuck far behind counts for nothing), capped at target_batch_size, so that
    progress records of free extra identities cannot raise it and slow the honest peers' rounds."""
    from node.gossip.hivemind_internals.optimizer import TrustingProgressTracker

    tracker = TrustingProgressTracker(dht, "target-cap", 500, trusted=lambda records: records, per_peer=100,
                                      expected_peers=1, start=False)
    assert tracker.target_batch_size == 100  # until a read

    def at(*epochs: int) -> dict:
        return progress_records(*[(epoch, 0, 1.0, 0.0) for epoch in epochs])

    tracker._parse_swarm_progress_data(at(0, 1))
    assert tracker.target_batch_size == 300  # itself and both others (one an epoch ahead)
    tracker._parse_swarm_progress_data(at(*[0] * 20))  # twenty identities: the cap, not 2,100
    assert tracker.target_batch_size == 500
    tracker.round_size = RoundSize(1, memory_s=0.0)  # forget the larger reads at once
    tracker.report_local_progress(5, 0)
    tracker._parse_swarm_progress_data(at(5, 0))  # a partner at this peer's epoch, one stuck at 0
    assert tracker.target_batch_size == 200
