"""Whom a peer trusts in the swarm: the operator's admission list, and what progress records may claim.

Every byte from the network may lie (docs/security.md). Three rules, all applied by each honest
peer on its own:

- **Admission.** `refused(fingerprint)` ("banned", "not_admitted" or None) comes from the
  coordinator-signed admission list (`node.swarm.admission.AdmissionView`). A refused identity's
  progress records, weights claims and averaging traffic are ignored.
- **Vouched epochs.** A progress record may claim any epoch; hivemind believes the highest one,
  so one record with a huge epoch would make every peer think it is behind and download the
  state of whoever advertises it. Here an epoch counts only up to `max_lead` epochs above the
  highest epoch that two different identities (this peer included) report: a lone claim further
  ahead is ignored, whoever makes it (`trusted_progress`).
- **Who averages.** The libp2p peers a peer may average with or download from are those that
  trusted progress records name (`AllowList`, shared with the averagers' child processes, which
  refuse anyone else's joins, parts and state; hivemind_internals/averagers.py). Until the
  admission list restricts anything, everybody is allowed, as hivemind does.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping
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


def vouched_epoch(epochs: Mapping[str, int]) -> int | None:
    """The highest epoch that at least two identities report (each counted at its own epoch and below)."""
    ordered = sorted(epochs.values(), reverse=True)
    return ordered[1] if len(ordered) >= 2 else None


def trusted_progress(progress: Mapping[object, Progress], me: str, my_epoch: int, refused: Refusal,
                     max_lead: int) -> dict[object, Progress]:
    """The records to believe: not refused, and not ahead of the vouched epoch by more than `max_lead`."""
    allowed = {subkey: p for subkey, p in progress.items() if p.owner == me or refused(p.owner) is None}
    epochs = {p.owner: p.epoch for p in allowed.values() if p.owner != me}
    epochs[me] = max(my_epoch, epochs.get(me, 0))
    ceiling = max(vouched_epoch(epochs) or my_epoch, my_epoch) + max_lead
    kept = {subkey: p for subkey, p in allowed.items() if p.epoch <= ceiling or p.owner == me}
    for p in allowed.values():
        if p.epoch > ceiling and p.owner != me:
            log.warning("ignoring the progress record of %s: epoch %d, which nobody vouches for (swarm at %d)",
                        p.owner, p.epoch, ceiling - max_lead)
    return kept


class AllowList:
    """The libp2p peers this peer's averagers may talk to, shared with their child processes.

    Written by the peer's main process (`set`), read in the averagers' processes (`allows`). None
    (the initial state) allows everyone. On top of that, any process sharing the list may `deny` a
    peer for a while: one caught sending what no honest peer sends (a non-finite or misshapen part,
    or a non-finite reduced result: honest peers zero a non-finite gradient before any round).
    libp2p authenticates every stream, so such data convicts its sender, and nobody can get an
    honest peer denied this way."""

    MAX_BYTES = 1 << 20
    DENIED_BYTES = 1 << 16  # about 700 denied peers; past that the ones denied longest ago are forgotten

    def __init__(self) -> None:
        self._data = mp.Array("c", self.MAX_BYTES)
        self._version = mp.Value("q", 0)
        self._cached: tuple[int, frozenset[bytes] | None] = (-1, None)
        self._denied = mp.Array("c", self.DENIED_BYTES)  # b"<peer hex> <until, unix time>" lines
        self._denied_version = mp.Value("q", 0)
        self._denied_cached: tuple[int, dict[bytes, float]] = (-1, {})

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
        encoded = b"*" if peers is None else b"\n".join(sorted(peer.hex().encode() for peer in peers))
        if len(encoded) >= self.MAX_BYTES:
            log.warning("allow list of %d peers does not fit in %d bytes: allowing everyone", len(peers),
                        self.MAX_BYTES)
            encoded = b"*"
        with self._data.get_lock():
            if self._data.value == encoded:
                return
            self._data.value = encoded
            self._version.value += 1

    def allows(self, peer: bytes) -> bool:
        if self._denial_ends().get(peer, 0.0) > time.time():  # asked for every rpc: no copy of the list
            return False
        version = self._version.value
        if version != self._cached[0]:
            with self._data.get_lock():
                raw, version = self._data.value, self._version.value
            peers = None if raw in (b"", b"*") else frozenset(bytes.fromhex(h.decode()) for h in raw.split(b"\n") if h)
            self._cached = (version, peers)
        peers = self._cached[1]
        return peers is None or peer in peers
