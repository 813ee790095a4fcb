"""Peer health, alert rules and the swarm summary: pure functions of what the coordinator knows.

The coordinator knows each peer's last contact, merged meta-signals and latest status
report, the latest round and a short memory of recent reports (`PeerMemory`, kept by
`coordinator.monitor`). From these:

Peer states, first match wins:
  gone         not heard from within the coordinator's `peer_timeout`
  joining      no meta-signal of it merged yet (announced, waiting for peers or downloading state)
  unreachable  silent for longer than max(silent_after_s, 3 x its own step time): its records stopped
               arriving, though it is not gone yet
  behind       when it last reported, another peer had already reported an optimizer epoch more
               than `behind_epochs` ahead (comparing reports of about the same time, so peers that
               report at different moments are not flagged)
  online       otherwise

Alert kinds: stale_weights, peer_stale_weights, averaging_failures, publish_failures,
peer_behind, peer_unreachable, peer_stuck_joining, version_mismatch, records_rejected, no_peers
(each rule below says when it fires). `monitor.AlertTracker` turns conditions into alerts with
start and end times.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from coordinator.config import HealthConfig
from coordinator.views import PEER_STATES, baselines_source, health, state_of, status_of
from plumbing.formatting import duration
from protos import records, swarm_pb2

LIVE_STATES = ("online", "joining", "behind")  # peers whose latest numbers describe the swarm now
STATE_ORDER = {"unreachable": 0, "behind": 1, "joining": 2, "online": 3, "gone": 4}  # problems first
# counters a schema-1 report carries as 0 without having measured them
_SCHEMA_2_COUNTERS = ("averaging_rounds", "averaging_failures", "publish_failures", "last_averaging_error")
BALANCE_GRACE_S = 10.0  # a peer polls the balance record every few seconds: allow it this long


@dataclass
class PeerMemory:
    """Recent reports of one peer: (reported_at, epoch) samples and when its failure counters rose."""

    epochs: list[tuple[float, int]] = field(default_factory=list)
    failures: list[tuple[float, int]] = field(default_factory=list)          # (at, increase) averaging
    publish_failures: list[tuple[float, int]] = field(default_factory=list)  # (at, increase) publishing
    last: swarm_pb2.PeerStatus | None = None


@dataclass(frozen=True)
class Condition:
    """A condition that holds now; `since` is when it began, as far as the data says."""

    key: str
    kind: str
    severity: str
    peer_id: str
    message: str
    since: float


# ---------------------------------------------------------------- peer states

def silence_threshold(status: swarm_pb2.PeerStatus | None, cfg: HealthConfig) -> float:
    """Seconds of silence after which a peer counts as unreachable: slow steps allow longer."""
    step = status.step_seconds if status is not None else 0.0  # unset reads 0: no step time known
    return max(cfg.silent_after_s, 3.0 * step)


def epoch_lags(memories: dict[str, PeerMemory], peers: Sequence[str]) -> dict[str, int]:
    """For each of `peers` with an epoch: how far the best other peer's epoch, reported no later than
    its own latest report, was ahead of it (0 when none was ahead)."""
    samples = sorted((at, epoch, peer) for peer, mem in memories.items() for at, epoch in mem.epochs)
    times = [at for at, _, _ in samples]
    best: list[tuple[int, str, int]] = []  # prefix: (best epoch, its peer, best epoch of any other peer)
    top, top_peer, second = -1, "", -1
    for _, epoch, peer in samples:
        if peer == top_peer:
            top = max(top, epoch)
        elif epoch > top:
            top, top_peer, second = epoch, peer, top
        else:
            second = max(second, epoch)
        best.append((top, top_peer, second))
    lags = {}
    for peer in peers:
        mem = memories.get(peer)
        if mem is None or not mem.epochs:
            continue
        at, epoch = mem.epochs[-1]
        index = bisect.bisect_right(times, at) - 1
        top, top_peer, second = best[index]
        ahead = second if top_peer == peer else top
        lags[peer] = max(0, ahead - epoch)
    return lags


def classify_peers(peers: Sequence[swarm_pb2.PeerState], memories: dict[str, PeerMemory], now: float,
                   cfg: HealthConfig, coordinator_version: str) -> tuple[swarm_pb2.PeerState, ...]:
    """Copies of the peers with `health`, `version_mismatch` and `epoch_lag` filled in (see the module docstring)."""
    lags = epoch_lags(memories, [p.peer_id for p in peers if p.active])
    classified = []
    for peer in peers:
        status = status_of(peer)
        lag = lags.get(peer.peer_id)
        if not peer.active:
            state = "gone"
        elif peer.num_contributions == 0:
            state = "joining"
        elif now - peer.last_seen > silence_threshold(status, cfg):
            state = "unreachable"
        elif lag is not None and lag > cfg.behind_epochs:
            state = "behind"
        else:
            state = "online"
        mismatch = bool(status and status.version and coordinator_version and status.version != coordinator_version)
        classified.append(records.replace(peer, health=health(state), version_mismatch=mismatch, epoch_lag=lag))
    return tuple(classified)


# ---------------------------------------------------------------- alert rules

def round_at(rounds_by_time: Sequence[tuple[float, int]], at: float) -> int:
    """The coordinator's latest round committed at or before `at` (0 if none)."""
    index = bisect.bisect_right(rounds_by_time, (at, 2**62)) - 1
    return rounds_by_time[index][1] if index >= 0 else 0


