"""The demo summary's weights line: computed from the fingerprints the peers log."""

import pytest

from rankswarm.demo import weights_agreement

pytestmark = pytest.mark.unit


def row(epoch, fingerprint, kind="train"):
    return {"kind": kind, "epoch": epoch, "param_fingerprint": fingerprint}


def test_the_last_epoch_all_peers_logged_decides():
    peer0 = [row(1, [1.0, 2.0]), row(2, [1.5, 2.5]), row(3, [9.0, 9.0])]
    peer1 = [row(1, [1.0, 2.0]), row(2, [1.5, 2.5 + 1e-8]), {"kind": "eval", "epoch": 3}]
    epoch, gap = weights_agreement([peer0, peer1])
    assert epoch == 2 and gap == pytest.approx(1e-8 / 2.5)


def test_apart_weights_show_their_gap_and_no_shared_epoch_gives_none():
    assert weights_agreement([[row(4, [10.0, 0.0])], [row(4, [10.0, 1.0])], [row(4, [10.0, 0.5])]]) == (4, 0.1)
    assert weights_agreement([[row(1, [1.0])], [row(2, [1.0])]]) is None
    assert weights_agreement([[row(1, [1.0])], [row(1, None)]]) is None
    assert weights_agreement([]) is None


def test_a_settle_row_stands_for_its_epoch():
    # a peer that lost the last round (train row apart) and repaired it while settling
    peer0 = [row(5, [1.0, 2.0]), row(5, [1.0, 2.0], kind="settle")]
    peer1 = [row(5, [1.0, 2.5]), row(5, [1.0, 2.0], kind="settle")]
    assert weights_agreement([peer0, peer1]) == (5, 0.0)
    # a peer behind at its last step that downloaded the newer state while settling
    peer2 = [row(4, [0.5, 2.0]), row(5, [1.0, 2.0], kind="settle")]
    assert weights_agreement([peer0, peer2]) == (5, 0.0)
