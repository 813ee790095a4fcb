"""A real coordinator and real peers on 127.0.0.1: hivemind DHTs, signed records, gRPC, SQLite.

Fake peers are just a DHT plus publish_meta_signal with real IndicatorStats; every wait is
bounded (poll deadlines, gRPC timeouts). About 10 s in all, mostly p2p daemon start-up.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import grpc
import hivemind
import pytest
import torch
from hivemind.utils import get_dht_time

from coordinator.client import CoordinatorClient, wait_for_round
from coordinator.config import CoordinatorConfig
from coordinator.events import EventKind
from coordinator.server import Coordinator
from plumbing.dht_keys import meta_signals_key
from plumbing.dht_records import expires_in, fetch_balance, fetch_meta_signals, poll, poll_balance
from plumbing.dht_records import publish as publish_record
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.processes import wait_for_json
from plumbing.swarm_dht import DHTConfig, start_dht
from protos import records, swarm_pb2, swarm_pb2_grpc
from shaping import INDICATORS, IndicatorStats, RankIndicators

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
RUN = "swarm-test"
REPO = Path(__file__).resolve().parents[2]


def random_stats(rng: random.Random) -> IndicatorStats:
    """Real statistics of a random batch of 3-9 responses (ERA missing on some)."""
    size = rng.randint(3, 9)
    column = {name: torch.tensor([rng.uniform(-2, 30) if name != "era" or rng.random() > 0.3 else float("nan")
                                  for _ in range(size)], dtype=torch.float64) for name in INDICATORS}
    gates = torch.tensor([rng.random() for _ in range(int(column["era"].isfinite().sum()))], dtype=torch.float64)
    indicators = RankIndicators(column["er"], column["erv"], column["era"])
    return IndicatorStats.from_batch(indicators, column["score"], gates)


def make_peer(identity: SigningIdentity, initial_peers: list[str], run: str = RUN):
    return start_dht(DHTConfig(host_maddrs=LOOPBACK, initial_peers=initial_peers),
                     record_validators=build_record_validators(identity, run))


def meta_signal(identity: SigningIdentity, step: int, stats: IndicatorStats, run: str = RUN) -> swarm_pb2.MetaSignal:
    return records.build(swarm_pb2.MetaSignal, run_id=run, peer_id=identity.fingerprint, step=step,
                         stats=records.stats_message(stats), mean_gate=stats.gate_mean, num_rollouts=8,
                         num_tokens=512, published_at=get_dht_time())


def publish(dht, identity: SigningIdentity, step: int, stats: IndicatorStats, run: str = RUN) -> swarm_pb2.MetaSignal:
    record = meta_signal(identity, step, stats, run)
    assert publish_record(dht, record, expires_in(120), identity=identity)
    return record


def wait_for_records(dht, run: str, count: int, timeout: float = 15.0):
    polled = poll(lambda: fetch_meta_signals(dht, run), lambda r: len(r.records) >= count,
                  deadline=time.monotonic() + timeout)
    assert polled.complete, f"only {len(polled.result.records)} of {count} records became visible"
    return polled.result


def read_lines(stream, count: int, timeout: float) -> list[str]:
    """Up to `count` lines from a child's stdout, waiting at most `timeout` seconds in all."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    deadline, received = time.monotonic() + timeout, []
    while len(received) < count and time.monotonic() < deadline:
        try:
            received.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
    return received


def coordinator_config(tmp_path, run: str = RUN, **changes) -> CoordinatorConfig:
    return CoordinatorConfig(run=run, listen="127.0.0.1:0", http_listen="127.0.0.1:0",
                             db_path=str(tmp_path / "history.db"), signing_key_path=str(tmp_path / "coordinator.key"),
                             fetch_timeout=5.0, dht=DHTConfig(**{"host_maddrs": LOOPBACK, **changes.pop("dht", {})}),
                             **changes)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    """A coordinator whose rounds the tests drive by hand, and two honest peers, alice and bob."""
    started = []
    try:
        coordinator = Coordinator(coordinator_config(tmp_path_factory.mktemp("coordinator"), round_interval=60))
        started.append(coordinator.start())
        alice, bob = SigningIdentity.generate(), SigningIdentity.generate()
        alice_dht = make_peer(alice, coordinator.visible_maddrs())
        started.append(alice_dht)
        bob_dht = make_peer(bob, coordinator.visible_maddrs())
        started.append(bob_dht)
        yield SimpleNamespace(coordinator=coordinator, alice=alice, alice_dht=alice_dht, bob=bob, bob_dht=bob_dht)
    finally:
        for part in reversed(started):
            part.stop() if isinstance(part, Coordinator) else part.shutdown()