def swarm_conditions(peers: Sequence[swarm_pb2.PeerState], latest: swarm_pb2.BalanceWeights | None, now: float,
                     cfg: HealthConfig, *, stale_after_s: float,
                     rejected: Sequence[tuple[float, str, str]] = ()) -> list[Condition]:
    """Swarm-wide conditions: stale_weights, no_peers, records_rejected.

    `rejected`: (time, subkey, reason) of DHT records rejected within the failure window."""
    conditions = []
    live = [p for p in peers if state_of(p) in LIVE_STATES]
    if live:
        since = latest.issued_at if latest is not None else min(p.first_seen for p in live)
        if now - since > stale_after_s:
            what = (f"no new round for {duration(now - since)} (latest: round {latest.round})" if latest is not None
                    else f"no round yet although peers have been online for {duration(now - since)}")
            conditions.append(Condition("stale_weights", "stale_weights", "critical", "", what +
                                        ": peers shape with stale coordinator weights (are their meta-signals "
                                        "reaching the coordinator's DHT?)", since + stale_after_s))
    elif peers:
        unreachable = sum(state_of(p) == "unreachable" for p in peers)
        conditions.append(Condition("no_peers", "no_peers", "warning", "",
                                    f"no peer is online ({len(peers)} known: {unreachable} unreachable, "
                                    f"{len(peers) - unreachable} gone)", max(p.last_seen for p in peers)))
    if rejected:
        at, subkey, reason = max(rejected)
        conditions.append(Condition("records_rejected", "records_rejected", "warning", "",
                                    f"{len(rejected)} DHT record(s) rejected in the last "
                                    f"{duration(cfg.failure_window_s)}; latest from {subkey}: {reason}",
                                    min(r[0] for r in rejected)))
    return conditions


def peer_conditions(peer: swarm_pb2.PeerState, memory: PeerMemory | None, latest: swarm_pb2.BalanceWeights | None,
                    now: float, cfg: HealthConfig, *, coordinator_version: str,
                    rounds_by_time: Sequence[tuple[float, int]] = ()) -> list[Condition]:
    """One peer's conditions: unreachable, behind, stuck joining, version mismatch, failures, stale weights."""
    state = state_of(peer)
    if state == "gone":
        return []
    pid, status, out = peer.peer_id, status_of(peer), []
    short = pid[:12]
    if state == "unreachable":
        limit = silence_threshold(status, cfg)
        out.append(Condition(f"peer_unreachable:{pid}", "peer_unreachable", "warning", pid,
                             f"peer {short} silent for {duration(now - peer.last_seen)} (limit {duration(limit)}); "
                             f"last step {status.step if status else records.get(peer, 'last_step')}",
                             peer.last_seen + limit))
    if state == "behind" and status is not None:
        out.append(Condition(f"peer_behind:{pid}", "peer_behind", "warning", pid,
                             f"peer {short} at epoch {records.get(status, 'epoch')}, "
                             f"{records.get(peer, 'epoch_lag')} behind the swarm "
                             f"(it should download the swarm's state)", status.reported_at))
    if state == "joining" and now - peer.first_seen > cfg.joining_timeout_s:
        out.append(Condition(f"peer_stuck_joining:{pid}", "peer_stuck_joining", "warning", pid,
                             f"peer {short} joined {duration(now - peer.first_seen)} ago and has not completed a step",
                             peer.first_seen + cfg.joining_timeout_s))
    if peer.version_mismatch and status is not None:
        out.append(Condition(f"version_mismatch:{pid}", "version_mismatch", "warning", pid,
                             f"peer {short} runs rankswarm {status.version}, the coordinator {coordinator_version}",
                             status.reported_at))
    if memory is not None:
        out += _failure_conditions(peer, memory, now, cfg)
    if status is not None and latest is not None and latest.baselines.ready:
        out += _stale_weights_condition(peer, status, cfg, rounds_by_time)
    return out


