"""`SwarmBaselines`: shape with the coordinator's global baselines when fresh, local EMA otherwise.

A background thread reads the signed balance record from the DHT every `poll_interval_s`
(backing off up to 8x while reads fail), so the training step only ever reads a field: a
missing, slow or dead coordinator can make the peer fall back to its own EMA, never wait.
"""

from __future__ import annotations

import logging
import threading

from hivemind.utils import get_dht_time

from node.swarm.polling import Poller
from node.training.seams import BaselineChoice, LocalBaselines
from plumbing.dht_records import fetch_balance
from protos import records, swarm_pb2
from shaping import IndicatorStats

log = logging.getLogger(__name__)


class SwarmBaselines:
    """A `BaselineSource` preferring fresh global baselines; the local EMA is always kept warm."""

    def __init__(self, local: LocalBaselines, dht, run: str, trusted_key: str, *, max_age_s: float,
                 poll_interval_s: float, dht_lock: threading.Lock | None = None):
        self.local = local
        self.dht = dht
        self.run = run
        self.trusted_key = trusted_key
        self.max_age_s = max_age_s
        self.poll_interval_s = poll_interval_s
        self.latest: swarm_pb2.BalanceWeights | None = None
        self.poller = Poller("balance-poller", self._read, poll_interval_s, dht_lock or threading.Lock())

    @property
    def failures(self) -> int:
        return self.poller.failures

    def start(self) -> SwarmBaselines:
        self.poller.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.poller.stop(timeout)

    def _read(self) -> None:
        record = fetch_balance(self.dht, self.run, self.trusted_key, timeout=self.poll_interval_s * 2)
        if record is not None and (self.latest is None or record.round >= self.latest.round):
            self.latest = record

    def current(self) -> BaselineChoice:
        record = self.latest  # read once: the poller may replace it meanwhile
        age = get_dht_time() - record.issued_at if record is not None else None
        if age is not None and age <= self.max_age_s and record.baselines.ready:
            # valid: fetch_balance validated it
            return BaselineChoice(records.baselines_of(record.baselines), "global", age)
        return BaselineChoice(self.local.baselines, "local", age)

    def observe(self, stats: IndicatorStats) -> None:
        self.local.observe(stats)

    def state_dict(self) -> dict:
        return self.local.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.local.load_state_dict(state)
