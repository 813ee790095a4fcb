"""Whom a peer trusts in the swarm: the operator's admission list, and what progress records may claim.

Every byte from the network may lie (docs/security.md). Three rules, all applied by each honest
peer on its own:

- **Admission.** `refused(fingerprint)` ("banned", "not_admitted" or None) comes from the
  coordinator-signed admission list (`node.swarm.admission.AdmissionView`). A refused identity's
  progress records, weights claims and averaging traffic are ignored.
- **Whom to follow.** A progress record may claim any epoch; hivemind believes the highest, so
  one record with a huge epoch would make every peer think it is behind and download the state
  of whoever advertises it. Here a peer follows the most advanced *group*: the highest epoch at
  or above its own that two identities (this peer included) report. A lone record above that
  group is ignored, however close: a peer with someone to average with has no reason to take
  one identity's word for the swarm's state (a peer that followed a lone leader would report
  the leader's epoch and so vouch for it, and the leader could pull the swarm along one
  download at a time; docs/security.md). Only a peer with no group at or above its epoch (the
  other of a pair that missed a round) follows the nearest lone record above it, and only up
  to `max_lead` epochs ahead (`trusted_progress`). So does a peer whose group cannot round: its
  rounds at its epoch failed `gossip.group_patience_rounds` times in a row (a partner that sends
  NaN makes every round of the two fail), since waiting for that group would stall it for good.
  But not a record whose epoch a download of this peer's found nobody serving, while someone
  else is at its epoch: an honest pair whose rounds failed twice under load would otherwise
  follow a liar one epoch ahead, download each other's state, and fail the next rounds the same
  way (ci43).
- **Who averages.** The libp2p peers a peer may average with or download from are those that
  trusted progress records name (`AllowList`, shared with the averagers' child processes, which
  refuse anyone else's joins, parts and state; hivemind_internals/averagers.py). Until the
  admission list restricts anything, everybody is allowed, as hivemind does.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from plumbing.dht_keys import parse_subkey

log = logging.getLogger(__name__)

Refusal = Callable[[str], str | None]  # key fingerprint -> "banned", "not_admitted" or None


class Admission(Protocol):
    """Who may take part, as this peer last read it (node.swarm.admission.AdmissionView)."""

    @property
    def restricts(self) -> bool:
        """Someone is refused (a closed swarm, or a ban): averagers then talk only to trusted peers."""

    def refused(self, fingerprint: str) -> str | None:
        """"banned", "not_admitted" or None."""


class OpenSwarm:
    """No admission list: nobody is refused (a swarm without a coordinator, or before its list arrives)."""

    restricts = False

    def refused(self, fingerprint: str) -> str | None:
        return None


@dataclass(frozen=True)
class Progress:
    """One peer's progress record, as far as trust goes."""

    owner: str  # fingerprint of the key that signed it (its subkey)
    epoch: int
    libp2p_id: bytes  # the averager's libp2p peer id the record names


def read_progress(entries: Mapping[object, object]) -> dict[object, Progress]:
    """Parse hivemind's progress records (subkey -> value) that are well-formed and signed by an owner key."""
    from hivemind.optim.progress_tracker import LocalTrainingProgress

    parsed = {}
    for subkey, value in entries.items():
        try:
            progress = LocalTrainingProgress.parse_obj(getattr(value, "value", value))
            parsed[subkey] = Progress(parse_subkey(subkey).owner, progress.epoch, bytes(progress.peer_id))
        except Exception:  # network boundary: withdrawn (None), malformed or unowned records count for nothing
            continue
    return parsed


def group_epoch(epochs: Mapping[str, int], my_epoch: int) -> int | None:
    """The highest epoch at or above `my_epoch` that at least two identities report (`epochs`
    includes this peer's own), or None if every identity at or above it is alone at its epoch."""
    counts = Counter(epoch for epoch in epochs.values() if epoch >= my_epoch)
    return max((epoch for epoch, n in counts.items() if n >= 2), default=None)


