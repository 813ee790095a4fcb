"""`AdmissionView`: who may take part, as the coordinator's signed admission list says (docs/security.md).

A background `Poller` reads the list under the pinned coordinator key (`coordinator.trusted_key`)
and keeps the newest version, so a ban reaches this peer within one poll interval; the gossip
layer (node.gossip.trust) asks it who is refused. Until a list arrives, nobody is refused.
"""

from __future__ import annotations

import threading

from node.swarm.polling import Poller
from plumbing.dht_records import fetch
from protos import swarm_pb2


class AdmissionView:
    """The newest admission list signed by the trusted coordinator key (node.gossip.trust.Admission)."""

    def __init__(self, dht, run: str, trusted_key: str, *, poll_interval_s: float, dht_lock: threading.Lock):
        self.dht, self.run, self.trusted_key = dht, run, trusted_key
        self.latest: swarm_pb2.Admission | None = None
        self.poller = Poller("admission-poller", self._read, poll_interval_s, dht_lock)

    def start(self) -> AdmissionView:
        self.poller.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.poller.stop(timeout)

    def _read(self) -> None:
        found = fetch(self.dht, self.run, swarm_pb2.Admission, owner=self.trusted_key,
                      timeout=self.poller.interval_s * 2)
        for record in found.records:
            if self.latest is None or record.version > self.latest.version:
                self.latest = record

    @property
    def restricts(self) -> bool:
        latest = self.latest
        return latest is not None and (latest.closed or bool(latest.banned))

    def refused(self, fingerprint: str) -> str | None:
        latest = self.latest
        if latest is None:
            return None
        if fingerprint in latest.banned:
            return "banned"
        if latest.closed and fingerprint not in latest.admitted:
            return "not_admitted"
        return None
