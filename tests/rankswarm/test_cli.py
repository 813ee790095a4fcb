"""The `rankswarm` command as a user runs it: a subprocess, its exit code and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWNkmZBtLxs5Khuu7GYNSmZ5wtmk89Wo99m7vfVM374yKU"


def rankswarm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rankswarm.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.integration
def test_node_with_no_answering_initial_peer_explains_what_to_check(tmp_path):
    result = rankswarm("node", "--set", f"dht.initial_peers={json.dumps([UNREACHABLE])}",
                       "--set", f"run_dir={json.dumps(str(tmp_path))}")
    assert result.returncode == 3, result.stderr
    assert "none of the initial peers answered" in result.stderr
    assert UNREACHABLE in result.stderr and "check that" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_unknown_config_key_is_a_config_error_naming_it():
    result = rankswarm("node", "--set", "gossip.compresion=\"none\"")
    assert result.returncode == 2
    assert "gossip.compresion" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.unit
def test_status_without_a_coordinator_fails_clearly():
    result = rankswarm("status", "--coordinator", "127.0.0.1:9", "--timeout", "1")
    assert result.returncode == 1
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize("role, key", [("node", "gossip"), ("coordinator", "round_interval"), ("demo", "peers")])
def test_config_show_prints_every_default(role, key):
    result = rankswarm("config", "show", role)
    assert result.returncode == 0, result.stderr
    assert key in json.loads(result.stdout)


def rankswarm_env(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rankswarm.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **env})


@pytest.mark.unit
def test_environment_variables_configure_a_role_and_set_still_wins():
    env = {"RANKSWARM_NODE_STEPS": "7", "RANKSWARM_NODE_DHT__CLIENT_MODE": "true", "RANKSWARM_NODE_SEED": "3"}
    result = rankswarm_env(env, "config", "resolve", "node", "--set", "seed=4")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert (resolved["steps"], resolved["dht"]["client_mode"], resolved["seed"]) == (7, True, 4)


@pytest.mark.unit
def test_a_malformed_environment_variable_is_a_config_error_naming_it():
    result = rankswarm_env({"RANKSWARM_NODE_DHT__INITIAL_PEERS": '["/ip4/1.2.3.4/tcp/1'}, "node")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "environment variable RANKSWARM_NODE_DHT__INITIAL_PEERS" in result.stderr
    typo = rankswarm_env({"RANKSWARM_COORDINATOR_ROUND_INTERVALL": "3"}, "coordinator", "--set", 'run="r"',
                         "--set", 'db_path="/tmp/never-written.db"')
    assert typo.returncode == 2 and "round_intervall: unknown key" in typo.stderr
    assert "RANKSWARM_COORDINATOR_ROUND_INTERVALL" in typo.stderr


@pytest.mark.integration
def test_node_waiting_for_missing_bootstrap_info_says_where_and_what_to_check(tmp_path):
    result = rankswarm("node", "--set", f"coordinator.bootstrap={json.dumps(str(tmp_path / 'absent.json'))}",
                       "--set", "coordinator.bootstrap_timeout_s=2", "--set", f"run_dir={json.dumps(str(tmp_path))}")
    assert result.returncode == 3, result.stderr
    assert "no bootstrap info from" in result.stderr and "absent.json" in result.stderr
    assert "waiting for the coordinator's bootstrap info" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.unit
def test_doctor_with_an_invalid_config_reports_it_and_exits_2():
    result = rankswarm_env({}, "doctor", "--set", "steps=-1")
    assert result.returncode == 2 and result.stderr.startswith("FAIL  config: invalid NodeConfig")
    assert "steps" in result.stderr and "Traceback" not in result.stderr