def peers_in_round(others: Iterable[int], my_epoch: int) -> int:
    """How many peers the swarm's next round counts on, given the other peers' epochs: this one and those
    within one epoch of the newest (a peer one behind downloads and joins; one further behind is stuck)."""
    others = list(others)
    newest = max([my_epoch, *others])
    return 1 + sum(epoch >= newest - 1 for epoch in others)


def follow_ceiling(epochs: Mapping[str, int], my_epoch: int, max_lead: int, group_stuck: bool = False,
                   unserved: int | None = None) -> int:
    """The highest epoch a peer at `my_epoch` believes, given every identity's epoch (its own included).
    `group_stuck`: this peer's rounds at its epoch keep failing, so its group counts for nothing.
    `unserved`: a download from `my_epoch` found nobody serving the state of the epochs up to this one,
    so a lone record there is a claim without state: following it would only download again (ci43).
    That holds only while another identity is at `my_epoch`: a peer with nobody to round with has no
    way on but to follow (two honest peers would otherwise wait for each other's rounds for good)."""
    group = None if group_stuck else group_epoch(epochs, my_epoch)
    if group is not None:
        return group
    partnered = sum(epoch == my_epoch for epoch in epochs.values()) >= 2
    floor = my_epoch if unserved is None or not partnered else max(my_epoch, unserved)
    nearest = min((epoch for epoch in epochs.values() if epoch > floor), default=my_epoch)
    return nearest if nearest <= my_epoch + max_lead else my_epoch


def admitted(progress: Mapping[object, Progress], me: str, refused: Refusal) -> dict[object, Progress]:
    """The records of identities that may take part (this peer's own always)."""
    return {subkey: p for subkey, p in progress.items() if p.owner == me or refused(p.owner) is None}


def trusted_progress(progress: Mapping[object, Progress], me: str, my_epoch: int, refused: Refusal,
                     max_lead: int, group_stuck: bool = False, unserved: int | None = None) -> dict[object, Progress]:
    """The records to believe: not refused, and not above the epoch this peer follows (`follow_ceiling`)."""
    allowed = admitted(progress, me, refused)
    epochs = {p.owner: p.epoch for p in allowed.values() if p.owner != me}
    epochs[me] = my_epoch
    ceiling = follow_ceiling(epochs, my_epoch, max_lead, group_stuck, unserved)
    kept = {subkey: p for subkey, p in allowed.items() if p.epoch <= ceiling or p.owner == me}
    for p in allowed.values():
        if p.epoch > ceiling and p.owner != me:
            # a lone leader just ahead is routine (a peer whose round failed steps alone); far ahead is a lie
            level = logging.WARNING if p.epoch > my_epoch + max_lead else logging.DEBUG
            log.log(level, "not following the progress record of %s: epoch %d, which no one else reports "
                    "(following epoch %d)", p.owner, p.epoch, ceiling)
    return kept


