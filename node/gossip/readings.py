"""How far one read of the DHT is to be believed.

Under load a lookup can come back cut short, with records missing: one read that shows nobody, or
no round under way, is no evidence of it. `Steady` believes such a reading only once reads have
said so for a while."""

from __future__ import annotations

import time


class Steady:
    """Whether a condition, read again and again, has held for `seconds` without a break."""

    def __init__(self, seconds: float = 1.0):
        self.seconds = seconds
        self._since: float | None = None

    def holds(self, condition: bool) -> bool:
        """Note this read of the condition; True once every read for `seconds` said it holds."""
        if not condition:
            self._since = None
            return False
        if self._since is None:
            self._since = time.monotonic()
        return time.monotonic() - self._since >= self.seconds


class RecentMax:
    """The largest of the readings taken in the last `seconds`: a count that drops only once reads have
    shown the smaller number for that long (a read cut short shows fewer peers than there are)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._readings: list[tuple[float, int]] = []  # (monotonic time, reading), oldest first

    def note(self, reading: int) -> int:
        """Note a reading; the largest within the window, this one included."""
        now = time.monotonic()
        self._readings = [(at, value) for at, value in self._readings if now - at < self.seconds]
        self._readings.append((now, reading))
        return max(value for _, value in self._readings)


class RoundSize:
    """How many peers a round counts on, from reads of the swarm's records (node.gossip.trust.peers_in_round).

    A drop is believed once reads have shown the smaller number for `memory_s` (`RecentMax`: a read cut
    short under load would otherwise shrink the target and start a round the others are not ready for).
    Until reads have once shown `expected` peers, the count is at least that: a peer's record appears only
    after its first step, and a peer that saw only itself at startup sized its target for one and dropped
    rounds the others could not join (bench_attacks, clean seed 0)."""

    def __init__(self, expected: int, memory_s: float):
        self.expected, self.formed, self.recent = expected, expected <= 1, RecentMax(memory_s)

    def note(self, peers: int) -> int:
        """Note a read's count; the count to size the target by."""
        self.formed = self.formed or peers >= self.expected
        counted = self.recent.note(peers)
        return counted if self.formed else max(counted, self.expected)
