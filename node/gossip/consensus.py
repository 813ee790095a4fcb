"""Do this peer's weights still match the swarm's? Decided from the peers' weights claims.

Peers that apply the same averaged update keep the same weights, but hivemind cannot promise
that every peer applies the same update: an all-reduce whose reducer times out hands some
members a partial average without raising, a state download can be labelled one epoch later
than the weights it brought, and a peer whose progress tracker has not yet seen the others may
step alone. So after every update each peer claims (epoch, parameter fingerprint) in the DHT;
before its next step it compares its latest claim with the others' claims for the same epoch.
A peer whose weights are backed by fewer peers than some other version (on a tie: the version
without the smallest peer id) takes the swarm's state. The decision is a pure function,
`outvoted`; `WeightsConsensus` keeps the claims and talks to the DHT.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from hivemind.utils import get_dht_time

from node.gossip.readings import Steady
from plumbing.dht_records import fetch, publish
from protos import records, swarm_pb2

log = logging.getLogger(__name__)


def fingerprint_gap(a: Sequence[float], b: Sequence[float]) -> float:
    """Largest difference between two fingerprints, as a share of their largest component
    (inf if they cannot be compared)."""
    if len(a) != len(b) or not a:
        return float("inf")
    scale = max(max(abs(x) for x in a), max(abs(x) for x in b), 1e-30)
    return max(abs(x - y) for x, y in zip(a, b)) / scale


def fingerprints_agree(a: Sequence[float], b: Sequence[float], rtol: float) -> bool:
    """True if two fingerprints differ by at most `rtol` of the larger one's largest component."""
    return fingerprint_gap(a, b) <= rtol


def outvoted(me: str, claims: Mapping[str, Sequence[float]], rtol: float) -> bool:
    """Should peer `me` take the swarm's state, given every peer's fingerprint at one epoch?

    Yes if some peer that disagrees with `me` is backed by more peers than `me` is, or by as many
    with the smallest peer id among them (a fixed tie-break, so two peers that disagree do not
    both download and swap states). Agreement is checked pairwise, so float noise between equal
    weights never splits a group."""
    if me not in claims:
        raise ValueError(f"no claim of {me!r} among the {len(claims)} given")
    backers = {peer: {other for other, fp in claims.items() if fingerprints_agree(claims[peer], fp, rtol)}
               for peer in claims}
    mine = backers[me]
    for peer, theirs in backers.items():
        if peer in mine:
            continue
        if len(theirs) > len(mine) or (len(theirs) == len(mine) and min(theirs) < min(mine)):
            return True
    return False


class WeightsConsensus:
    """Publishes this peer's weights claims and checks them against the other peers' claims."""

    def __init__(self, dht, run_id: str, identity, *, rtol: float, ttl_s: float, history: int = 8,
                 counts: Callable[[str], bool] = lambda peer: True):
        """`counts(fingerprint)`: whether an identity's claims count (admitted, or in an open swarm: not banned
        and training in the swarm); other claims are ignored, so identities made up to vote count for nothing."""
        self.counts = counts
        self.dht = dht
        self.run_id = run_id
        self.identity = identity
        self.rtol = rtol
        self.ttl_s = ttl_s
        self.history = history
        self._mine: OrderedDict[int, tuple[float, ...]] = OrderedDict()  # epoch -> fingerprint, oldest first
        self.disagreements = 0  # checks that found this peer outvoted
        self.rejected = 0  # malformed or forged claims, summed over checks (one stays until it expires)

    def claim(self, epoch: int, fingerprint: Sequence[float]) -> None:
        """Record and publish (without waiting) the weights this peer holds at `epoch`."""
        fingerprint = tuple(float(x) for x in fingerprint)
        self._mine[epoch] = fingerprint
        self._mine.move_to_end(epoch)
        while len(self._mine) > self.history:
            self._mine.popitem(last=False)
        record = records.build(swarm_pb2.WeightsClaim, run_id=self.run_id, peer_id=self.identity.fingerprint,
                               epoch=epoch, fingerprint=fingerprint, published_at=get_dht_time())
        try:
            publish(self.dht, record, get_dht_time() + self.ttl_s, identity=self.identity, timeout=None)
        except Exception as err:  # network boundary: an unpublished claim only means nobody can compare
            log.warning("could not publish the weights claim for epoch %d: %s", epoch, err)

    def forget(self) -> None:
        """Drop this peer's claims: its weights were just replaced (state download)."""
        self._mine.clear()

    def agreeing_peers(self, epoch: int) -> int:
        """How many other peers claim, for `epoch`, weights that agree with this peer's claim there."""
        mine = self._mine.get(epoch)
        if mine is None:
            return 0
        return sum(1 for fingerprint in self.claims_at(epoch).values()
                   if fingerprints_agree(fingerprint, mine, self.rtol))

    def claims_at(self, epoch: int) -> dict[str, tuple[float, ...]]:
        """The other counting identities' claims for `epoch` (peer -> fingerprint)."""
        fetched = fetch(self.dht, self.run_id, swarm_pb2.WeightsClaim)
        self.rejected += len(fetched.rejected)
        return {r.peer_id: tuple(r.fingerprint) for r in fetched.records
                if r.peer_id != self.identity.fingerprint and r.epoch == epoch and self.counts(r.peer_id)}

    def backed(self, epoch: int, fingerprint: Sequence[float]) -> bool:
        """Do the weights `fingerprint` agree with the version most counting identities claim at `epoch`?
        True when nobody else claimed that epoch (nothing to compare with), believed after reads that say
        so for a second: a DHT read cut short comes back without records, and one such read let a state
        that the claims refute through (seen in a test on a busy machine)."""
        nobody = Steady()
        while not (claims := self.claims_at(epoch)):
            if nobody.holds(True):
                return True
            time.sleep(0.2)
        # the version backed by the most identities; on a tie the one with the smallest peer id, as in `outvoted`
        backers = {peer: sorted(p for p, other in claims.items() if fingerprints_agree(claims[peer], other, self.rtol))
                   for peer in claims}
        winner = min(backers, key=lambda peer: (-len(backers[peer]), backers[peer][0]))
        return fingerprints_agree(fingerprint, claims[winner], self.rtol)

    def check(self) -> int | None:
        """The latest epoch at which both this peer and another claimed weights, if this peer lost there."""
        if not self._mine:
            return None
        fetched = fetch(self.dht, self.run_id, swarm_pb2.WeightsClaim)
        self.rejected += len(fetched.rejected)
        others: dict[int, dict[str, tuple[float, ...]]] = {}
        for record in fetched.records:
            if record.peer_id != self.identity.fingerprint and self.counts(record.peer_id):
                others.setdefault(record.epoch, {})[record.peer_id] = tuple(record.fingerprint)
        for epoch in reversed(self._mine):
            if epoch not in others:
                continue
            claims = {**others[epoch], self.identity.fingerprint: self._mine[epoch]}
            if outvoted(self.identity.fingerprint, claims, self.rtol):
                self.disagreements += 1
                return epoch
            return None
        return None
