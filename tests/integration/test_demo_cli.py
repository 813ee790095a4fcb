"""`rankswarm demo` as a user runs it: it starts a swarm, and Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children in new sessions included), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_the_coordinator_the_peers_and_their_p2p_daemons(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "rankswarm.cli", "demo", "--set", "peers=2", "--set", "steps=500",
         "--set", f"run_dir={json.dumps(str(tmp_path))}", "--set", "refresh_s=0.5"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 240
        metrics = [tmp_path / f"peer{i}" / "metrics.jsonl" for i in (0, 1)]
        while time.monotonic() < deadline and not all(m.is_file() and m.stat().st_size for m in metrics):
            assert demo.poll() is None, demo.stdout.read()
            time.sleep(0.5)
        assert all(m.is_file() for m in metrics), "the peers never started training"
        started = descendants(demo.pid)
        daemons = [p for p in started if "p2pd" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(daemons) >= 3, "expected a p2p daemon for the coordinator and each peer"
        demo.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends the demo
        output, _ = demo.communicate(timeout=150)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, output[-2000:]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in started):
        time.sleep(0.2)
    assert not [p for p in started if alive(p)], "processes outlived the demo"
    assert "interrupted" in output
