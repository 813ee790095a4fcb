"""Who takes whose state when peers' weights claims disagree (node.gossip.consensus).

The decision is pure and tested as such; `WeightsConsensus` is tested against two real
hivemind DHTs on loopback that sign and validate records like every rankswarm process.
"""

from __future__ import annotations

import time

import pytest
from hivemind.utils import get_dht_time

from node.gossip.consensus import WeightsConsensus, fingerprints_agree, outvoted
from plumbing.dht_keys import weights_key
from plumbing.dht_records import fetch, publish
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.swarm_dht import DHTConfig, start_dht, visible_addresses
from protos import records, swarm_pb2

RUN = "consensus-test"
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
SAME = [10.0, -4.0, 2.5]
NOISY = [10.0 + 1e-7, -4.0, 2.5]  # float noise between equal weights
MOVED = [10.01, -4.0, 2.5]  # one optimizer step apart


@pytest.mark.unit
def test_agreement_is_relative_to_the_fingerprint_scale():
    assert fingerprints_agree(SAME, NOISY, rtol=1e-5)
    assert not fingerprints_agree(SAME, MOVED, rtol=1e-5)
    assert fingerprints_agree(SAME, MOVED, rtol=1e-2)
    assert not fingerprints_agree(SAME, SAME[:2], rtol=1.0)  # different lengths never agree
    assert not fingerprints_agree([], [], rtol=1.0)


@pytest.mark.unit
@pytest.mark.parametrize("claims, losers", [
    ({"a": SAME, "b": NOISY}, set()),                        # equal up to float noise: nobody moves
    ({"a": SAME, "b": MOVED}, {"b"}),                        # a tie: the side without the smallest id moves
    ({"a": MOVED, "b": SAME, "c": NOISY}, {"a"}),            # the minority moves, even with the smallest id
    ({"a": SAME, "b": MOVED, "c": [0.0, 1.0, 2.0]}, {"b", "c"}),  # three versions: all but the smallest id
    ({"a": SAME}, set()),                                    # alone: nothing to compare with
])
def test_outvoted_peers_are_the_minority_or_lose_the_tie_break(claims, losers):
    assert {peer for peer in claims if outvoted(peer, claims, rtol=1e-5)} == losers


@pytest.mark.unit
def test_outvoted_needs_the_peers_own_claim():
    with pytest.raises(ValueError, match="no claim of 'z'"):
        outvoted("z", {"a": SAME}, rtol=1e-5)


@pytest.fixture(scope="module")
def two_dhts():
    alice, bob = SigningIdentity.generate(), SigningIdentity.generate()
    first = start_dht(DHTConfig(host_maddrs=LOOPBACK), record_validators=build_record_validators(alice, RUN))
    second = start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=visible_addresses(first)),
                       record_validators=build_record_validators(bob, RUN))
    try:
        yield (alice, first), (bob, second)
    finally:
        second.shutdown()
        first.shutdown()


def fetch_claims(dht, run: str = RUN):
    return fetch(dht, run, swarm_pb2.WeightsClaim)


def wait_for_claims(dht, count: int, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fetched = fetch_claims(dht)
        if len(fetched.records) >= count:
            return fetched
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} claims after {timeout}s: {fetch_claims(dht)}")


@pytest.mark.integration
def test_claims_travel_through_the_dht_and_only_the_loser_is_told_to_resync(two_dhts):
    (alice, alice_dht), (bob, bob_dht) = two_dhts
    checks = {who.fingerprint: WeightsConsensus(dht, RUN, who, rtol=1e-5, ttl_s=60)
              for who, dht in two_dhts}
    loser, winner = sorted(checks, reverse=True)  # a tie: the larger id downloads
    assert checks[winner].check() is None  # nothing claimed yet
    checks[winner].claim(3, SAME)
    checks[loser].claim(3, NOISY)
    checks[winner].claim(4, SAME)
    checks[loser].claim(4, MOVED)
    fetched = wait_for_claims(alice_dht, 4)
    wait_for_claims(bob_dht, 4)
    claimed = {(r.peer_id, r.epoch): list(r.fingerprint) for r in fetched.records}  # exact through the DHT
    assert claimed == {(winner, 3): SAME, (loser, 3): NOISY, (winner, 4): SAME, (loser, 4): MOVED}
    assert checks[winner].check() is None
    assert checks[loser].check() == 4  # the latest epoch both claimed decides
    assert checks[loser].disagreements == 1
    checks[loser].forget()  # it downloaded the winner's state at epoch 4 ...
    assert checks[loser].check() is None
    checks[loser].claim(4, SAME)  # ... and claims it; the newer claim replaces the old one
    deadline = time.monotonic() + 20
    while checks[loser].check() is not None or checks[winner].check() is not None:
        assert time.monotonic() < deadline, "the corrected claim never reached the DHT"
        time.sleep(0.2)