@pytest.mark.integration
def test_round_merges_what_the_peers_published_and_peers_verify_the_balance(swarm):
    rng = random.Random(11)
    published = [publish(swarm.alice_dht, swarm.alice, step, random_stats(rng)) for step in (0, 1)]
    published.append(publish(swarm.bob_dht, swarm.bob, 0, random_stats(rng)))
    wait_for_records(swarm.coordinator.dht, RUN, 3)

    result = swarm.coordinator.run_round()

    in_order = sorted(published, key=lambda r: (r.peer_id, r.step))
    assert result is not None and list(result.contributions) == in_order
    expected = IndicatorStats.merge_all([records.stats_of(r.stats) for r in in_order])
    assert records.stats_of(result.record.merged) == expected
    assert (result.record.num_peers, result.record.num_contributions) == (2, 3)
    trusted = swarm.coordinator.identity.fingerprint
    polled = poll_balance(swarm.alice_dht, RUN, trusted, deadline=time.monotonic() + 15,
                          after_round=result.record.round - 1)
    assert polled.complete and polled.result.records == [result.record]
    assert fetch_balance(swarm.bob_dht, RUN, trusted) == result.record
    assert fetch_balance(swarm.bob_dht, RUN, swarm.alice.fingerprint) is None  # alice is not the coordinator
    with CoordinatorClient(swarm.coordinator.address) as client:
        assert client.balance_weights() == result.record
        state = client.swarm_state()
        assert state.coordinator_key == trusted and state.visible_maddrs
        assert {p.peer_id for p in state.peers} >= {swarm.alice.fingerprint, swarm.bob.fingerprint}


@pytest.mark.integration
def test_forged_and_malformed_records_are_rejected_and_the_coordinator_keeps_serving(swarm):
    rng = random.Random(12)
    mallory = SigningIdentity.generate()
    mallory_dht = make_peer(mallory, swarm.coordinator.visible_maddrs())
    rogue_dht = None
    try:
        key = meta_signals_key(RUN)
        forged = records.encode(meta_signal(swarm.alice, 50, random_stats(rng)))
        # under alice's subkey without her key: every node that runs the validators refuses it
        assert not mallory_dht.store(key, forged, expires_in(120), subkey=swarm.alice.owner_subkey(50))
        # a node that runs no validators stores it locally, but honest readers drop what it serves
        rogue_dht = hivemind.DHT(initial_peers=swarm.coordinator.visible_maddrs(), host_maddrs=LOOPBACK, start=True)
        rogue_dht.store(key, forged, expires_in(120), subkey=swarm.alice.owner_subkey(51))
        rogue_dht.store(key, forged, expires_in(120), subkey=b"no-owner")
        # signed by mallory under her own subkey, but not a valid record: rejected with a reason
        newer = records.replace(meta_signal(mallory, 1, random_stats(rng)), schema_version=2).SerializeToString()
        assert mallory_dht.store(key, newer, expires_in(120), subkey=mallory.owner_subkey(1))
        assert mallory_dht.store(key, forged, expires_in(120), subkey=mallory.owner_subkey(50))  # claims alice
        assert mallory_dht.store(key, "garbage", expires_in(120), subkey=mallory.owner_subkey(2))
        honest = publish(swarm.bob_dht, swarm.bob, 7, random_stats(rng))

        fetched = poll(lambda: fetch_meta_signals(swarm.coordinator.dht, RUN), lambda r: len(r.rejected) >= 3,
                       deadline=time.monotonic() + 15).result
        reasons = {r.subkey: r.reason for r in fetched.rejected}
        assert "schema_version 2, newer than the 1" in reasons[f"{mallory.fingerprint}#1"]
        assert f"signed by {mallory.fingerprint}" in reasons[f"{mallory.fingerprint}#50"]
        assert "value is a str, not MetaSignal protobuf bytes" in reasons[f"{mallory.fingerprint}#2"]
        assert all(r.peer_id != mallory.fingerprint and r.step not in (50, 51) for r in fetched.records)

        result = swarm.coordinator.run_round()
        assert result is not None and result.contributions == (honest,)
        with CoordinatorClient(swarm.coordinator.address) as client:
            assert client.balance_weights() == result.record
            rejected = [e for e in client.watch_events(duration=1.0) if e.kind == EventKind.RECORD_REJECTED]
            assert {e.peer_id for e in rejected} >= {f"{mallory.fingerprint}#{s}" for s in (1, 2, 50)}
    finally:
        mallory_dht.shutdown()
        if rogue_dht is not None:
            rogue_dht.shutdown()


