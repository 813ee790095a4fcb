"""A small typed client for the coordinator's gRPC service, and the terminal status summary.

    with CoordinatorClient("127.0.0.1:50051") as client:
        print(render_status(client.swarm_state()))

Every call has a deadline; failures raise CoordinatorError with the address, the gRPC code
and the server's message (e.g. the two schema versions when they disagree).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import grpc

from coordinator.events import SwarmEvent
from coordinator.health import LIVE_STATES, STATE_ORDER, reported, summarize
from coordinator.views import PeerView, RoundView, SwarmStateView
from protos import convert, swarm_pb2, swarm_pb2_grpc
from plumbing.dht_records import BalanceRecord, PeerStatusRecord
from plumbing.formatting import duration, fmt
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

def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _mb(count: int | None) -> float | None:
    return None if count is None else count / 1e6


def _balance_bar(explore: float | None, width: int = 20) -> str:
    if explore is None:
        return "(no gated responses yet)"
    filled = round(explore * width)
    return f"explore [{'#' * filled}{'.' * (width - filled)}] exploit  ({explore:.0%} / {1 - explore:.0%})"


def _classified(peers: tuple[PeerView, ...]) -> tuple[PeerView, ...]:
    """Peers with a state; an older coordinator sends none, so fall back on its `active` flag."""
    return tuple(p if p.state else dataclasses.replace(p, state="online" if p.active else "gone") for p in peers)


def _swarm_lines(state: SwarmStateView, peers: tuple[PeerView, ...]) -> list[str]:
    summary = summarize(peers)
    live = sum(summary.by_state[s] for s in LIVE_STATES)
    counts = ", ".join(f"{n} {name}" for name, n in summary.by_state.items() if n)
    versions = ""
    if len(summary.versions) > 1:
        versions = "   (versions: " + ", ".join(f"{v} x{n}" for v, n in sorted(summary.versions.items())) + ")"
    means = summary.means
    lines = [f"peers      {live} live of {summary.num_peers}" + (f": {counts}" if counts else "") + versions]
    latest = state.latest
    reward = latest.merged.moments["score"].mean if latest is not None else None
    lines.append(f"training   reward {fmt(reward, '+.3f')} (round mean)   held-out accuracy "
                 f"{fmt(means['heldout_accuracy'], '.1%')}   train accuracy {fmt(means['accuracy'], '.1%')}   "
                 f"KL {fmt(means['kl'], '.4f')}")
    rounds = (summary.averaging_failures + summary.averaging_rounds if summary.averaging_failures is not None
              else None)
    lines.append(f"throughput {fmt(summary.tokens_per_s, ',.0f')} tokens/s (live peers' latest steps, summed)   "
                 f"{fmt(summary.rollouts_per_s, '.1f')} rollouts/s (since start)   epoch {fmt(summary.epoch, 'd')}   "
                 f"averaging failures {fmt(summary.averaging_failures, 'd')} of {fmt(rounds, 'd')} rounds")
    ratio = f"{summary.compression_ratio:.1f}x smaller than dense fp32" if summary.compression_ratio else "-"
    lines.append(f"traffic    {fmt(_mb(summary.bytes_sent), '.1f')} MB sent / "
                 f"{fmt(_mb(summary.bytes_received), '.1f')} MB received   compression {ratio}")
    return lines


def _round_lines(state: SwarmStateView, now: float) -> list[str]:
    latest = state.latest
    if latest is None:
        return ["round      none completed yet (waiting for peers' meta-signals)"]
    base = latest.baselines
    return [f"round      #{latest.round} committed {duration(now - latest.issued_at)} ago: {latest.num_contributions} "
            f"meta-signals from {latest.num_peers} peers   lambda_t {latest.lambda_t:.4g}",
            "baselines  " + "  ".join(f"{name} {fmt(base.value(name))}" for name in INDICATORS)
            + ("" if base.ready else "   (not ready: no auxiliary signal yet)"),
            "balance    " + _balance_bar(latest.explore_share)]


def _alert_lines(state: SwarmStateView, now: float) -> list[str]:
    if not state.alerts:
        return ["alerts     none"]
    order = {"critical": 0, "warning": 1, "info": 2}
    lines = [f"alerts     {len(state.alerts)} active"]
    for alert in sorted(state.alerts, key=lambda a: (order.get(a.severity, 3), a.started_at)):
        lines.append(f"  {alert.severity.upper():<8} since {_clock(alert.started_at)} "
                     f"({duration(now - alert.started_at)}, round {alert.started_round})  {alert.message}")
    return lines


_PEER_HEADER = (f"  {'state':<11} {'peer':<12} {'version':<9} {'reach':<8} {'seen':>5} {'step':>6} {'epoch':>7} "
                f"{'roll/s':>7} {'tok/s':>7} {'sent/recv MB':>13} {'compr':>6} {'reward':>7} {'ER':>7} {'ERV':>7} "
                f"{'ERA':>7} {'acc':>5} {'held':>5} {'fails':>7}")


def _peer_line(peer: PeerView, now: float) -> str:
    s = peer.status
    version = (s.version or "-") + ("!" if peer.version_mismatch else "") if s else "-"
    steps = [v for v in (s.step if s else None, peer.last_step) if v is not None]
    epoch = "-" if s is None or s.epoch is None else f"{s.epoch}" + (f"-{peer.epoch_lag}" if peer.epoch_lag else "")
    traffic = f"{s.bytes_sent / 1e6:.1f}/{s.bytes_received / 1e6:.1f}" if s else "-"
    failures, rounds = reported(s, "averaging_failures"), reported(s, "averaging_rounds")
    fails = "-" if failures is None else f"{failures}/{failures + rounds}"
    return (f"  {peer.state:<11} {peer.peer_id[:12]:<12} {version:<9} {(s.reachability if s else '-'):<8} "
            f"{duration(now - peer.last_seen):>5} {fmt(max(steps) if steps else None, 'd'):>6} {epoch:>7} "
            f"{fmt(s.throughput if s else None, '.2f'):>7} {fmt(s.tokens_per_s if s else None, '.0f'):>7} "
            f"{traffic:>13} {fmt(s.compression_ratio if s else None, '.1f'):>6} "
            f"{fmt(s.reward if s else None, '+.3f'):>7} {fmt(s.er if s else None, '.4g'):>7} "
            f"{fmt(s.erv if s else None, '.4g'):>7} {fmt(s.era if s else None, '.4g'):>7} "
            f"{fmt(s.accuracy if s else None, '.0%'):>5} {fmt(s.heldout_accuracy if s else None, '.0%'):>5} "
            f"{fails:>7}")


def render_status(state: SwarmStateView, *, now: float | None = None, max_peers: int = 30) -> str:
    """The swarm at a glance for `rankswarm status`: the dashboard's summary, alerts and peer table in text.

    Peers are listed problems first (unreachable, behind, joining, online, gone), at most `max_peers`."""
    now = state.now if now is None else now
    peers = _classified(state.peers)
    version = f"   coordinator {state.coordinator_version}" if state.coordinator_version else ""
    lines = [f"run {state.run}   round {state.round}{version}   coordinator key {state.coordinator_key}"]
    if state.http_address:
        host, _, port = state.http_address.rpartition(":")
        host = "127.0.0.1" if host == "0.0.0.0" else host
        lines.append(f"dashboard  http://{host}:{port}/")
    lines += _swarm_lines(state, peers) + _round_lines(state, now) + _alert_lines(state, now)
    ordered = sorted(peers, key=lambda p: (STATE_ORDER.get(p.state, len(STATE_ORDER)), p.peer_id))
    if ordered:
        lines += [f"peers (problems first; {min(len(ordered), max_peers)} of {len(ordered)}; "
                  f"! = version differs from the coordinator's)", _PEER_HEADER]
        lines += [_peer_line(peer, now) for peer in ordered[:max_peers]]
        if len(ordered) > max_peers:
            lines.append(f"  ... and {len(ordered) - max_peers} more (rankswarm status --peers N, or the dashboard)")
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
