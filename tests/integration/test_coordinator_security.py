"""A coordinator that strangers can reach: admission, an operator token, TLS, bounded messages.

Real coordinator, real DHT peers and real gRPC/HTTPS on 127.0.0.1 (docs/security.md).
"""

from __future__ import annotations

import json
import random
import ssl
import time
import urllib.error
import urllib.request

import grpc
import pytest
from test_coordinator_swarm import LOOPBACK, make_peer, publish, random_stats

from coordinator.client import CoordinatorClient, CoordinatorError
from coordinator.config import CoordinatorConfig
from coordinator.server import Coordinator
from plumbing.dht_records import fetch
from plumbing.identity import SigningIdentity
from protos import swarm_pb2, swarm_pb2_grpc

pytestmark = pytest.mark.integration
RUN = "swarm-test"  # the helpers of test_coordinator_swarm publish into this run


def _coordinator(tmp_path, **overrides) -> Coordinator:
    cfg = CoordinatorConfig(run=RUN, listen="127.0.0.1:0", http_listen="127.0.0.1:0", db_path=str(tmp_path / "h.db"),
                            signing_key_path=str(tmp_path / "coordinator.key"), round_interval=600,
                            balance_ttl=1800, dht={"host_maddrs": LOOPBACK}, **overrides)
    return Coordinator(cfg).start()


def test_only_the_operator_admits_or_bans_and_every_record_of_a_banned_key_is_ignored(tmp_path):
    coordinator = _coordinator(tmp_path)
    honest, mallory = SigningIdentity.generate(), SigningIdentity.generate()
    peers = [make_peer(identity, coordinator.visible_maddrs()) for identity in (honest, mallory)]
    try:
        rng = random.Random(0)
        with CoordinatorClient(coordinator.address) as anonymous:
            with pytest.raises(CoordinatorError, match="UNAUTHENTICATED"):
                anonymous.set_admission(mallory.fingerprint, swarm_pb2.BAN)
        with CoordinatorClient(coordinator.address, token="not the token" * 2) as wrong:
            with pytest.raises(CoordinatorError, match="UNAUTHENTICATED"):
                wrong.set_admission(mallory.fingerprint, swarm_pb2.BAN)
        token = (tmp_path / "operator.token").read_text().strip()
        with CoordinatorClient(coordinator.address, token=token) as operator:
            with pytest.raises(CoordinatorError, match="INVALID_ARGUMENT.*not a key fingerprint"):
                operator.set_admission("mallory", swarm_pb2.BAN)
            admission = operator.set_admission(mallory.fingerprint, swarm_pb2.BAN)
        assert list(admission.banned) == [mallory.fingerprint] and not admission.closed and admission.version == 2
        for step, (dht, identity) in enumerate(zip(peers, (honest, mallory))):
            publish(dht, identity, step, random_stats(rng))
        deadline = time.monotonic() + 15
        while (result := coordinator.run_round()) is None:
            assert time.monotonic() < deadline, "no round merged the honest peer's record"
            time.sleep(0.3)
        assert [s.peer_id for s in result.contributions] == [honest.fingerprint]
        state = coordinator.ledger.swarm_state(time.time())
        assert {r.rule: r.count for r in state.rejected_by_rule} == {"banned": 1}
        assert state.admission.banned == [mallory.fingerprint]
        # the list reaches the peers' DHT, signed by the coordinator, so every honest peer can apply it
        deadline = time.monotonic() + 15
        while not (found := fetch(peers[0], RUN, swarm_pb2.Admission, owner=coordinator.identity.fingerprint)).records:
            assert time.monotonic() < deadline, "the admission list never reached the peers"
            time.sleep(0.3)
        assert found.records[0].banned == [mallory.fingerprint]
    finally:
        for dht in peers:
            dht.shutdown()
        coordinator.stop()
    restarted = _coordinator(tmp_path)  # the list and the token outlive a restart
    try:
        assert restarted.ledger.admission.banned == [mallory.fingerprint]
        assert restarted.operator_token == token
    finally:
        restarted.stop()


def test_a_closed_swarm_merges_only_admitted_peers(tmp_path):
    coordinator = _coordinator(tmp_path, trust={"closed": True})
    admitted, stranger = SigningIdentity.generate(), SigningIdentity.generate()
    peers = [make_peer(identity, coordinator.visible_maddrs()) for identity in (admitted, stranger)]
    try:
        coordinator.ledger.set_admission(admitted.fingerprint, swarm_pb2.ADMIT, time.time())
        rng = random.Random(1)
        for step, (dht, identity) in enumerate(zip(peers, (admitted, stranger))):
            publish(dht, identity, step, random_stats(rng))
        deadline = time.monotonic() + 15
        while (result := coordinator.run_round()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert [s.peer_id for s in result.contributions] == [admitted.fingerprint]
        assert {r.rule for r in coordinator.ledger.swarm_state(time.time()).rejected_by_rule} == {"not_admitted"}
    finally:
        for dht in peers:
            dht.shutdown()
        coordinator.stop()


def test_a_tls_coordinator_serves_status_and_the_dashboard_and_refuses_plaintext(tmp_path):
    coordinator = _coordinator(tmp_path, tls=True, dashboard_token=True)
    try:
        cert = (tmp_path / "tls" / "coordinator.crt").read_bytes()
        with CoordinatorClient(coordinator.address, tls_cert=cert) as client:
            assert client.swarm_state().coordinator_key == coordinator.identity.fingerprint
        with CoordinatorClient(coordinator.address, timeout=2.0) as plaintext:
            with pytest.raises(CoordinatorError, match="UNAVAILABLE"):
                plaintext.swarm_state()
        context = ssl.create_default_context(cadata=cert.decode())
        base = coordinator.http.url
        assert base.startswith("https://")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}api/v1/state", context=context, timeout=10)
        assert refused.value.code == 401 and "operator's token" in json.loads(refused.value.read())["error"]["message"]
        with urllib.request.urlopen(f"{base}healthz", context=context, timeout=10) as reply:
            assert reply.read() == b"ok\n"  # probes need no token
        token = (tmp_path / "operator.token").read_text().strip()
        request = urllib.request.Request(f"{base}api/v1/state", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            assert json.loads(reply.read())["coordinator"]["key"] == coordinator.identity.fingerprint
        with urllib.request.urlopen(f"{base}?token={token}", context=context, timeout=10) as reply:
            assert "rankswarm_token=" in reply.headers["Set-Cookie"] and "HttpOnly" in reply.headers["Set-Cookie"]
    finally:
        coordinator.stop()


def test_oversized_requests_are_refused_and_the_server_keeps_serving(tmp_path):
    coordinator = _coordinator(tmp_path, max_message_bytes=64 * 1024)
    try:
        with grpc.insecure_channel(coordinator.address) as channel:
            for method in ("GetBalanceWeights", "GetSwarmState", "GetHistory", "SetAdmission"):
                call = channel.unary_unary(f"/rankswarm.v1.Coordinator/{method}",
                                           request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
                with pytest.raises(grpc.RpcError) as info:
                    call(b"\x08\x01" + b"\x12" * (200 * 1024), timeout=5)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, method
            stub = swarm_pb2_grpc.CoordinatorStub(channel)
            assert stub.GetSwarmState(swarm_pb2.GetSwarmStateRequest(schema_version=1), timeout=5).run_id == RUN
    finally:
        coordinator.stop()