@pytest.mark.integration
def test_a_wrong_version_request_is_refused_by_the_running_coordinator(swarm):
    with grpc.insecure_channel(swarm.coordinator.address) as channel:
        stub = swarm_pb2_grpc.CoordinatorStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetHistory(swarm_pb2.GetHistoryRequest(schema_version=2), timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "GetHistoryRequest has schema_version 2, newer than the 1" in info.value.details()
        assert stub.GetHistory(swarm_pb2.GetHistoryRequest(schema_version=1), timeout=5).rounds


@pytest.mark.integration
def test_restarted_coordinator_serves_the_same_history_and_merges_nothing_twice(tmp_path):
    run, rng = "restart-test", random.Random(13)
    peer = SigningIdentity.generate()
    peer_dht = make_peer(peer, [], run=run)
    # a fixed DHT port, as a deployed coordinator has: it keeps its peer id across the restart, and a
    # peer that knows that id at another address (a random port) would keep dialling the dead one
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = coordinator_config(tmp_path, run=run, round_interval=0.2, dht={
        "initial_peers": [str(a) for a in peer_dht.get_visible_maddrs()],
        "host_maddrs": [f"/ip4/127.0.0.1/tcp/{port}"]})
    try:
        first = [publish(peer_dht, peer, step, random_stats(rng), run=run) for step in (0, 1)]
        with Coordinator(cfg) as coordinator, CoordinatorClient(coordinator.address) as client:
            wait_for_round(client, 1, timeout=15)
            before = (client.history(include_contributions=True), client.balance_weights())
            key = coordinator.identity.fingerprint
        assert list(before[0][0].contributions) == first

        with Coordinator(cfg) as restarted, CoordinatorClient(restarted.address) as client:
            assert restarted.identity.fingerprint == key
            assert (client.history(include_contributions=True), client.balance_weights()) == before
            skipped = [e for e in client.watch_events(duration=1.0) if e.kind == EventKind.ROUND_SKIPPED]
            assert skipped and client.balance_weights().round == 1  # the records still live were merged before
            # the peer's first store after the restart can report failure (its connection to the old
            # process is dead; the value may still land): a real peer's publisher tries again, so does this
            later = meta_signal(peer, 2, random_stats(rng), run=run)
            stored, deadline = False, time.monotonic() + 15
            while not stored and time.monotonic() < deadline:
                stored = publish_record(peer_dht, later, expires_in(120), identity=peer) or time.sleep(0.5)
            assert stored
            second = wait_for_round(client, 2, timeout=15)
            assert list(client.history(first_round=2, include_contributions=True)[0].contributions) == [later]
            polled = poll_balance(peer_dht, run, key, deadline=time.monotonic() + 15, after_round=1)
            assert polled.complete and polled.result.records == [second]
    finally:
        peer_dht.shutdown()


@pytest.mark.integration
def test_main_prints_how_to_reach_it_and_stops_on_sigterm(tmp_path):
    cfg = coordinator_config(tmp_path, run="main-test", round_interval=0.5)
    script = ("import sys; from coordinator.config import CoordinatorConfig; from coordinator.server import main; "
              "sys.exit(main(CoordinatorConfig.model_validate_json(sys.argv[1]), ready_file=sys.argv[2]))")
    ready_file = tmp_path / "ready.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg.model_dump(mode="json")), str(ready_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        lines = read_lines(proc.stdout, 5, timeout=60)
        address = next(line.split()[-1] for line in lines if "gRPC:" in line)
        with CoordinatorClient(address) as client:
            assert client.swarm_state().run_id == "main-test"
        dashboard = next(line.split()[-1] for line in lines if "dashboard:" in line)
        with urllib.request.urlopen(dashboard + "healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
        ready = wait_for_json(ready_file, 20)  # written just after the lines are printed
        assert dashboard == f"http://{ready['http_address']}/" and ready["grpc_address"] == address
        assert any(SigningIdentity.load_or_create(cfg.signing_key_path).fingerprint in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
