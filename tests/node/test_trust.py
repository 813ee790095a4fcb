"""Whom a peer believes: vouched epochs, refused identities, the averagers' allow list (node.gossip.trust)."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from node.gossip.trust import AllowList, Progress, follow_ceiling, group_epoch, peers_in_round, trusted_progress

pytestmark = pytest.mark.unit


def _progress(**epochs: int) -> dict[str, Progress]:
    return {f"sub-{name}": Progress(name, epoch, name.encode()) for name, epoch in epochs.items()}


def test_the_group_epoch_is_the_highest_at_or_above_mine_that_two_identities_report():
    assert group_epoch({"me": 7, "a": 7, "b": 9, "c": 10**9}, 7) == 7
    assert group_epoch({"me": 3, "a": 5, "b": 5, "c": 6}, 3) == 5
    assert group_epoch({"me": 7, "a": 5, "b": 5}, 7) is None  # a group behind is not one to follow
    assert group_epoch({"me": 5, "a": 7}, 5) is None


def test_a_peer_with_a_group_ignores_any_lone_leader():
    records = _progress(me=7, honest=7, liar=10**9, ahead=8)
    kept = trusted_progress(records, "me", 7, lambda fp: None, max_lead=2)
    assert {p.owner for p in kept.values()} == {"me", "honest"}  # one epoch ahead alone is not followed
    kept = trusted_progress(_progress(me=3, a=5, b=5, c=6), "me", 3, lambda fp: None, max_lead=2)
    assert {p.owner for p in kept.values()} == {"me", "a", "b"}  # a group ahead is, a lone one beyond it not


def test_a_peer_without_a_group_follows_the_nearest_lone_leader_within_reach():
    behind = trusted_progress(_progress(me=3, other=5), "me", 3, lambda fp: None, max_lead=2)
    assert {p.owner for p in behind.values()} == {"me", "other"}  # the other of a pair that missed a round
    # behind two lone peers, it follows the nearer: not the one further ahead
    split = trusted_progress(_progress(me=3, honest=4, mallory=5), "me", 3, lambda fp: None, max_lead=2)
    assert {p.owner for p in split.values()} == {"me", "honest"}
    far = trusted_progress(_progress(me=3, liar=6), "me", 3, lambda fp: None, max_lead=2)
    assert {p.owner for p in far.values()} == {"me"}


def test_a_peer_whose_group_cannot_round_follows_as_if_alone():
    """Its partner at its epoch makes every round fail (sends NaN, say): waiting for it would stall for good."""
    records = _progress(me=3, nan_sender=3, honest=4)
    assert {p.owner for p in trusted_progress(records, "me", 3, lambda fp: None, 2).values()} == {"me", "nan_sender"}
    stuck = trusted_progress(records, "me", 3, lambda fp: None, 2, group_stuck=True)
    assert {p.owner for p in stuck.values()} == {"me", "nan_sender", "honest"}


def test_a_stuck_peer_does_not_follow_a_lone_record_whose_epoch_nobody_served():
    """ci43: an honest pair's rounds failed twice under load, both followed a liar one epoch ahead and downloaded
    each other's state, again and again. Once a download from epoch 3 brought nothing newer while the swarm
    claimed 4, a lone record at 4 is not followed from 3; one further ahead (within reach) still is."""
    honest = lambda fp: None  # noqa: E731
    records = _progress(me=3, peer=3, liar=4)
    stuck = trusted_progress(records, "me", 3, honest, 2, group_stuck=True)
    assert {p.owner for p in stuck.values()} == {"me", "peer", "liar"}
    served_nothing = trusted_progress(records, "me", 3, honest, 2, group_stuck=True, unserved=4)
    assert {p.owner for p in served_nothing.values()} == {"me", "peer"}
    further = trusted_progress(_progress(me=3, peer=3, liar=4, leader=5), "me", 3, honest, 2, group_stuck=True,
                               unserved=4)
    assert {p.owner for p in further.values()} == {"me", "peer", "liar", "leader"}
    assert follow_ceiling({"me": 3, "liar": 4}, 3, 2, unserved=None) == 4


def test_a_peer_with_nobody_at_its_epoch_follows_a_lone_record_a_download_found_unserved():
    """ci (stop 24): a peer behind marked its honest partner's epoch unserved (the partner, downloading itself,
    served nobody for a moment); with nobody else at its epoch it never followed again, and the two dropped
    every round waiting for each other. Alone at its epoch, a peer follows: rounding is not an option."""
    honest = lambda fp: None  # noqa: E731
    assert follow_ceiling({"me": 1, "partner": 2}, 1, 2, unserved=2) == 2
    assert {p.owner for p in trusted_progress(_progress(me=1, partner=2), "me", 1, honest, 2,
                                              unserved=2).values()} == {"me", "partner"}
    assert follow_ceiling({"me": 1, "peer": 1, "liar": 2}, 1, 2, group_stuck=True, unserved=2) == 1


def test_the_download_ratchet_does_not_turn():
    """A lone leader two epochs ahead of an honest pair that split: the peer behind follows its honest partner,
    and once the pair is together again neither follows the leader, wherever it goes."""
    honest = lambda fp: None  # noqa: E731
    assert {p.owner for p in trusted_progress(_progress(me=2, peer=3, mallory=4), "me", 2, honest, 2).values()} \
        == {"me", "peer"}
    for lead in (1, 2, 3):
        kept = trusted_progress(_progress(me=3, peer=3, mallory=3 + lead), "me", 3, honest, 2)
        assert {p.owner for p in kept.values()} == {"me", "peer"}


def test_refused_identities_are_ignored_but_a_peer_always_believes_itself():
    refused = {"mallory": "banned", "me": "banned"}
    kept = trusted_progress(_progress(me=1, honest=1, mallory=1), "me", 1, refused.get, max_lead=2)
    assert {p.owner for p in kept.values()} == {"me", "honest"}


def _allows_in_child(allow: AllowList, changed, answers) -> None:
    answers.put((allow.allows(b"bob"), allow.allows(b"mallory")))  # before the parent restricts anyone
    changed.wait(30)
    answers.put((allow.allows(b"bob"), allow.allows(b"mallory")))


def test_the_allow_list_set_in_the_parent_reaches_a_forked_process_and_allows_everyone_until_set():
    fork = mp.get_context("fork")
    allow, changed, answers = AllowList(), fork.Event(), fork.Queue()
    child = fork.Process(target=_allows_in_child, args=(allow, changed, answers))  # forked first, as averagers are
    child.start()
    assert answers.get(timeout=30) == (True, True)
    allow.set({b"alice", b"bob"})
    changed.set()
    assert answers.get(timeout=30) == (True, False)
    child.join(30)
    assert allow.allows(b"alice") and not allow.allows(b"mallory")
    allow.set(None)
    assert allow.allows(b"mallory")


def _donates_in_child(allow: AllowList, changed, answers) -> None:
    for _ in range(3):
        changed.wait(30)
        changed.clear()
        answers.put(tuple(allow.donates(peer) for peer in (b"alice", b"bob", b"mallory")))


def test_a_donor_list_set_in_the_parent_narrows_the_downloads_of_a_forked_process_until_cleared():
    fork = mp.get_context("fork")
    allow, changed, answers = AllowList(), fork.Event(), fork.Queue()
    child = fork.Process(target=_donates_in_child, args=(allow, changed, answers))
    child.start()
    allow.set({b"alice", b"bob"})  # mallory is not allowed at all: no donor list lets it donate
    changed.set()
    assert answers.get(timeout=30) == (True, True, False)
    allow.set_donors({b"alice", b"mallory"})  # for one download: alice only of the allowed
    changed.set()
    assert answers.get(timeout=30) == (True, False, False)
    allow.set_donors(set())  # nobody to download from is nobody, not everyone
    changed.set()
    assert answers.get(timeout=30) == (False, False, False)
    child.join(30)
    assert allow.allows(b"bob")  # the donor list narrows downloads only
    allow.set_donors(None)
    assert allow.donates(b"bob")


def _deny_in_child(allow: AllowList, peer: bytes, seconds: float) -> None:
    allow.deny(peer, seconds)  # as a reducer in an averager's child process does when it catches a peer


def test_a_peer_denied_in_one_process_is_refused_in_all_until_its_denial_ends():
    fork = mp.get_context("fork")
    allow = AllowList()
    allow.set({b"alice", b"mallory"})
    child = fork.Process(target=_deny_in_child, args=(allow, b"mallory", 0.6))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert not allow.allows(b"mallory") and allow.allows(b"alice")
    allow.set(None)  # the admission list changing allows it no sooner
    assert not allow.allows(b"mallory") and set(allow.denied()) == {b"mallory"}
    deadline = time.monotonic() + 10
    while not allow.allows(b"mallory"):
        assert time.monotonic() < deadline, "the denial never ended"
        time.sleep(0.1)
    assert allow.denied() == {}


def test_a_full_denial_list_keeps_the_denials_that_end_last():
    class SmallAllowList(AllowList):
        DENIED_BYTES = 2048  # about 20 denials

    allow = SmallAllowList()
    allow.deny(b"old", 1000.0)
    peers = [i.to_bytes(38, "big") for i in range(40)]  # more than fit
    for peer in peers:
        allow.deny(peer, 2000.0)
    denied = allow.denied()
    assert b"old" not in denied and peers[-1] in denied
    assert 0 < len(denied) < len(peers)
    allow.deny(peers[-1], 1.0)  # a shorter denial never shortens a longer one
    assert allow.denied()[peers[-1]] > time.time() + 1000


def test_the_peers_in_a_round_are_those_within_one_epoch_of_the_newest():
    assert peers_in_round([], 3) == 1  # alone
    assert peers_in_round([5, 5], 5) == 3
    assert peers_in_round([5, 4], 5) == 3  # one behind downloads and joins
    assert peers_in_round([5, 2], 5) == 2  # stuck three behind (refused for NaN): not counted
    assert peers_in_round([7, 7], 5) == 3  # this peer behind counts itself: it downloads and joins
    assert peers_in_round([7, 3], 7) == 2
