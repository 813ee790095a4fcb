"""The dashboard of a live coordinator (real DHT, gRPC, HTTP, SQLite) fed by peers' signed DHT records.

What the peers published must come back unchanged through /api/v1/state, /api/v1/history, /metrics
and `rankswarm status` (gRPC); old (schema-1) status reports still show, newer ones, schema-1
reports that claim schema-2 fields and records in the pre-protobuf format are rejected and raise
an alert. About 15 s, mostly p2p daemon start-up.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from hivemind.utils import get_dht_time
from live_swarm import LiveSwarm
from prometheus_client.parser import text_string_to_metric_families

from coordinator.client import CoordinatorClient, render_status
from coordinator.views import reachability, state_of
from plumbing.dht_keys import peer_status_key
from plumbing.dht_records import expires_in
from protos import records, swarm_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    swarm = LiveSwarm(tmp_path_factory.mktemp("live"), num_peers=3)
    try:
        swarm.failing.add(2)
        for _ in range(3):
            swarm.round()
        yield swarm
    finally:
        swarm.stop()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def test_state_and_history_show_what_the_peers_published(live):
    doc = get_json(f"{live.base_url}/api/v1/state")
    latest = live.results[-1].record
    assert doc["run"] == live.run and doc["coordinator"]["key"] == live.coordinator.identity.fingerprint
    assert doc["coordinator"]["http_address"] == live.coordinator.http_address
    assert doc["round"]["number"] == latest.round == 3 and doc["round"]["num_peers"] == 3
    assert doc["round"]["merged"]["score"]["mean"] == records.stats_of(latest.merged).moments["score"].mean
    peers = {p["peer_id"]: p for p in doc["peers"]["items"]}
    for peer in live.peers:
        row, status = peers[peer.peer_id], peer.statuses[-1]
        assert row["state"] == "online"
        for key in ("reward", "accuracy", "heldout_accuracy", "kl", "er", "erv", "era", "gate", "tokens_per_s",
                    "bytes_sent", "bytes_received", "compression_ratio", "epoch", "averaging_failures",
                    "last_averaging_error", "address", "version", "balance_round"):
            assert row[key] == records.get(status, key), key
        assert row["reachability"] == reachability(status)
        assert row["status_reported_at"] == status.reported_at and row["num_contributions"] == 3
    assert peers[live.peers[1].peer_id]["reachability"] == "relayed"
    [alert] = doc["alerts"]["active"]
    assert alert["kind"] == "averaging_failures" and alert["peer_id"] == live.peers[2].peer_id
    assert "2 averaging failure(s)" in alert["message"]  # rises seen: 1 -> 2 -> 3

    history = get_json(f"{live.base_url}/api/v1/history?peer={live.peers[0].peer_id}")
    assert history["rounds"]["round"] == [1, 2, 3]
    assert history["rounds"]["reward"] == [records.stats_of(r.record.merged).moments["score"].mean
                                           for r in live.results]
    assert history["rounds"]["tokens"] == [sum(c.num_tokens for c in r.contributions) for r in live.results]
    series = history["peers"][live.peers[0].peer_id]
    assert series["kl"] == [s.kl for s in live.peers[0].statuses]
    assert series["heldout_accuracy"] == [s.heldout_accuracy for s in live.peers[0].statuses]


def test_metrics_and_terminal_status_agree_with_the_page(live):
    with urllib.request.urlopen(f"{live.base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    for peer in live.peers:
        status, label = peer.statuses[-1], (("peer", peer.peer_id),)
        assert samples[("rankswarm_peer_reward", label)] == status.reward
        assert samples[("rankswarm_peer_heldout_accuracy_ratio", label)] == status.heldout_accuracy
        assert samples[("rankswarm_peer_sent_bytes_total", label)] == status.bytes_sent
        assert samples[("rankswarm_peer_indicator", (("indicator", "er"), ("peer", peer.peer_id)))] == status.er
    assert samples[("rankswarm_round", ())] == live.results[-1].record.round
    assert samples[("rankswarm_peers", (("state", "online"),))] == 3

    with CoordinatorClient(live.coordinator.address) as client:
        state = client.swarm_state()
    assert [state_of(p) for p in state.peers] == ["online"] * 3
    assert {p.peer_id: p.status for p in state.peers} == {p.peer_id: p.statuses[-1] for p in live.peers}
    assert [a.kind for a in state.alerts] == ["averaging_failures"]
    text = render_status(state)
    assert f"dashboard  http://{live.coordinator.http_address}/" in text
    assert "3 live of 3: 3 online" in text and "alerts     1 active" in text
    tokens = sum(p.statuses[-1].tokens_per_s for p in live.peers)
    assert f"{tokens:,.0f} tokens/s" in text
    for peer in live.peers:
        assert peer.peer_id[:12] in text


def test_old_status_reports_show_and_newer_ones_are_rejected(live):
    old_peer, new_peer, claiming_peer = live.peers
    key = peer_status_key(live.run)
    old = records.build(swarm_pb2.PeerStatus, schema_version=1, run_id=live.run, peer_id=old_peer.peer_id,
                        version="0.0.9", reachability=swarm_pb2.REACHABILITY_DIRECT, step=9, throughput=1.5,
                        bytes_sent=10, bytes_received=20, reported_at=get_dht_time())
    assert old_peer.dht.store(key, records.encode(old), expires_in(600), subkey=old_peer.identity.owner_subkey())
    newer = records.replace(new_peer.statuses[-1], schema_version=4, reported_at=get_dht_time())
    assert new_peer.dht.store(key, newer.SerializeToString(), expires_in(600),
                              subkey=new_peer.identity.owner_subkey())
    # a report that says schema 1 but carries a schema-2 field: not honest about what it is
    claiming = records.replace(claiming_peer.statuses[-1], schema_version=1, reported_at=get_dht_time())
    assert claiming_peer.dht.store(key, claiming.SerializeToString(), expires_in(600),
                                   subkey=claiming_peer.identity.owner_subkey())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        live.coordinator.run_round()
        doc = get_json(f"{live.base_url}/api/v1/state")
        row = {p["peer_id"]: p for p in doc["peers"]["items"]}[old_peer.peer_id]
        if row["status_schema"] == 1 and doc["coordinator"]["records_rejected"] >= 2:
            break
        time.sleep(0.3)
    assert row["version"] == "0.0.9" and row["version_mismatch"] and row["tokens_per_s"] is None
    assert row["step"] == max(9, old_peer.step) and row["status_schema"] == 1
    assert row["baselines_source"] == "unknown" and row["averaging_rounds"] is None  # what schema 1 cannot say
    kinds = {a["kind"] for a in doc["alerts"]["active"]}
    assert {"records_rejected", "version_mismatch"} <= kinds
    reasons = [e["detail"] for e in doc["events"] if e["kind"] == "record_rejected"]
    assert any("PeerStatus has schema_version 4, newer than the 3" in r for r in reasons), reasons
    assert any("exists since schema 2 and the record says schema 1" in r for r in reasons), reasons
    rows = {p["peer_id"]: p for p in doc["peers"]["items"]}
    assert rows[new_peer.peer_id]["status_schema"] == 3  # the refused reports changed nothing
    assert rows[claiming_peer.peer_id]["status_schema"] == 3


def test_a_status_for_another_peer_or_from_the_future_is_rejected_and_counted_by_rule(live):
    """The attack on ReportPeerStatus, tried through the DHT: a report claiming another peer's id (step 999999)
    and a report dated far in the future. Neither reaches the peer table; both are counted by rule."""
    honest, forger, _ = live.peers
    key = peer_status_key(live.run)
    before = get_json(f"{live.base_url}/api/v1/state")["coordinator"]["records_rejected_by_rule"]
    forged = records.replace(forger.statuses[-1], peer_id=honest.peer_id, step=999_999, reported_at=get_dht_time())
    assert forger.dht.store(key, records.encode(forged), expires_in(600), subkey=forger.identity.owner_subkey())
    future = records.replace(honest.statuses[-1], step=999_999, reported_at=get_dht_time() + 86_400)
    assert honest.dht.store(key, records.encode(future), expires_in(600), subkey=honest.identity.owner_subkey())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        live.coordinator.run_round()
        doc = get_json(f"{live.base_url}/api/v1/state")
        by_rule = doc["coordinator"]["records_rejected_by_rule"]
        if by_rule.get("owner", 0) > before.get("owner", 0) and by_rule.get("future", 0) > before.get("future", 0):
            break
        time.sleep(0.3)
    assert by_rule["owner"] == before.get("owner", 0) + 1 and by_rule["future"] == before.get("future", 0) + 1
    rows = {p["peer_id"]: p for p in doc["peers"]["items"]}
    assert rows[honest.peer_id]["step"] < 999_999
    with urllib.request.urlopen(f"{live.base_url}/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    assert 'rankswarm_records_rejected_by_rule_total{rule="future"}' in metrics
