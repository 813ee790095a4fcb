"""One metrics pipeline: every component reports step records through `MetricsSink`.

Records go to an append-only JSONL file (one JSON object per line, flushed per record so a
crash loses at most the record being written); the latest numeric value of each key stays in
memory for the peer's status report. The swarm's Prometheus metrics are the coordinator's
(`GET /metrics`, coordinator/dashboard/prometheus.py), built from those status reports.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    # JSON has no NaN/Inf: missing indicators are NaN in tensors, written as null here.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsSink:
    """Writes step records to `path` (JSONL) and keeps the latest numeric value of each key."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._latest: dict[str, float] = {}
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one record (flat mapping of names to JSON-able values); adds a wall-clock `time`."""
        row = {"time": time.time(), **{k: _clean(v) for k, v in record.items()}}
        with self._lock:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._latest[key] = float(value)
            if self._file is not None:
                self._file.write(json.dumps(row, sort_keys=True) + "\n")
                self._file.flush()

    def latest(self) -> dict[str, float]:
        with self._lock:
            return dict(self._latest)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics file, skipping a torn last line left by a crash."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
