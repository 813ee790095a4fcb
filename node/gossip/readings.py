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
