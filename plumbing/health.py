"""Is a running peer or coordinator healthy? A heartbeat file it keeps, and the check a probe runs on it.

The process (`Node`, `Coordinator`) owns a `Heartbeat`: a thread that rewrites one small JSON
file every few seconds with its phase, its step (or round) and whether its parts are alive (the
DHT process, the round thread). `rankswarm health --file F` (the image's HEALTHCHECK and the
Kubernetes probes) reads it with `check`; it needs nothing but the standard library, so a probe
starts in a fraction of a second.

    {"role": "node", "pid": 7, "phase": "training", "step": 41, "problem": null,
     "updated_at": 1767000000.0, "phase_since": 1766999000.0, "step_at": 1766999990.0}

Phases, in order: starting, bootstrap (waiting for the coordinator's bootstrap info), joining (the
DHT), syncing (model, state download), training (a peer) or serving (a coordinator), then done or
failed. Live: the file was rewritten within `max_age` seconds, the phase is not failed and no part
reported a problem. Ready: live, and training or serving.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.processes import write_json_atomic

log = logging.getLogger(__name__)

PHASES = ("starting", "bootstrap", "joining", "syncing", "training", "serving", "done", "failed")
READY_PHASES = frozenset({"training", "serving"})
BEAT_INTERVAL_S = 5.0


class Heartbeat:
    """Keeps `path` up to date while the process runs. `problem()` returns None while all is well, else why not."""

    def __init__(self, path: str | os.PathLike, role: str, *, interval: float = BEAT_INTERVAL_S):
        self.path = Path(path)
        self.role = role
        self.interval = interval
        self.problem: Callable[[], str | None] = lambda: None
        self._state: dict[str, Any] = {"phase": "starting", "step": None, "phase_since": time.time(), "step_at": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"{self.role}-heartbeat", daemon=True)
        self._thread.start()
        return self

    def set(self, phase: str | None = None, step: int | None = None) -> None:
        """Record a new phase and/or step and write the file at once."""
        if phase is not None and phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")
        with self._lock:
            now = time.time()
            if phase is not None and phase != self._state["phase"]:
                self._state.update(phase=phase, phase_since=now)
            if step is not None:
                self._state.update(step=int(step), step_at=now)
        self.beat()

    def beat(self) -> None:
        try:
            problem = self.problem()
        except Exception as err:  # a broken check is itself a problem to report, never a crash
            problem = f"health check raised {type(err).__name__}: {err}"
        with self._lock:
            document = {"role": self.role, "pid": os.getpid(), **self._state, "problem": problem,
                        "updated_at": time.time()}
        try:
            write_json_atomic(self.path, document)
        except OSError as err:  # a full or read-only disk must not stop training; the probe will notice
            log.warning("cannot write the heartbeat %s: %s", self.path, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self, phase: str = "done") -> None:
        """Stop beating and leave `phase` (done, failed) in the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1)
        self.set(phase=phase)


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    message: str


def check(path: str | os.PathLike, *, max_age: float = 6 * BEAT_INTERVAL_S, ready: bool = False,
          max_step_age: float | None = None, now: float | None = None) -> HealthReport:
    """Read the heartbeat at `path`: healthy when live (and, with `ready`, training or serving; with
    `max_step_age`, a training peer finished a step within that many seconds)."""
    path = Path(path)
    try:
        beat = json.loads(path.read_text())
    except FileNotFoundError:
        return HealthReport(False, f"no heartbeat at {path}: the process has not started (or writes elsewhere: "
                                   "health_file in its config)")
    except (OSError, ValueError) as err:
        return HealthReport(False, f"heartbeat {path} is unreadable: {err}")
    now = time.time() if now is None else now
    phase, age = beat.get("phase"), now - float(beat.get("updated_at", 0))
    where = f"{beat.get('role', '?')} pid {beat.get('pid', '?')}, {phase}"
    if beat.get("step") is not None:
        where += f" at step {beat['step']}"
    if age > max_age:
        return HealthReport(False, f"{where}: no heartbeat for {age:.0f}s (over {max_age:.0f}s): hung or exited")
    if phase == "failed":
        return HealthReport(False, f"{where}: it stopped on an error (see its log)")
    if beat.get("problem"):
        return HealthReport(False, f"{where}: {beat['problem']}")
    if ready and phase not in READY_PHASES:
        return HealthReport(False, f"{where}: live but not ready (ready = training or serving)")
    if max_step_age is not None and phase == "training":
        since = beat.get("step_at") or beat.get("phase_since") or 0
        if now - since > max_step_age:
            return HealthReport(False, f"{where}: no step for {now - since:.0f}s (over {max_step_age:.0f}s)")
    return HealthReport(True, f"{where}: healthy")