class AllowList:
    """The libp2p peers this peer's averagers may talk to, shared with their child processes.

    Written by the peer's main process (`set`), read in the averagers' processes (`allows`). None
    (the initial state) allows everyone. On top of that, any process sharing the list may `deny` a
    peer for a while: one caught sending what no honest peer sends (a non-finite or misshapen part,
    or a non-finite reduced result: honest peers zero a non-finite gradient before any round).
    libp2p authenticates every stream, so such data convicts its sender, and nobody can get an
    honest peer denied this way.

    Apart from that, `set_donors` names the only peers a state download may come from, for its
    length (`donates`): hivemind asks the donor that advertises the highest epoch first, and a liar
    alone one epoch above this peer's group would otherwise be that donor (ci50: an outvoted honest
    peer resynced to the attacker's state instead of the winners')."""

    MAX_BYTES = 1 << 20
    DENIED_BYTES = 1 << 16  # about 700 denied peers; past that the ones denied longest ago are forgotten

    def __init__(self) -> None:
        self._data = mp.Array("c", self.MAX_BYTES)
        self._data.value = b"*"  # everyone, until `set`
        self._version = mp.Value("q", 0)
        self._cached: tuple[int, frozenset[bytes] | None] = (-1, None)
        self._denied = mp.Array("c", self.DENIED_BYTES)  # b"<peer hex> <until, unix time>" lines
        self._denied_version = mp.Value("q", 0)
        self._denied_cached: tuple[int, dict[bytes, float]] = (-1, {})
        self._donors = mp.Array("c", self.MAX_BYTES)
        self._donors.value = b"*"
        self._donors_version = mp.Value("q", 0)
        self._donors_cached: tuple[int, frozenset[bytes] | None] = (-1, None)

    def deny(self, peer: bytes, seconds: float) -> None:
        """Refuse `peer` for the next `seconds`, whatever `set` allows (see the class docstring)."""
        now = time.time()
        with self._denied.get_lock():
            denied = {p: until for p, until in self._parse_denied(self._denied.value).items() if until > now}
            denied[peer] = max(now + seconds, denied.get(peer, 0.0))
            lines = [f"{p.hex()} {until:.3f}".encode() for p, until in
                     sorted(denied.items(), key=lambda item: item[1], reverse=True)]
            encoded = b""
            for line in lines:  # the latest first, as many as fit
                if len(encoded) + len(line) + 1 >= self.DENIED_BYTES:
                    break
                encoded += line + b"\n"
            self._denied.value = encoded
            self._denied_version.value += 1

    def denied(self) -> dict[bytes, float]:
        """The peers denied now, with the unix time each denial ends."""
        now = time.time()
        return {p: until for p, until in self._denial_ends().items() if until > now}

    def _denial_ends(self) -> dict[bytes, float]:
        """Every denial written, ended or not (re-read only after a `deny`)."""
        version = self._denied_version.value
        if version != self._denied_cached[0]:
            with self._denied.get_lock():
                raw, version = self._denied.value, self._denied_version.value
            self._denied_cached = (version, self._parse_denied(raw))
        return self._denied_cached[1]

    @staticmethod
    def _parse_denied(raw: bytes) -> dict[bytes, float]:
        denied = {}
        for line in raw.split(b"\n"):
            if line:
                peer, until = line.split(b" ")
                denied[bytes.fromhex(peer.decode())] = float(until)
        return denied

    def set(self, peers: set[bytes] | None) -> None:
        self._write(self._data, self._version, peers, "allow list")

    def allows(self, peer: bytes) -> bool:
        if self._denial_ends().get(peer, 0.0) > time.time():  # asked for every rpc: no copy of the list
            return False
        self._cached = self._read(self._data, self._version, self._cached)
        peers = self._cached[1]
        return peers is None or peer in peers

    def set_donors(self, peers: set[bytes] | None) -> None:
        """The peers a state download may come from (None: any the allow list allows)."""
        self._write(self._donors, self._donors_version, peers, "donor list")

    def donates(self, peer: bytes) -> bool:
        """A state download may come from `peer`: allowed, and a donor while a donor list is set."""
        if not self.allows(peer):
            return False
        self._donors_cached = self._read(self._donors, self._donors_version, self._donors_cached)
        donors = self._donors_cached[1]
        return donors is None or peer in donors

    def _write(self, data, version, peers: set[bytes] | None, what: str) -> None:
        encoded = b"*" if peers is None else b"\n".join(sorted(peer.hex().encode() for peer in peers))
        if len(encoded) >= self.MAX_BYTES:
            log.warning("%s of %d peers does not fit in %d bytes: allowing everyone", what, len(peers),
                        self.MAX_BYTES)
            encoded = b"*"
        with data.get_lock():
            if data.value == encoded:
                return
            data.value = encoded
            version.value += 1

    @staticmethod
    def _read(data, version, cached: tuple[int, frozenset[bytes] | None]) -> tuple[int, frozenset[bytes] | None]:
        """(version, peers) of a shared peer list, re-parsed only when its version moved; None: everyone.
        An empty list ("") is nobody, as `_write` writes an empty set."""
        if version.value == cached[0]:
            return cached
        with data.get_lock():
            raw, seen = data.value, version.value
        return seen, None if raw == b"*" else frozenset(bytes.fromhex(h.decode()) for h in raw.split(b"\n") if h)
