"""A swarm in containers exactly as deploy/compose.yaml runs it, inside a network namespace of its own.

One scenario, shared by the tests below (about three minutes on 2 cores): `podman-compose up -d
--scale peer=2` starts the coordinator, two peers and Prometheus; the peers join through the
coordinator's bootstrap info (nothing copied by hand), train a few steps together and exit 0;
Prometheus scrapes the coordinator's /metrics. Then both peer containers are removed and created
again with a higher step count: each must come back with the same identity (signing key and DHT peer
id, kept in its slot of the shared volume) and resume from its checkpoint. `podman-compose down -v`
and the namespace's removal must leave no container, network, volume or namespace behind. The
settings are test-sized TOML files passed the way an operator would (RANKSWARM_NODE_TOML,
RANKSWARM_COORDINATOR_TOML); everything else is the shipped compose file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from conftest import require
from deploytools import (
    ENV,
    PREFIX,
    REPO,
    SMALL_TRAINING_TOML,
    in_netns,
    leftovers,
    network_namespace,
    podman,
    remove_everything,
    run,
)

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

# one per test process: two runs on one host (two CI checkouts) share podman, and one run's "down" would
# remove the other's network (seen: two CI runs side by side, every compose test of both failed)
PROJECT = f"{PREFIX}-{os.getpid()}-compose"
RUN_ID = "compose-test"
NODE_TOML = """shared_run_dir = true
steps = {steps}
torch_threads = 1
progress = false
""" + SMALL_TRAINING_TOML + """[checkpoint]
every = 1
[gossip]
target_batch_size = 32
min_peers = 2
matchmaking_time = 3.0
averaging_timeout = 30.0
"""
COORDINATOR_TOML = "round_interval = 1.0\n"


def compose(netns: str, env: dict, *args: str, timeout: float = 300) -> str:
    argv = [sys.executable, "-m", "podman_compose", "-p", PROJECT, "-f", str(REPO / "deploy" / "compose.yaml"), *args]
    return run(in_netns(netns, argv), env={**ENV, **env}, timeout=timeout).stdout


def containers(netns: str, service: str) -> list[dict]:
    listed = podman("ps", "-a", "--format", "json", "--filter", f"label=io.podman.compose.project={PROJECT}",
                    "--filter", f"label=com.docker.compose.service={service}", netns=netns).stdout
    return json.loads(listed or "[]")


def wait_for_peers_to_finish(netns: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        peers = containers(netns, "peer")
        failed = [p for p in peers if p["State"] == "exited" and p["ExitCode"] != 0]
        assert not failed, "a peer failed:\n" + "\n".join(logs(netns, p["Names"][0])[-3000:] for p in failed)
        if len(peers) == 2 and all(p["State"] == "exited" for p in peers):
            return peers
        time.sleep(2)
    raise AssertionError("the peers did not finish in time:\n" + "\n".join(
        logs(netns, p["Names"][0])[-2000:] for p in containers(netns, "peer")))


def logs(netns: str, name: str) -> str:
    result = podman("logs", name, netns=netns, check=False)
    return result.stdout + result.stderr


def restarts(netns: str, name: str) -> str:
    """How often `restart: on-failure` restarted a container (its log then holds each start)."""
    return podman("inspect", name, "--format", "{{.RestartCount}}", netns=netns, check=False).stdout.strip()


def identities(log: str) -> dict[str, tuple[str, str]]:
    """{slot directory: (signing key fingerprint, DHT peer id)} for every start a container's log holds.

    A container that failed is restarted (`restart: on-failure`) and its log then holds each start in
    turn; a restarted peer takes the lowest free slot, which need not be the one it had, so each
    "claimed" line is paired with the identity printed after it, before the next start."""
    found: dict[str, tuple[str, str]] = {}
    for start in re.split(r"(?=claimed \S+ of the shared run_dir)", log)[1:]:
        slot = re.match(r"claimed (\S+) of the shared run_dir", start).group(1)
        joined = re.search(r"peer (\S+) joined run \S+; others can join with:\n\s+(\S+)", start)
        if joined is not None:  # a start that failed before joining printed no identity
            found.setdefault(slot, (joined.group(1), joined.group(2).rsplit("/p2p/", 1)[1]))
            assert found[slot] == (joined.group(1), joined.group(2).rsplit("/p2p/", 1)[1]), \
                f"{slot} changed identity between two starts of one container:\n{log[-4000:]}"
    return found


def slot_identities(logs_by_name: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{slot: identity} over all containers of one run; two containers that show one slot must agree on it."""
    merged: dict[str, tuple[str, str]] = {}
    for name, log in logs_by_name.items():
        for slot, ident in identities(log).items():
            assert merged.setdefault(slot, ident) == ident, f"{name} showed {slot} with another identity"
    return merged


