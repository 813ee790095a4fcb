"""Child processes the demo (and the integration tests) start, and stop, as a group.

Each child runs in its own session so that stopping it also stops what it spawned (a
hivemind DHT forks a p2p daemon); stopping is SIGINT, then SIGTERM, then SIGKILL, each
with a deadline, so Ctrl-C never leaves a daemon behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class ManagedProcess:
    """One child process with its output in `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: str | Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=full_env, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, timeout: float = 10.0) -> int | None:
        """SIGKILL the whole group at once (a crash, as far as the others can tell)."""
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def stop(self, grace: float = 10.0) -> int | None:
        """Interrupt, then terminate, then kill the whole process group; returns the exit code."""
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            self._signal_group(sig)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        # stray grandchildren (a p2p daemon) may outlive the leader: clear the group
        self._signal_group(signal.SIGKILL)
        self._log.close()
        return self.proc.returncode

    def tail(self, num_lines: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-num_lines:])


def rankswarm_argv(*args: str) -> list[str]:
    """argv running the `rankswarm` CLI with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "rankswarm.cli", *args]


def wait_for_json(path: str | Path, timeout: float, *, processes: list[ManagedProcess] = ()) -> dict[str, Any]:
    """Wait until a child writes the JSON file `path` (atomically), or fail with the child's log."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # being written; the writer renames into place, so this is rare
        for proc in processes:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited with code {proc.proc.returncode} before writing {path}:\n"
                                   f"{proc.tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise TimeoutError(f"{path} did not appear within {timeout:.0f}s")


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)
