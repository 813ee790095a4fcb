"""The gRPC service on a real server at 127.0.0.1:0 (no DHT): version refusal, history, status, events."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from coordinator_fakes import RUN, batch_stats, meta_record, peer_status, random_batch

from coordinator.client import CoordinatorClient, CoordinatorError, render_status
from coordinator.events import EventKind, EventLog
from coordinator.ledger import Ledger
from coordinator.rounds import RoundState, merge_round
from coordinator.service import CoordinatorService, add_to_server
from coordinator.store import HistoryStore
from protos import records, swarm_pb2, swarm_pb2_grpc
from shaping import ShapingConfig


@pytest.fixture
def served(tmp_path):
    """A ledger behind a real gRPC server; yields (ledger, events, address)."""
    events = EventLog()
    ledger = Ledger(HistoryStore(tmp_path / "h.db", RUN), events, run=RUN, coordinator_key="k",
                    shaping=ShapingConfig(), peer_timeout=60.0)
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    add_to_server(CoordinatorService(ledger, events, visible_maddrs=lambda: ["/ip4/127.0.0.1/tcp/1/p2p/Qm"],
                                     max_history_rounds=2, watch_poll_s=0.05), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield ledger, events, f"127.0.0.1:{port}"
    events.close()
    server.stop(grace=None).wait(5)
    ledger.store.close()


def _ingest_rounds(ledger: Ledger, num_rounds: int) -> list:
    rng = random.Random(7)
    return [ledger.ingest([meta_record(p, r, batch_stats(*random_batch(rng, 4)), published_at=100.0 + r)
                           for p in ("a", "b")], now=100.5 + r) for r in range(num_rounds)]


REQUESTS = {
    "GetBalanceWeights": swarm_pb2.GetBalanceWeightsRequest,
    "GetSwarmState": swarm_pb2.GetSwarmStateRequest,
    "GetHistory": swarm_pb2.GetHistoryRequest,
}


@pytest.mark.integration
@pytest.mark.parametrize("method", [*REQUESTS, "WatchSwarmEvents"])
def test_wrong_schema_versions_are_refused_by_every_method(served, method):
    _, _, address = served
    with grpc.insecure_channel(address) as channel:
        call = getattr(swarm_pb2_grpc.CoordinatorStub(channel), method)
        request_type = REQUESTS.get(method, swarm_pb2.WatchSwarmEventsRequest)
        refusals = [(2, grpc.StatusCode.FAILED_PRECONDITION, "has schema_version 2, newer than the 1 this rankswarm"),
                    (0, grpc.StatusCode.INVALID_ARGUMENT, "has no schema_version")]
        for version, code, text in refusals:
            with pytest.raises(grpc.RpcError) as info:
                reply = call(request_type(schema_version=version), timeout=5)
                if method == "WatchSwarmEvents":
                    next(iter(reply))
            assert info.value.code() == code and text in info.value.details()
            assert info.value.details().startswith(f"{request_type.__name__}.schema_version:")


@pytest.mark.integration
def test_nobody_can_push_a_status_over_grpc_and_broken_requests_are_refused(served):
    """A status reached the coordinator unsigned through ReportPeerStatus: anyone could report any peer at any
    step, dated in the future so that it stayed the newest. The method is gone; statuses come only as signed
    DHT records. Requests that break a rule are refused naming the field, bytes that are no request are
    refused by gRPC, and the server keeps serving."""
    ledger, _, address = served
    with grpc.insecure_channel(address) as channel:
        stub = swarm_pb2_grpc.CoordinatorStub(channel)
        spoof = channel.unary_unary("/rankswarm.v1.Coordinator/ReportPeerStatus",
                                    request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        status = swarm_pb2.PeerStatus(schema_version=2, run_id=RUN, peer_id="a", step=999_999, reported_at=1e12)
        with pytest.raises(grpc.RpcError) as info:
            spoof(b"\x08\x01\x12" + bytes([status.ByteSize()]) + status.SerializeToString(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as info:
            stub.GetHistory(swarm_pb2.GetHistoryRequest(schema_version=1, first_round=3, last_round=2), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "first_round 3" in info.value.details()
        garbage = channel.unary_unary("/rankswarm.v1.Coordinator/GetHistory",
                                      request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        for junk in (b"\xff\xff\xff\x01garbage", bytes(range(256)) * 4):
            with pytest.raises(grpc.RpcError) as info:
                garbage(junk, timeout=5)
            assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
        reply = stub.GetBalanceWeights(swarm_pb2.GetBalanceWeightsRequest(schema_version=1), timeout=5)
        assert reply.schema_version == 1
    assert list(ledger.swarm_state(now=2.0).peers) == []  # nothing reached the ledger


@pytest.mark.integration
def test_typed_client_reads_what_the_ledger_committed(served):
    ledger, _, address = served
    with CoordinatorClient(address) as client:
        assert client.balance_weights() is None
        results = _ingest_rounds(ledger, 3)
        assert client.balance_weights() == results[-1].record
        history = client.history(include_contributions=True)
        assert [view.weights for view in history] == [r.record for r in results[1:]]  # server cap: 2 rounds
        assert list(history[0].contributions) == list(results[1].contributions)
        assert [v.weights.round for v in client.history(first_round=1, last_round=1)] == [1]
        assert list(client.history(first_round=1, last_round=1)[0].contributions) == []
        status = peer_status("a", 103.0, version="0.1.0", reachability=swarm_pb2.REACHABILITY_DIRECT, step=2,
                             throughput=3.0, bytes_sent=2_000_000, bytes_received=5_000_000)
        ledger.note_statuses([status], now=103.0)  # as the round loop stores it from the DHT
        state = client.swarm_state()
        assert state.round == 3 and state.latest == results[-1].record and state.coordinator_key == "k"
        assert {p.peer_id: records.get(p, "status") for p in state.peers} == {"a": status, "b": None}
        text = render_status(state, now=104.0)
        assert "round 3" in text and "2 live of 2: 2 online" in text and "direct" in text and "2.0/5.0" in text
        with pytest.raises(CoordinatorError, match="INVALID_ARGUMENT.*first_round 3 is after last_round 2"):
            client.history(first_round=3, last_round=2)


@pytest.mark.integration
def test_events_stream_and_resume_after_a_sequence_number(served):
    ledger, events, address = served
    received, done = [], threading.Event()

    def watch():
        with CoordinatorClient(address) as client:
            for event in client.watch_events(duration=10.0):
                received.append(event)
                if event.kind == EventKind.ROUND_COMPLETED:
                    done.set()
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    results = _ingest_rounds(ledger, 1)
    assert done.wait(10.0)
    watcher.join(10.0)
    assert [e.kind for e in received] == [EventKind.PEER_JOINED, EventKind.PEER_JOINED, EventKind.ROUND_COMPLETED]
    assert received[-1].weights == results[0].record
    with CoordinatorClient(address) as client:
        resumed = list(client.watch_events(after_seq=2, duration=0.5))
        assert [e.seq for e in resumed] == [3]
        from_the_future = list(client.watch_events(after_seq=999, duration=0.5))  # coordinator restarted
        assert [e.seq for e in from_the_future] == [1, 2, 3]


class _BrokenCoordinator(swarm_pb2_grpc.CoordinatorServicer):
    """A coordinator that answers with what this client must not accept: a newer schema, a NaN."""

    def GetSwarmState(self, request, context):
        return swarm_pb2.SwarmState(schema_version=records.latest_schema(swarm_pb2.SwarmState) + 1, run_id=RUN)

    def GetBalanceWeights(self, request, context):
        signal = meta_record("a", 0, batch_stats(*random_batch(random.Random(1), 4)))
        weights = merge_round(RoundState.initial(ShapingConfig()), [signal], ShapingConfig(), run=RUN,
                              coordinator_key="k", issued_at=1.0).record
        return swarm_pb2.GetBalanceWeightsResponse(schema_version=1, available=True,
                                                   weights=records.replace(weights, lambda_t=float("nan")))


@pytest.mark.integration
def test_the_client_refuses_replies_that_break_a_rule_with_a_coordinator_error():
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    swarm_pb2_grpc.add_CoordinatorServicer_to_server(_BrokenCoordinator(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with CoordinatorClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(CoordinatorError, match="FAILED_PRECONDITION: invalid reply: SwarmState.schema_version"):
                client.swarm_state()
            with pytest.raises(CoordinatorError, match=r"DATA_LOSS: .*weights.lambda_t: is nan.*\(rule finite\)"):
                client.balance_weights()
    finally:
        server.stop(grace=None).wait(5)
