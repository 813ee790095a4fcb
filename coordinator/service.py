"""The `rankswarm.v1.Coordinator` gRPC servicer: the coordinator's records go out as they are.

Every request is validated first (`protos.records.validate`, nested messages included): a
missing schema_version is INVALID_ARGUMENT, a newer one FAILED_PRECONDITION (both versions named
in the message), any other broken rule INVALID_ARGUMENT naming the field and the rule; a failing
history store is UNAVAILABLE. Bytes that are not a request at all never reach the servicer: gRPC
answers them INTERNAL ("failed to deserialize") and keeps serving. The servicer reads and writes
only through the `Ledger` and the `EventLog` it is given, and reads the swarm state through
the `Monitor` when given one (classified peers and alerts, as the dashboard shows them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence

import grpc
from hivemind.utils import get_dht_time

from coordinator.events import EventLog
from coordinator.ledger import Ledger
from coordinator.monitor import Monitor
from coordinator.security import token_matches
from coordinator.store import StoreError
from protos import records, swarm_pb2, swarm_pb2_grpc
from protos.records import SchemaVersionError

log = logging.getLogger(__name__)


_VERSION = records.latest_schema(swarm_pb2.GetSwarmStateRequest)  # of the responses this server sends


def _abort(context, err: Exception, method: str) -> None:
    """End the call with the status code for `err` (logged, never a stack trace to the client)."""
    if isinstance(err, SchemaVersionError):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
    elif isinstance(err, ValueError):  # RecordError included
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
    log.error("history store failed while serving %s: %s", method, err)
    context.abort(grpc.StatusCode.UNAVAILABLE, f"coordinator history unavailable: {err}")


def _validated_requests(method):
    """Validate the request, then map the errors a request can cause to gRPC status codes."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, records.validate(request), context)
        except (ValueError, StoreError) as err:
            _abort(context, err, method.__name__)
    return wrapper


class CoordinatorService(swarm_pb2_grpc.CoordinatorServicer):
    """Serves balance weights, swarm state, history and events. Read-only: a peer's status reaches the
    coordinator only as its signed DHT record."""

    def __init__(self, ledger: Ledger, events: EventLog, *, visible_maddrs: Callable[[], Sequence[str]] = tuple,
                 max_history_rounds: int = 1000, watch_poll_s: float = 0.5, monitor: Monitor | None = None,
                 operator_token: str | None = None):
        self._ledger, self._events, self._monitor = ledger, events, monitor
        self._operator_token = operator_token  # None: the write methods are refused
        self._visible_maddrs = visible_maddrs
        self._max_history_rounds = max_history_rounds
        self._watch_poll_s = watch_poll_s

    @_validated_requests
    def GetBalanceWeights(self, request, context):
        latest = self._ledger.latest
        return swarm_pb2.GetBalanceWeightsResponse(schema_version=_VERSION, available=latest is not None,
                                                   weights=latest)

    @_validated_requests
    def GetSwarmState(self, request, context):
        now = get_dht_time()
        return (self._monitor.snapshot(now).state if self._monitor is not None
                else self._ledger.swarm_state(now, self._visible_maddrs()))

    @_validated_requests
    def GetHistory(self, request, context):
        if request.last_round and request.first_round > request.last_round:
            raise ValueError(f"first_round {request.first_round} is after last_round {request.last_round}")
        limit = min(request.max_rounds or self._max_history_rounds, self._max_history_rounds)
        rounds = self._ledger.history(request.first_round, request.last_round, limit,
                                      request.include_contributions)
        return swarm_pb2.GetHistoryResponse(schema_version=_VERSION, rounds=rounds)

    @_validated_requests
    def SetAdmission(self, request, context):
        authorization = dict(context.invocation_metadata()).get("authorization")
        if self._operator_token is None or not token_matches(authorization, self._operator_token):
            log.warning("refused SetAdmission from %s: no or wrong operator token", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "SetAdmission needs the operator token: send "
                          "'authorization: Bearer <token>' (rankswarm admit/ban --token-file)")
        return self._ledger.set_admission(request.peer_id, request.action, get_dht_time())

    def WatchSwarmEvents(self, request, context) -> Iterator[swarm_pb2.SwarmEvent]:
        try:
            records.validate(request)
        except ValueError as err:
            _abort(context, err, "WatchSwarmEvents")
        seq = request.after_seq
        if seq > self._events.last_seq:
            seq = 0  # sequence numbers restart with the coordinator: a client ahead of us resumes from the start
        # the timeout bounds how long a cancelled client or a stopping coordinator keeps this thread
        while context.is_active() and not self._events.closed:
            for event in self._events.wait_after(seq, timeout=self._watch_poll_s):
                yield event
                seq = event.seq


def add_to_server(service: CoordinatorService, server: grpc.Server) -> None:
    swarm_pb2_grpc.add_CoordinatorServicer_to_server(service, server)
