"""`rankswarm doctor` as a user runs it, against a real coordinator on 127.0.0.1 that has published a round.

Each scenario is one command and its own finding: a healthy set-up passes every check (the doctor
joins through the coordinator's bootstrap info, is dialed back, and finds the pinned key in the DHT
and at the coordinator); an initial peer that does not answer, a pinned key that is not the
coordinator's, an announced address nobody can dial (the NAT case) and a model too large for this
machine each fail with their own finding and fix, and exit code 1. About 50 s on 2 cores (each
command imports torch and starts a p2p daemon).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from live_swarm import LiveSwarm

from plumbing.identity import SigningIdentity

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
RUN = "doctor-test"
DEAD_PEER = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWNkmZBtLxs5Khuu7GYNSmZ5wtmk89Wo99m7vfVM374yKU"
LOOPBACK = 'dht.host_maddrs=["/ip4/127.0.0.1/tcp/0"]'
# Qwen2-7B's shape: about 7.6e9 parameters, far more than this machine can train
BIG_MODEL = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
             "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
             "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    swarm = LiveSwarm(tmp_path_factory.mktemp("doctor"), num_peers=1, run=RUN)
    try:
        swarm.round()  # a committed round: the coordinator's balance record is in the DHT
        yield swarm
    finally:
        swarm.stop()


def doctor(*overrides: str, coordinator: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "rankswarm.cli", "doctor", "--timeout", "20"]
    argv += ["--coordinator", coordinator] if coordinator else []
    for override in overrides:
        argv += ["--set", override]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def lines(result: subprocess.CompletedProcess, status: str, check: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(f"{status:<5} {check}:")]


def test_a_healthy_set_up_passes_every_check(swarm):
    url = f"http://{swarm.coordinator.http_address}"
    result = doctor(f"run_id={json.dumps(RUN)}", f"coordinator.bootstrap={json.dumps(url)}", LOOPBACK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout and "every check passed" in result.stdout
    key = swarm.coordinator.identity.fingerprint
    for check in ("config", "versions", "device", "bootstrap", "initial peers", "reachability", "clock",
                  "swarm versions"):
        assert lines(result, "ok", check), f"no ok {check} line:\n{result.stdout}"
    assert key in lines(result, "ok", "bootstrap")[0]
    assert "reached this peer directly" in lines(result, "ok", "reachability")[0]
    key_lines = lines(result, "ok", "coordinator key")
    assert any("has the pinned key" in line for line in key_lines)  # asked at the bootstrap info's gRPC address
    assert any("balance record (round 1)" in line for line in key_lines)


def test_an_initial_peer_that_does_not_answer(swarm):
    result = doctor(f"run_id={json.dumps(RUN)}", f"dht.initial_peers={json.dumps([DEAD_PEER])}", LOOPBACK)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = lines(result, "FAIL", "initial peers")
    assert failed and "none of the initial peers answered" in failed[0] and DEAD_PEER in failed[0]
    assert "its host/port is reachable from here" in result.stdout  # the advice comes with it
    assert lines(result, "skip", "reachability")


def test_a_pinned_key_that_is_not_the_coordinators(swarm):
    wrong = SigningIdentity.generate().fingerprint
    result = doctor(f"run_id={json.dumps(RUN)}", f"dht.initial_peers={json.dumps(swarm.coordinator.visible_maddrs())}",
                    f"coordinator.trusted_key={json.dumps(wrong)}", LOOPBACK, coordinator=swarm.coordinator.address)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = lines(result, "FAIL", "coordinator key")
    key = swarm.coordinator.identity.fingerprint
    assert any(f"signs with {key}, but coordinator.trusted_key pins {wrong}" in line for line in failed), failed
    assert any(f"signed by {key}, not by the pinned {wrong}" in line for line in failed), failed
    assert f"coordinator.trusted_key={key!r}" in result.stdout  # the fix names the key to pin


def test_an_announced_address_nobody_can_dial_asks_for_an_open_port_or_client_mode(swarm):
    maddrs = json.dumps(swarm.coordinator.visible_maddrs())
    unreachable = dict(announce='dht.announce_maddrs=["/ip4/127.0.0.1/tcp/9"]')
    result = doctor(f"run_id={json.dumps(RUN)}", f"dht.initial_peers={maddrs}", LOOPBACK, unreachable["announce"])
    assert result.returncode == 1, result.stdout + result.stderr
    failed = lines(result, "FAIL", "reachability")
    assert failed and "no swarm member could reach this peer at /ip4/127.0.0.1/tcp/9 (" in failed[0]
    assert "dht.client_mode=true" in result.stdout
    behind_nat = doctor(f"run_id={json.dumps(RUN)}", f"dht.initial_peers={maddrs}", LOOPBACK, unreachable["announce"],
                        "dht.client_mode=true")
    assert lines(behind_nat, "ok", "reachability") and not lines(behind_nat, "FAIL", "reachability")


def test_a_model_too_large_for_the_device(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(BIG_MODEL))
    result = doctor(f"model.path={json.dumps(str(tmp_path))}", "model.device=\"cpu\"", LOOPBACK)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = lines(result, "FAIL", "device")
    assert failed and "7,6" in failed[0].replace(".", ",") and "it does not fit" in failed[0]
    assert "a smaller model" in result.stdout
    assert lines(result, "warn", "initial peers")  # no peers configured: a new swarm, a warning only
