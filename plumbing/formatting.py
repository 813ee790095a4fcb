"""Numbers written for people (progress lines, `rankswarm status`, the demo's summary, alert texts).

One way to show a value that was not measured: "-", never 0. One way to show a span of time.
"""

from __future__ import annotations

from typing import Any

MISSING = "-"


def fmt(value: Any, spec: str = ".4g") -> str:
    """`value` in format `spec`, or "-" when it is None (not measured)."""
    return MISSING if value is None else format(value, spec)


def duration(seconds: float) -> str:
    """A span of time, rounded for reading: 45s, 12m, 3.5h (negative spans read 0s)."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 5400 else f"{seconds / 3600:.1f}h"