def fetch_in(netns: str, container: str, url: str, timeout: float = 90) -> dict:
    """GET `url` from inside `container` (names resolve on the compose network). Retried: aardvark-dns reloads
    its records when containers stop, and answers nothing for a moment while it does."""
    script = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
    deadline = time.monotonic() + timeout
    while True:
        result = podman("exec", container, "python", "-c", script, url, netns=netns, check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, f"GET {url} in {container} failed: {result.stderr[-1500:]}"
    return json.loads(result.stdout)


def train_steps(volume: Path, slot: str) -> list[int]:
    rows = [json.loads(line) for line in (volume / Path(slot).relative_to("/data") / "metrics.jsonl").read_text()
            .splitlines()]
    return [r["step"] for r in rows if r.get("kind") == "train"]


@pytest.fixture(scope="module")
def scenario(image, prometheus_image, tmp_path_factory):
    require("py:podman_compose", "/usr/bin/prometheus")
    tmp = tmp_path_factory.mktemp("compose")
    for steps in (3, 5):
        (tmp / f"node-{steps}.toml").write_text(NODE_TOML.format(steps=steps))
    (tmp / "coordinator.toml").write_text(COORDINATOR_TOML)
    env = {"RANKSWARM_IMAGE": image, "PROMETHEUS_IMAGE": prometheus_image, "RANKSWARM_RUN": RUN_ID,
           "RANKSWARM_COORDINATOR_TOML": str(tmp / "coordinator.toml"), "RANKSWARM_NODE_TOML": str(tmp / "node-3.toml")}
    facts: dict = {}
    started = time.monotonic()
    with network_namespace(PROJECT) as netns:
        try:
            compose(netns, env, "up", "-d", "--scale", "peer=2")
            first = wait_for_peers_to_finish(netns, 300)
            facts["first_logs"] = {p["Names"][0]: logs(netns, p["Names"][0]) for p in first}
            coordinator = containers(netns, "coordinator")[0]["Names"][0]
            facts["state"] = fetch_in(netns, coordinator, "http://127.0.0.1:8080/api/v1/state")
            facts["bootstrap"] = fetch_in(netns, coordinator, "http://coordinator:8080/api/v1/bootstrap")
            deadline, query = time.monotonic() + 60, "http://prometheus:9090/api/v1/query?query="
            while True:  # Prometheus scrapes every 5 s (deploy/prometheus/prometheus.yml)
                facts["round"] = fetch_in(netns, coordinator, query + "rankswarm_round")
                facts["peer_steps"] = fetch_in(netns, coordinator, query + "rankswarm_peer_step")
                result = facts["round"]["data"]["result"]
                if result and float(result[0]["value"][1]) >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(2)
            facts["coordinator_health"] = podman("healthcheck", "run", coordinator, netns=netns, check=False)
            volume = Path(podman("volume", "inspect", f"{PROJECT}_peer-data", "--format", "{{.Mountpoint}}",
                                 netns=netns).stdout.strip())
            facts["restarts"] = {p["Names"][0]: restarts(netns, p["Names"][0]) for p in first}
            facts["first_ids"] = slot_identities(facts["first_logs"])
            facts["first_steps"] = {slot: train_steps(volume, slot) for slot in facts["first_ids"]}

            # re-create both peers (as an image update would) with a higher step count
            podman("rm", *(p["Names"][0] for p in first), netns=netns)
            compose(netns, {**env, "RANKSWARM_NODE_TOML": str(tmp / "node-5.toml")}, "up", "-d", "--scale", "peer=2")
            again = wait_for_peers_to_finish(netns, 300)
            facts["second_logs"] = {p["Names"][0]: logs(netns, p["Names"][0]) for p in again}
            facts["second_ids"] = slot_identities(facts["second_logs"])
            facts["second_steps"] = {slot: train_steps(volume, slot) for slot in facts["second_ids"]}
            facts["restarts"].update({p["Names"][0] + " (re-created)": restarts(netns, p["Names"][0]) for p in again})
            facts["identity_files"] = sorted(p.name for p in volume.rglob("*") if p.name in ("dht.identity",
                                                                                               "signing.key"))
        finally:
            try:
                compose(netns, env, "down", "-v", timeout=300)
            finally:
                remove_everything(PROJECT, netns)
    facts["minutes"] = (time.monotonic() - started) / 60
    facts["leftovers"] = leftovers(PROJECT)
    return facts


def test_two_scaled_peers_join_through_the_bootstrap_info_and_train(scenario):
    for name, log in scenario["first_logs"].items():
        assert "bootstrap: run compose-test" in log, f"{name} did not join through the bootstrap info:\n{log[-2000:]}"
    bootstrap = scenario["bootstrap"]
    assert bootstrap["run"] == RUN_ID and bootstrap["maddrs"][0].startswith("/dns4/coordinator/tcp/31337/p2p/")
    assert sorted(scenario["first_ids"]) == ["/data/peer/slot-0", "/data/peer/slot-1"], "each scaled peer claims a slot"
    assert all(steps == [1, 2, 3] for steps in scenario["first_steps"].values()), scenario["first_steps"]
    peers = scenario["state"]["peers"]["items"]
    assert len(peers) == 2 and scenario["state"]["round"]["number"] >= 1
    assert {p["peer_id"] for p in peers} == {fingerprint for fingerprint, _ in scenario["first_ids"].values()}


def test_prometheus_scrapes_the_coordinators_metrics(scenario):
    rounds = scenario["round"]["data"]["result"]
    assert rounds and float(rounds[0]["value"][1]) >= 1, scenario["round"]
    assert len(scenario["peer_steps"]["data"]["result"]) == 2, scenario["peer_steps"]


def test_coordinator_container_reports_healthy(scenario):
    result = scenario["coordinator_health"]
    assert result.returncode == 0, result.stdout + result.stderr


def test_recreated_peers_keep_their_identity_and_resume_from_their_checkpoint(scenario):
    assert scenario["second_ids"] == scenario["first_ids"], "a re-created peer came back as a stranger:\n" + "\n".join(
        f"--- {run} {name}\n{log[-3000:]}" for run in ("first_logs", "second_logs")
        for name, log in scenario[run].items()) + f"\nrestarts: {scenario['restarts']}"
    for log in scenario["second_logs"].values():
        assert "resumed from the checkpoint of step 3" in log, log[-2000:]
    for slot, steps in scenario["second_steps"].items():
        assert steps == [1, 2, 3, 4, 5], f"{slot} did not continue from step 3: {steps}"
    assert scenario["identity_files"] == ["dht.identity"] * 2 + ["signing.key"] * 2


def test_down_leaves_no_container_network_volume_or_namespace(scenario):
    assert scenario["leftovers"] == []