@pytest.mark.integration
def test_a_forged_claim_is_rejected_and_cannot_outvote_anyone(two_dhts):
    (alice, alice_dht), (bob, bob_dht) = two_dhts
    run = RUN + "-forged"
    for dht, who in ((alice_dht, alice), (bob_dht, bob)):
        for validator in build_record_validators(who, run)[1:]:
            dht.add_validators([validator])
    honest = WeightsConsensus(alice_dht, run, alice, rtol=1e-5, ttl_s=60)
    honest.claim(7, SAME)
    # bob signs a claim that names alice as its author, one that disagrees about its own epoch,
    # one whose fingerprint is NaN (encoded without validation, as a broken peer might), and garbage
    forged = records.build(swarm_pb2.WeightsClaim, run_id=run, peer_id=alice.fingerprint, epoch=7,
                           fingerprint=MOVED, published_at=1.0)
    mislabelled = records.replace(forged, peer_id=bob.fingerprint, epoch=8)
    not_finite = records.replace(forged, peer_id=bob.fingerprint, epoch=5, fingerprint=[float("nan"), 1.0])
    expiration = get_dht_time() + 60
    bob_dht.store(weights_key(run), records.encode(forged), expiration, subkey=bob.owner_subkey(7))
    bob_dht.store(weights_key(run), records.encode(mislabelled), expiration, subkey=bob.owner_subkey(9))
    bob_dht.store(weights_key(run), not_finite.SerializeToString(), expiration, subkey=bob.owner_subkey(5))
    bob_dht.store(weights_key(run), b"\x08\x01seven", expiration, subkey=bob.owner_subkey(6))
    deadline = time.monotonic() + 20
    while len(fetch_claims(alice_dht, run).rejected) < 4:
        assert time.monotonic() < deadline, fetch_claims(alice_dht, run)
        time.sleep(0.2)
    fetched = fetch_claims(alice_dht, run)
    assert [r.peer_id for r in fetched.records] == [alice.fingerprint]
    reasons = {r.subkey: r.reason for r in fetched.rejected}
    assert f"claims peer {alice.fingerprint}" in reasons[f"{bob.fingerprint}#7"]
    assert "says epoch 8 but its subkey says 9" in reasons[f"{bob.fingerprint}#9"]
    assert "WeightsClaim.fingerprint[0]: is nan" in reasons[f"{bob.fingerprint}#5"]
    assert "WeightsClaim" in reasons[f"{bob.fingerprint}#6"]
    assert honest.check() is None and honest.rejected >= 4
    with pytest.raises(ValueError, match="build it with peer_id=identity.fingerprint"):
        publish(bob_dht, forged, expiration, identity=bob)


@pytest.mark.integration
def test_a_download_is_not_taken_for_unclaimed_on_one_read_that_comes_back_empty(two_dhts, monkeypatch):
    """A DHT read cut short comes back without records: "nobody claimed this epoch" (so any downloaded state
    passes) is believed only after reads that say so for a second."""
    (alice, alice_dht), (bob, bob_dht) = two_dhts
    claimer = WeightsConsensus(alice_dht, RUN, alice, rtol=1e-5, ttl_s=60)
    checker = WeightsConsensus(bob_dht, RUN, bob, rtol=1e-5, ttl_s=60)
    claimer.claim(20, SAME)
    deadline = time.monotonic() + 20
    while alice.fingerprint not in checker.claims_at(20):
        assert time.monotonic() < deadline, "alice's claim never reached bob"
        time.sleep(0.2)
    read, cut_short = checker.claims_at, [True]

    def first_read_cut_short(epoch):
        if cut_short:
            cut_short.pop()
            return {}
        return read(epoch)

    monkeypatch.setattr(checker, "claims_at", first_read_cut_short)
    assert not checker.backed(20, MOVED)
    assert checker.backed(20, NOISY)
    assert checker.backed(21, MOVED)  # nobody claimed epoch 21: nothing to compare with
