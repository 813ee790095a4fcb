"""A small typed client for the coordinator's gRPC service, and the terminal status summary.

    with CoordinatorClient("127.0.0.1:50051") as client:
        print(render_status(client.swarm_state()))

Every call has a deadline; failures raise CoordinatorError with the address, the gRPC code
and the server's message (e.g. the two schema versions when they disagree).
"""

from __future__ import annotations

import time
from typing import Iterator

import grpc

from coordinator.events import SwarmEvent
from coordinator.views import RoundView, SwarmStateView
from protos import convert, swarm_pb2, swarm_pb2_grpc
from rankswarm.dht_records import BalanceRecord, PeerStatusRecord
from shaping import INDICATORS


class CoordinatorError(RuntimeError):
    """A coordinator call failed; `code` is the gRPC status code."""

    def __init__(self, address: str, code: grpc.StatusCode, details: str):
        super().__init__(f"coordinator at {address}: {code.name}: {details}")
        self.code = code


class CoordinatorClient:
    """Typed calls to one coordinator; returns the same objects the coordinator works with."""

    def __init__(self, address: str, *, timeout: float = 5.0, schema_version: int = convert.SCHEMA_VERSION):
        self.address, self.timeout = address, timeout
        self._version = schema_version  # only tests set another one
        self._channel = grpc.insecure_channel(address)
        self._stub = swarm_pb2_grpc.CoordinatorStub(self._channel)

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise CoordinatorError(self.address, err.code(), err.details()) from None

    def balance_weights(self) -> BalanceRecord | None:
        """The latest balance weights, or None before the first round."""
        reply = self._call(self._stub.GetBalanceWeights,
                           swarm_pb2.GetBalanceWeightsRequest(schema_version=self._version))
        return convert.balance_from_response(reply)

    def swarm_state(self) -> SwarmStateView:
        reply = self._call(self._stub.GetSwarmState, swarm_pb2.GetSwarmStateRequest(schema_version=self._version))
        return convert.swarm_state_from_pb(reply)

    def history(self, first_round: int = 0, last_round: int = 0, max_rounds: int = 0,
                include_contributions: bool = False) -> list[RoundView]:
        """Committed rounds in [first_round, last_round] (0 = open end), oldest first."""
        request = swarm_pb2.GetHistoryRequest(schema_version=self._version, first_round=first_round,
                                              last_round=last_round, max_rounds=max_rounds,
                                              include_contributions=include_contributions)
        reply = self._call(self._stub.GetHistory, request)
        convert.check_message_version(reply.schema_version, "GetHistoryResponse")
        return [convert.round_from_pb(item) for item in reply.rounds]

    def report_status(self, status: PeerStatusRecord) -> int:
        """Push a status report; returns the coordinator's latest round."""
        request = swarm_pb2.ReportPeerStatusRequest(schema_version=self._version,
                                                    status=convert.peer_status_to_pb(status))
        reply = self._call(self._stub.ReportPeerStatus, request)
        convert.check_message_version(reply.schema_version, "ReportPeerStatusResponse")
        return reply.round

    def watch_events(self, after_seq: int = 0, *, duration: float | None = None) -> Iterator[SwarmEvent]:
        """Stream events with seq > after_seq, for at most `duration` seconds (None = until cancelled)."""
        request = swarm_pb2.WatchSwarmEventsRequest(schema_version=self._version, after_seq=after_seq)
        stream = self._stub.WatchSwarmEvents(request, timeout=duration)
        try:
            for message in stream:
                yield convert.event_from_pb(message)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise CoordinatorError(self.address, err.code(), err.details()) from None
        finally:
            stream.cancel()


# ---------------------------------------------------------------- terminal summary

def _ago(now: float, then: float) -> str:
    seconds = max(0.0, now - then)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _balance_bar(explore: float | None, width: int = 20) -> str:
    if explore is None:
        return "(no gated responses yet)"
    filled = round(explore * width)
    return f"explore [{'#' * filled}{'.' * (width - filled)}] exploit  ({explore:.0%} / {1 - explore:.0%})"


def render_status(state: SwarmStateView, *, now: float | None = None) -> str:
    """A plain-text summary of the swarm for `rankswarm status`."""
    now = state.now if now is None else now
    lines = [f"run {state.run}   round {state.round}   coordinator key {state.coordinator_key}"]
    latest = state.latest
    if latest is None:
        lines.append("no round completed yet (waiting for peers' meta-signals)")
    else:
        base = latest.baselines
        lines += [f"last round {_ago(now, latest.issued_at)}: {latest.num_contributions} meta-signals from "
                  f"{latest.num_peers} peers   lambda_t {latest.lambda_t:.4g}",
                  "baselines  " + "  ".join(f"{name} {_fmt(base.value(name))}" for name in INDICATORS)
                  + ("" if base.ready else "   (not ready: no auxiliary signal yet)"),
                  "balance    " + _balance_bar(latest.explore_share)]
    active = sum(peer.active for peer in state.peers)
    lines.append(f"peers      {active} active / {len(state.peers)} seen")
    if state.peers:
        lines.append(f"  {'peer':<12} {'state':<6} {'step':>7} {'merged':>7} {'seen':>9} {'reach':<8} "
                     f"{'version':<10} {'roll/s':>7} {'sent/recv MB':>13}")
    for peer in state.peers:
        status = peer.status
        reach = status.reachability if status else "-"
        traffic = f"{status.bytes_sent / 1e6:.1f}/{status.bytes_received / 1e6:.1f}" if status else "-"
        lines.append(f"  {peer.peer_id[:12]:<12} {'up' if peer.active else 'gone':<6} "
                     f"{_fmt(peer.last_step, 'd'):>7} {peer.num_contributions:>7} {_ago(now, peer.last_seen):>9} "
                     f"{reach:<8} {(status.version if status else '-') or '-':<10} "
                     f"{_fmt(status.throughput if status else None, '.2f'):>7} {traffic:>13}")
    if state.visible_maddrs:
        lines.append("join the DHT at: " + state.visible_maddrs[0])
    return "\n".join(lines)


def wait_for_round(client: CoordinatorClient, round_: int, *, timeout: float, poll_s: float = 0.1) -> BalanceRecord:
    """Poll until the coordinator has committed `round_` (TimeoutError after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        latest = client.balance_weights()
        if latest is not None and latest.round >= round_:
            return latest
        if time.monotonic() > deadline:
            raise TimeoutError(f"coordinator at {client.address} did not reach round {round_} within {timeout} s "
                               f"(latest: {latest.round if latest else None})")
        time.sleep(poll_s)
