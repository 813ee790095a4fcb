"""The `rankswarm.v1.Coordinator` gRPC servicer: protobuf in and out, typed objects inside.

Every request is version-checked first: a missing schema_version is INVALID_ARGUMENT, a newer
one FAILED_PRECONDITION (both versions named in the message). Malformed contents are
INVALID_ARGUMENT; a failing history store is UNAVAILABLE. The servicer reads and writes
only through the `Ledger` and the `EventLog` it is given, and reads the swarm state through
the `Monitor` when given one (classified peers and alerts, as the dashboard shows them).
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Iterator, Sequence

import grpc
from hivemind.utils import get_dht_time

from coordinator.events import EventLog
from coordinator.ledger import Ledger
from coordinator.monitor import Monitor
from coordinator.store import StoreError
from protos import convert, swarm_pb2, swarm_pb2_grpc
from plumbing.dht_records import SchemaVersionError

log = logging.getLogger(__name__)


def _abort_on_errors(method):
    """Map the errors a request can cause to gRPC status codes (logged, never a stack trace to the client)."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except SchemaVersionError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except StoreError as err:
            log.error("history store failed while serving %s: %s", method.__name__, err)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"coordinator history unavailable: {err}")
    return wrapper


class CoordinatorService(swarm_pb2_grpc.CoordinatorServicer):
    """Serves balance weights, swarm state, history and events; accepts peer status reports."""

    def __init__(self, ledger: Ledger, events: EventLog, *, visible_maddrs: Callable[[], Sequence[str]] = tuple,
                 max_history_rounds: int = 1000, watch_poll_s: float = 0.5, monitor: Monitor | None = None):
        self._ledger, self._events, self._monitor = ledger, events, monitor
        self._visible_maddrs = visible_maddrs
        self._max_history_rounds = max_history_rounds
        self._watch_poll_s = watch_poll_s

    @_abort_on_errors
    def GetBalanceWeights(self, request, context):
        convert.check_request_version(request.schema_version, "GetBalanceWeightsRequest")
        return convert.balance_response(self._ledger.latest)

    @_abort_on_errors
    def GetSwarmState(self, request, context):
        convert.check_request_version(request.schema_version, "GetSwarmStateRequest")
        now = get_dht_time()
        view = (self._monitor.snapshot(now).state if self._monitor is not None
                else self._ledger.swarm_state(now, self._visible_maddrs()))
        return convert.swarm_state_to_pb(view)

    @_abort_on_errors
    def GetHistory(self, request, context):
        convert.check_request_version(request.schema_version, "GetHistoryRequest")
        if request.last_round and request.first_round > request.last_round:
            raise ValueError(f"first_round {request.first_round} is after last_round {request.last_round}")
        limit = min(request.max_rounds or self._max_history_rounds, self._max_history_rounds)
        rounds = self._ledger.history(request.first_round, request.last_round, limit,
                                      request.include_contributions)
        return swarm_pb2.GetHistoryResponse(schema_version=convert.SCHEMA_VERSION,
                                            rounds=[convert.round_to_pb(view) for view in rounds])

    @_abort_on_errors
    def ReportPeerStatus(self, request, context):
        convert.check_request_version(request.schema_version, "ReportPeerStatusRequest")
        if not request.HasField("status"):
            raise ValueError("ReportPeerStatusRequest has no status")
        round_ = self._ledger.report_status(convert.peer_status_from_pb(request.status), get_dht_time())
        return swarm_pb2.ReportPeerStatusResponse(schema_version=convert.SCHEMA_VERSION, round=round_)

    def WatchSwarmEvents(self, request, context) -> Iterator[swarm_pb2.SwarmEvent]:
        try:
            convert.check_request_version(request.schema_version, "WatchSwarmEventsRequest")
        except SchemaVersionError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        seq = request.after_seq
        if seq > self._events.last_seq:
            seq = 0  # sequence numbers restart with the coordinator: a client ahead of us resumes from the start
        # the timeout bounds how long a cancelled client or a stopping coordinator keeps this thread
        while context.is_active() and not self._events.closed:
            for event in self._events.wait_after(seq, timeout=self._watch_poll_s):
                yield convert.event_to_pb(event)
                seq = event.seq


def add_to_server(service: CoordinatorService, server: grpc.Server) -> None:
    swarm_pb2_grpc.add_CoordinatorServicer_to_server(service, server)