def _failure_conditions(peer: swarm_pb2.PeerState, memory: PeerMemory, now: float,
                        cfg: HealthConfig) -> list[Condition]:
    out, pid, status = [], peer.peer_id, memory.last
    recent = [(at, n) for at, n in memory.failures if at >= now - cfg.failure_window_s]
    if recent and status is not None:
        error = f"; latest: {status.last_averaging_error}" if status.last_averaging_error else ""
        out.append(Condition(f"averaging_failures:{pid}", "averaging_failures", "warning", pid,
                             f"peer {pid[:12]}: {sum(n for _, n in recent)} averaging failure(s) in the last "
                             f"{duration(cfg.failure_window_s)} ({status.averaging_failures} of "
                             f"{status.averaging_failures + status.averaging_rounds} rounds since start){error}",
                             recent[0][0]))
    recent = [(at, n) for at, n in memory.publish_failures if at >= now - cfg.failure_window_s]
    if recent:
        out.append(Condition(f"publish_failures:{pid}", "publish_failures", "info", pid,
                             f"peer {pid[:12]}: {sum(n for _, n in recent)} DHT record(s) not published in the "
                             f"last {duration(cfg.failure_window_s)}", recent[0][0]))
    return out


def _stale_weights_condition(peer: swarm_pb2.PeerState, status: swarm_pb2.PeerStatus, cfg: HealthConfig,
                             rounds_by_time: Sequence[tuple[float, int]]) -> list[Condition]:
    expected = round_at(rounds_by_time, status.reported_at - BALANCE_GRACE_S)
    held = status.balance_round  # unset reads 0: no coordinator weights
    source = baselines_source(status)
    if source == "unknown" or expected - held < cfg.stale_weights_rounds:
        return []
    holding = f"round {held}'s weights" if held else "no coordinator weights"
    how = "its local baselines" if source == "local" else holding
    return [Condition(f"peer_stale_weights:{peer.peer_id}", "peer_stale_weights", "warning", peer.peer_id,
                      f"peer {peer.peer_id[:12]} shapes with {how} ({holding}) while round {expected} was out: "
                      f"balance records are not reaching it", status.reported_at)]


# ---------------------------------------------------------------- the swarm at a glance

@dataclass(frozen=True)
class SwarmSummary:
    """Swarm-wide numbers from the peers' latest reports (live peers: online, joining or behind);
    None where no peer reported the value (never 0 for "not measured")."""

    num_peers: int
    by_state: dict[str, int]
    versions: dict[str, int]            # versions of the peers that are not gone
    tokens_per_s: float | None          # sum over live peers' latest steps
    rollouts_per_s: float | None        # sum over live peers (each since it started)
    bytes_sent: int | None              # sum over every peer's latest report
    bytes_received: int | None
    compression_ratio: float | None     # dense bytes / sent bytes over live peers (sent-weighted mean)
    epoch: int | None                   # newest epoch among live peers
    averaging_rounds: int | None        # sums over every peer's latest report that has the counters
    averaging_failures: int | None
    means: dict[str, float | None]      # SUMMARY_MEANS, each averaged over the live peers that report it


SUMMARY_MEANS = ("reward", "accuracy", "heldout_accuracy", "kl", "er", "erv", "era", "gate", "aux")


def reported(status: swarm_pb2.PeerStatus | None, name: str):
    """Field `name` of a peer's latest report, or None where it was not measured: no report, or a
    schema-1 report, whose schema-2 counters read 0 (or "") without having been counted."""
    if status is None or (name in _SCHEMA_2_COUNTERS and status.schema_version < 2):
        return None
    return records.get(status, name)


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean of `values`; None, not 0, when there are none."""
    return statistics.fmean(values) if values else None


def _total(statuses: Sequence[swarm_pb2.PeerStatus], name: str) -> int | None:
    values = [value for value in (reported(s, name) for s in statuses) if value is not None]
    return sum(values) if values else None


def summarize(peers: Sequence[swarm_pb2.PeerState]) -> SwarmSummary:
    """The swarm at a glance; `peers` must be classified (`classify_peers`)."""
    by_state = {state: 0 for state in PEER_STATES}
    by_state.update(Counter(state_of(p) for p in peers if state_of(p)))
    statuses = [p.status for p in peers if p.HasField("status")]
    live = [p.status for p in peers if p.HasField("status") and state_of(p) in LIVE_STATES]
    sent_ratio = [(s.compression_ratio, s.bytes_sent) for s in live if s.compression_ratio and s.bytes_sent]
    sent = sum(b for _, b in sent_ratio)
    tokens = [s.tokens_per_s for s in live if s.HasField("tokens_per_s")]
    return SwarmSummary(
        num_peers=len(peers), by_state=by_state,
        versions=dict(Counter(p.status.version or "?" for p in peers
                              if p.HasField("status") and state_of(p) != "gone")),
        tokens_per_s=sum(tokens) if tokens else None,
        rollouts_per_s=sum(s.throughput for s in live) if live else None,
        bytes_sent=_total(statuses, "bytes_sent"), bytes_received=_total(statuses, "bytes_received"),
        compression_ratio=sum(r * b for r, b in sent_ratio) / sent if sent else None,
        epoch=max((s.epoch for s in live if s.HasField("epoch")), default=None),
        averaging_rounds=_total(statuses, "averaging_rounds"),
        averaging_failures=_total(statuses, "averaging_failures"),
        means={name: mean_or_none([getattr(s, name) for s in live if s.HasField(name)]) for name in SUMMARY_MEANS})
