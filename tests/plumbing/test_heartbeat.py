"""The heartbeat a peer or coordinator keeps, and the check `rankswarm health` (the probes) runs on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plumbing.health import Heartbeat, check

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_a_fresh_heartbeat_is_live_and_ready_only_while_training(tmp_path):
    beat = Heartbeat(tmp_path / "health.json", "node", interval=60).start()
    try:
        beat.set("joining")
        assert check(beat.path).healthy and not check(beat.path, ready=True).healthy
        assert "live but not ready" in check(beat.path, ready=True).message
        beat.set("training", step=7)
        report = check(beat.path, ready=True)
        assert report.healthy and "training at step 7" in report.message
    finally:
        beat.stop("done")
    assert json.loads(beat.path.read_text())["phase"] == "done"


def test_stale_failed_or_broken_processes_are_unhealthy_and_say_why(tmp_path):
    beat = Heartbeat(tmp_path / "health.json", "coordinator", interval=60).start()
    beat.set("serving", step=3)
    assert not check(beat.path, max_age=30, now=time.time() + 31).healthy
    assert "no heartbeat for 31s" in check(beat.path, max_age=30, now=time.time() + 31).message
    beat.problem = lambda: "the DHT process died"
    beat.beat()
    assert check(beat.path).message.endswith("the DHT process died")
    beat.problem = lambda: 1 / 0  # a check that raises is reported, not raised
    beat.beat()
    assert "ZeroDivisionError" in check(beat.path).message
    beat.stop("failed")
    assert "stopped on an error" in check(beat.path).message


def test_a_training_peer_without_steps_fails_the_step_age_check(tmp_path):
    beat = Heartbeat(tmp_path / "health.json", "node", interval=60).start()
    beat.set("training", step=1)
    assert check(beat.path, max_step_age=60).healthy
    beat.beat()  # the heartbeat goes on, the step does not
    report = check(beat.path, max_step_age=60, max_age=1e9, now=time.time() + 120)
    assert not report.healthy and "no step for 12" in report.message
    beat.stop()


def test_missing_or_garbled_heartbeat(tmp_path):
    assert "no heartbeat at" in check(tmp_path / "absent.json").message
    (tmp_path / "garbled.json").write_text("{not json")
    assert "unreadable" in check(tmp_path / "garbled.json").message
    with pytest.raises(ValueError, match="unknown phase"):
        Heartbeat(tmp_path / "x.json", "node").set("dancing")


def test_the_health_command_exits_0_when_healthy_and_1_when_not(tmp_path):
    def health(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rankswarm.cli", "health", *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})

    beat = Heartbeat(tmp_path / "health.json", "node", interval=60).start()
    beat.set("training", step=2)
    ok = health("--file", str(beat.path), "--ready")
    assert ok.returncode == 0 and "healthy" in ok.stdout
    beat.stop("failed")
    failed = health("--file", str(beat.path))
    assert failed.returncode == 1 and "stopped on an error" in failed.stderr
    refused = health("--url", "http://127.0.0.1:9/healthz", "--timeout", "2")
    assert refused.returncode == 1 and "unhealthy" in refused.stderr
