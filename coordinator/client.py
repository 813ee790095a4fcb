"""A small typed client for the coordinator's gRPC service, and the terminal status summary.

    with CoordinatorClient("127.0.0.1:50051") as client:
        print(render_status(client.swarm_state()))

Every call has a deadline; failures raise CoordinatorError with the address, the gRPC code
and the server's message (e.g. the two schema versions when they disagree). Replies are the
messages of swarm.proto, validated (`protos.records.validate`) before they are returned; a
reply that breaks a rule raises CoordinatorError too (FAILED_PRECONDITION for a newer schema,
DATA_LOSS otherwise), naming the field and the rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from coordinator.health import LIVE_STATES, STATE_ORDER, reported, summarize
from coordinator.views import health, reachability, state_of, status_of
from plumbing.formatting import duration, fmt
from protos import records, swarm_pb2, swarm_pb2_grpc
from shaping import INDICATORS

_VERSION = records.latest_schema(swarm_pb2.GetSwarmStateRequest)  # of the requests this client sends


class CoordinatorError(RuntimeError):
    """A coordinator call failed; `code` is the gRPC status code."""

    def __init__(self, address: str, code: grpc.StatusCode, details: str):
        super().__init__(f"coordinator at {address}: {code.name}: {details}")
        self.code = code


class CoordinatorClient:
    """Typed calls to one coordinator; returns the same objects the coordinator works with."""

    def __init__(self, address: str, *, timeout: float = 5.0, schema_version: int = _VERSION,
                 tls_cert: bytes | None = None, token: str | None = None):
        """`tls_cert`: the coordinator's certificate (PEM) to trust, for a coordinator with `tls = true`;
        `token`: the operator token, for the write calls."""
        self.address, self.timeout = address, timeout
        self._version = schema_version  # only tests set another one
        self._token = token
        self._channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_cert))
                         if tls_cert is not None else grpc.insecure_channel(address))
        self._stub = swarm_pb2_grpc.CoordinatorStub(self._channel)

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, *, authorized: bool = False):
        metadata = [("authorization", f"Bearer {self._token}")] if authorized and self._token else None
        try:
            reply = method(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as err:
            raise CoordinatorError(self.address, err.code(), err.details()) from None
        return self._validated(reply)

    def _validated(self, reply):
        try:
            return records.validate(reply)
        except records.RecordError as err:
            code = (grpc.StatusCode.FAILED_PRECONDITION if isinstance(err, records.SchemaVersionError)
                    else grpc.StatusCode.DATA_LOSS)
            raise CoordinatorError(self.address, code, f"invalid reply: {err}") from None

    def balance_weights(self) -> swarm_pb2.BalanceWeights | None:
        """The latest balance weights, or None before the first round."""
        reply = self._call(self._stub.GetBalanceWeights,
                           swarm_pb2.GetBalanceWeightsRequest(schema_version=self._version))
        return reply.weights if reply.available else None

    def swarm_state(self) -> swarm_pb2.SwarmState:
        return self._call(self._stub.GetSwarmState, swarm_pb2.GetSwarmStateRequest(schema_version=self._version))

    def history(self, first_round: int = 0, last_round: int = 0, max_rounds: int = 0,
                include_contributions: bool = False) -> list[swarm_pb2.RoundRecord]:
        """Committed rounds in [first_round, last_round] (0 = open end), oldest first."""
        request = swarm_pb2.GetHistoryRequest(schema_version=self._version, first_round=first_round,
                                              last_round=last_round, max_rounds=max_rounds,
                                              include_contributions=include_contributions)
        return list(self._call(self._stub.GetHistory, request).rounds)

    def set_admission(self, peer_id: str, action: int) -> swarm_pb2.Admission:
        """Admit, ban or forget one identity (needs the operator token); the admission list now in force."""
        request = swarm_pb2.SetAdmissionRequest(schema_version=self._version, peer_id=peer_id, action=action)
        return self._call(self._stub.SetAdmission, request, authorized=True)

    def watch_events(self, after_seq: int = 0, *, duration: float | None = None) -> Iterator[swarm_pb2.SwarmEvent]:
        """Stream events with seq > after_seq, for at most `duration` seconds (None = until cancelled)."""
        request = swarm_pb2.WatchSwarmEventsRequest(schema_version=self._version, after_seq=after_seq)
        stream = self._stub.WatchSwarmEvents(request, timeout=duration)
        try:
            for message in stream:
                yield self._validated(message)
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


def _classified(peers) -> tuple[swarm_pb2.PeerState, ...]:
    """Peers with a state; an older coordinator sends none, so fall back on its `active` flag."""
    return tuple(p if state_of(p) else records.replace(p, health=health("online" if p.active else "gone"))
                 for p in peers)


def _swarm_lines(state: swarm_pb2.SwarmState, peers: tuple[swarm_pb2.PeerState, ...]) -> list[str]:
    summary = summarize(peers)
    live = sum(summary.by_state[s] for s in LIVE_STATES)
    counts = ", ".join(f"{n} {name}" for name, n in summary.by_state.items() if n)
    versions = ""
    if len(summary.versions) > 1:
        versions = "   (versions: " + ", ".join(f"{v} x{n}" for v, n in sorted(summary.versions.items())) + ")"
    means = summary.means
    lines = [f"peers      {live} live of {summary.num_peers}" + (f": {counts}" if counts else "") + versions]
    latest = records.get(state, "latest")
    reward = records.stats_of(latest.merged).moments["score"].mean if latest is not None else None
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


def _round_lines(state: swarm_pb2.SwarmState, now: float) -> list[str]:
    latest = records.get(state, "latest")
    if latest is None:
        return ["round      none completed yet (waiting for peers' meta-signals)"]
    base = latest.baselines
    return [f"round      #{latest.round} committed {duration(now - latest.issued_at)} ago: {latest.num_contributions} "
            f"meta-signals from {latest.num_peers} peers   lambda_t {latest.lambda_t:.4g}",
            "baselines  " + "  ".join(f"{name} {fmt(records.get(base, name))}" for name in INDICATORS)
            + ("" if base.ready else "   (not ready: no auxiliary signal yet)"),
            "balance    " + _balance_bar(records.get(latest.balance, "explore_share"))]


def _alert_lines(state: swarm_pb2.SwarmState, now: float) -> list[str]:
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


def _peer_line(peer: swarm_pb2.PeerState, now: float) -> str:
    s = status_of(peer)

    def status(name: str) -> float | None:  # None: no report, or the report leaves it unset
        return records.get(s, name) if s is not None else None

    version = (s.version or "-") + ("!" if peer.version_mismatch else "") if s else "-"
    steps = [v for v in (status("step"), records.get(peer, "last_step")) if v is not None]
    lag = records.get(peer, "epoch_lag")
    epoch = "-" if status("epoch") is None else f"{s.epoch}" + (f"-{lag}" if lag else "")
    traffic = f"{s.bytes_sent / 1e6:.1f}/{s.bytes_received / 1e6:.1f}" if s else "-"
    failures, rounds = reported(s, "averaging_failures"), reported(s, "averaging_rounds")
    fails = "-" if failures is None else f"{failures}/{failures + rounds}"
    return (f"  {state_of(peer):<11} {peer.peer_id[:12]:<12} {version:<9} {(reachability(s) if s else '-'):<8} "
            f"{duration(now - peer.last_seen):>5} {fmt(max(steps) if steps else None, 'd'):>6} {epoch:>7} "
            f"{fmt(status('throughput'), '.2f'):>7} {fmt(status('tokens_per_s'), '.0f'):>7} "
            f"{traffic:>13} {fmt(status('compression_ratio'), '.1f'):>6} "
            f"{fmt(status('reward'), '+.3f'):>7} {fmt(status('er'), '.4g'):>7} "
            f"{fmt(status('erv'), '.4g'):>7} {fmt(status('era'), '.4g'):>7} "
            f"{fmt(status('accuracy'), '.0%'):>5} {fmt(status('heldout_accuracy'), '.0%'):>5} "
            f"{fails:>7}")


def render_status(state: swarm_pb2.SwarmState, *, now: float | None = None, max_peers: int = 30) -> str:
    """The swarm at a glance for `rankswarm status`: the dashboard's summary, alerts and peer table in text.

    Peers are listed problems first (unreachable, behind, joining, online, gone), at most `max_peers`."""
    now = state.now if now is None else now
    peers = _classified(state.peers)
    version = f"   coordinator {state.coordinator_version}" if state.coordinator_version else ""
    lines = [f"run {state.run_id}   round {state.round}{version}   coordinator key {state.coordinator_key}"]
    if state.http_address:
        host, _, port = state.http_address.rpartition(":")
        host = "127.0.0.1" if host == "0.0.0.0" else host
        lines.append(f"dashboard  http://{host}:{port}/")
    lines += _swarm_lines(state, peers) + _round_lines(state, now) + _alert_lines(state, now)
    ordered = sorted(peers, key=lambda p: (STATE_ORDER.get(state_of(p), len(STATE_ORDER)), p.peer_id))
    if ordered:
        lines += [f"peers (problems first; {min(len(ordered), max_peers)} of {len(ordered)}; "
                  f"! = version differs from the coordinator's)", _PEER_HEADER]
        lines += [_peer_line(peer, now) for peer in ordered[:max_peers]]
        if len(ordered) > max_peers:
            lines.append(f"  ... and {len(ordered) - max_peers} more (rankswarm status --peers N, or the dashboard)")
    if state.visible_maddrs:
        lines.append("join the DHT at: " + state.visible_maddrs[0])
    return "\n".join(lines)


def wait_for_round(client: CoordinatorClient, round_: int, *, timeout: float,
                   poll_s: float = 0.1) -> swarm_pb2.BalanceWeights:
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
