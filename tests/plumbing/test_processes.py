"""Children the demo and the tests launch (plumbing/processes.py): no fork handlers, gone with their launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plumbing.processes import ManagedProcess

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

_forks_seen = {"counting": False, "count": 0}


def _count_fork(seen=_forks_seen):
    if seen["counting"]:
        seen["count"] += 1


os.register_at_fork(before=_count_fork)  # registered once per test process; counts only while a test asks


def test_a_child_is_launched_without_running_fork_handlers(tmp_path):
    """gRPC's fork handlers crash a forked child before exec (grpc/grpc#43055, the coordinator aborted in ci):
    a launch must not fork the Python way at all."""
    _forks_seen.update(counting=True, count=0)
    try:
        child = ManagedProcess("sleeper", ["sleep", "30"], tmp_path / "log.txt")
    finally:
        _forks_seen["counting"] = False
    try:
        assert child.alive
        assert _forks_seen["count"] == 0, "launching a child ran the fork handlers of this process"
    finally:
        assert child.stop(grace=2.0) is not None


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # ended; its new parent has not reaped it yet


def test_a_child_ends_when_its_launcher_is_killed(tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from plumbing.processes import ManagedProcess\n"
         f"child = ManagedProcess('sleeper', ['sleep', '60'], {str(tmp_path / 'log.txt')!r})\n"
         "print(child.proc.pid, flush=True)\n"
         "time.sleep(60)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(launcher.stdout.readline())
        assert not _gone(pid)
        launcher.send_signal(signal.SIGKILL)  # no cleanup of its own runs
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 15
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), f"the child {pid} outlived its killed launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.stdout.close()
