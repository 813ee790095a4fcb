"""`Poller`: one background thread that reads something from the DHT every few seconds.

The training step never waits for the DHT: a poller keeps the latest value in a field the step
reads. A read that fails is logged and retried later, backing off up to 8x the interval while
reads keep failing; hivemind's DHT handle sends over one pipe without a lock, so every read
holds the peer's `dht_lock`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Poller:
    """Calls `read()` every `interval_s` (under `dht_lock`) until stopped."""

    def __init__(self, name: str, read: Callable[[], None], interval_s: float, dht_lock: threading.Lock):
        self.name, self.read, self.interval_s, self.dht_lock = name, read, interval_s, dht_lock
        self.failures = 0  # consecutive failed reads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.dht_lock:
                    self.read()
                self.failures = 0
            except Exception as err:  # network boundary: log, back off, keep training on what we have
                self.failures += 1
                log.warning("%s: reading the DHT failed (%d in a row): %s", self.name, self.failures, err)
            self._stop.wait(self.interval_s * min(2 ** self.failures, 8))
