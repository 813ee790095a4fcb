"""`Node`: one swarm peer. Run with `rankswarm node [--config node.toml] [--set key=value ...]`.

Start order: heartbeat (`health_file`, read by `rankswarm health`), the coordinator's bootstrap
info if `coordinator.bootstrap` is set, signing identity, DHT (joined through
`dht.initial_peers`, or a new swarm whose address is printed; its identity kept in
`run_dir/dht.identity` unless `dht.identity_path` says otherwise), the trainer with the two
swarm seams (gossip update, swarm baselines), state download from peers, then the training
loop. After every step the peer publishes its meta-signal (signed, expiring) and, every few
steps, its status; both go through a single background publisher so DHT latency never lands on
the training step. With `shared_run_dir`, `main` first claims a slot of run_dir
(plumbing/run_slots.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivemind.utils import get_dht_time

from node.swarm.admission import AdmissionView
from node.swarm.baselines import SwarmBaselines
from node.swarm.config import NodeConfig
from node.swarm.joining import join_through_bootstrap
from node.swarm.update import GossipCounters, SettleOutcome, build_gossip_update
from node.training.build import build_trainer
from node.training.seams import LocalBaselines
from node.training.trainer import StepReport, Trainer
from plumbing import __version__
from plumbing.dht_records import fetch, poll, publish
from plumbing.health import Heartbeat
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.metrics import MetricsSink
from plumbing.probe import serve_probes
from plumbing.run_slots import claim_slot
from plumbing.swarm_dht import start_dht, visible_addresses
from protos import records, swarm_pb2

log = logging.getLogger(__name__)

STATUS_EVERY_STEPS = 5


def _finite(value: float | None, low: float | None = None, high: float | None = None) -> float | None:
    """`value` clamped to [low, high] (means of [0, 1] values may round past 1), None if not a finite number."""
    if value is None or not math.isfinite(value):
        return None
    value = float(value) if low is None else max(low, float(value))
    return value if high is None else min(high, value)


@dataclass(frozen=True)
class PublishCounters:
    """DHT records this peer published, and failed to publish, since start (metrics.jsonl columns)."""

    published: int
    publish_failed: int

    def metrics_row(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Publisher:
    """One background thread that writes this peer's DHT records in order; drops nothing silently."""

    def __init__(self, dht_lock: threading.Lock):
        self.dht_lock = dht_lock
        self.queue: queue.Queue[Callable[[], bool] | None] = queue.Queue(maxsize=64)
        self.published = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._work, name="dht-publisher", daemon=True)
        self._thread.start()

    def submit(self, write: Callable[[], bool]) -> None:
        try:
            self.queue.put_nowait(write)
        except queue.Full:
            self.failed += 1
            log.warning("DHT publisher is %d records behind: dropping the newest", self.queue.qsize())

    def _work(self) -> None:
        while (write := self.queue.get()) is not None:
            try:
                with self.dht_lock:
                    ok = write()
            except Exception as err:  # network boundary: count and log, keep training
                ok = False
                log.warning("publishing a DHT record failed: %s", err)
            self.published += int(ok)
            self.failed += int(not ok)

    def close(self, timeout: float = 10.0) -> None:
        self.queue.put(None)
        self._thread.join(timeout)


class Node:
    """Owns the DHT, the trainer and the publisher of one peer."""

    def __init__(self, cfg: NodeConfig, *, update_factory=None):
        self.cfg = cfg
        self.update_factory = update_factory
        self.dht = None
        self.trainer: Trainer | None = None
        self.baselines: SwarmBaselines | None = None
        self.admission: AdmissionView | None = None  # who may take part (with a trusted coordinator key)
        self.publisher: Publisher | None = None
        self.dht_lock = threading.Lock()
        self.started_at = time.monotonic()
        self.rollouts_done = 0
        self.heartbeat: Heartbeat | None = None

    def start(self) -> Node:
        cfg = self.cfg
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.heartbeat = Heartbeat(cfg.health_file or run_dir / "health.json", "node").start()
        self.heartbeat.problem = self._problem
        if cfg.coordinator.bootstrap:
            self.heartbeat.set("bootstrap")
            cfg, _ = join_through_bootstrap(cfg)
        if cfg.dht.identity_path is None:  # a re-created peer keeps its peer id (and its place in the DHT)
            cfg = cfg.model_copy(update={"dht": cfg.dht.model_copy(update={"identity_path": str(
                run_dir / "dht.identity")})})
        self.cfg = cfg
        self.heartbeat.set("joining")
        self.identity = SigningIdentity.load_or_create(run_dir / "signing.key")
        self.dht = start_dht(cfg.dht, record_validators=build_record_validators(self.identity, cfg.run_id))
        serve_probes(self.dht)
        self.addresses = visible_addresses(self.dht)
        print(f"peer {self.identity.fingerprint} joined run {cfg.run_id}; others can join with:\n  "
              + "\n  ".join(self.addresses), flush=True)
        local = LocalBaselines(cfg.shaping)
        source = local
        if cfg.coordinator.trusted_key:
            self.baselines = SwarmBaselines(local, self.dht, cfg.run_id, cfg.coordinator.trusted_key,
                                            max_age_s=cfg.coordinator.max_age_s,
                                            poll_interval_s=cfg.coordinator.poll_interval_s,
                                            dht_lock=self.dht_lock).start()
            source = self.baselines
            self.admission = AdmissionView(self.dht, cfg.run_id, cfg.coordinator.trusted_key,
                                           poll_interval_s=cfg.coordinator.poll_interval_s,
                                           dht_lock=self.dht_lock).start()
        metrics = MetricsSink(f"{cfg.run_dir}/metrics.jsonl")
        factory = self.update_factory or self._default_update_factory()
        self.heartbeat.set("syncing")
        self.trainer = build_trainer(cfg, baselines=source, update_factory=factory, metrics=metrics, swarm=True)
        self.publisher = Publisher(self.dht_lock)
        return self

    def _problem(self) -> str | None:
        """What the heartbeat reports as unhealthy: None while the parts this peer needs are alive."""
        dht = self.dht
        if dht is not None and not dht.is_alive():
            return "the DHT process died (see the log); the peer cannot reach the swarm"
        return None

    def _default_update_factory(self):
        return lambda master, cfg: build_gossip_update(self.dht, master, cfg, self.identity, self.admission)

    # -- per-step hooks ------------------------------------------------------------------------
    def _announce_and_wait(self) -> int:
        """Publish this peer's status (step 0), then wait for `gossip.min_peers` announced peers.

        hivemind's progress tracker lists a peer only once it has gradients, so it cannot tell
        who is about to start; the status records can. Returns the number of peers seen."""
        cfg, gossip = self.cfg, self.cfg.gossip
        now = get_dht_time()
        with self.dht_lock:
            publish(self.dht, self.status_record(None), now + cfg.meta_signal_ttl_s, identity=self.identity)
        if gossip.min_peers <= 1:
            return 1
        window = gossip.min_peers_timeout_s + 2 * gossip.peer_expiration_s  # older announcements are gone

        def announced(result) -> int:
            return len({r.peer_id for r in result.records if r.reported_at > get_dht_time() - window})

        def fetch_statuses():
            with self.dht_lock:
                return fetch(self.dht, cfg.run_id, swarm_pb2.PeerStatus)

        polled = poll(fetch_statuses, lambda result: announced(result) >= gossip.min_peers,
                      deadline=time.monotonic() + gossip.min_peers_timeout_s, max_delay=1.0)
        seen = announced(polled.result)
        if not polled.complete:
            log.warning("only %d of %d peers announced within %.0fs: starting anyway", seen, gossip.min_peers,
                        gossip.min_peers_timeout_s)
        return seen

    def _before_first_step(self) -> None:
        self._announce_and_wait()
        if self.cfg.dht.initial_peers and self.trainer.update.load_state_from_peers():
            log.info("downloaded the swarm's current state before the first step")

    def _after_last_step(self) -> None:
        outcome = self.trainer.update.settle()
        if not isinstance(outcome, SettleOutcome):
            return
        self.trainer.metrics.log({"kind": "settle", "step": self.trainer.step, **outcome.metrics_row()})
        if outcome.settled:
            print(f"ended with the swarm's weights at swarm step {outcome.epoch} ({outcome.num_peers} peers)",
                  flush=True)
        else:
            print(f"could not confirm the swarm's weights at swarm step {outcome.epoch} within "
                  f"{self.cfg.gossip.settle_timeout_s:.0f}s (gossip.settle_timeout_s)", flush=True)

    def _on_step(self, report: StepReport) -> None:
        cfg = self.cfg
        self.heartbeat.set("training", step=report.step)
        self.rollouts_done += cfg.algo.prompts_per_step * cfg.sampling.group_size
        record = records.build(swarm_pb2.MetaSignal, run_id=cfg.run_id, peer_id=self.identity.fingerprint,
                               step=report.step, stats=records.stats_message(report.stats),
                               mean_gate=report.stats.gate_mean, num_rollouts=report.stats.num_responses,
                               num_tokens=report.metrics.response_tokens, published_at=get_dht_time())
        expiration = get_dht_time() + cfg.meta_signal_ttl_s
        self.publisher.submit(lambda: publish(self.dht, record, expiration, identity=self.identity))
        if report.step % STATUS_EVERY_STEPS == 1:
            status = self.status_record(report)
            self.publisher.submit(lambda: publish(self.dht, status, expiration, identity=self.identity))
        report.parts.append(PublishCounters(self.publisher.published, self.publisher.failed))

    def status_record(self, report: StepReport | None) -> swarm_pb2.PeerStatus:
        """This peer's status (schema 2) after the step `report` (None before the first step).

        Held-out accuracy comes from the metrics sink's latest evaluation, the publish failures and
        the balance round from the publisher and the balance poller. If the dashboard's fields do not
        validate, the report goes without them (logged): a status report never stops training."""
        m = report.metrics if report is not None else None
        swarm = report.update.details if report is not None else None
        swarm = swarm if isinstance(swarm, GossipCounters) else None
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        evaluated = self.trainer.metrics.latest().get("greedy_accuracy") if self.trainer is not None else None
        sent = swarm.bytes_sent_total if swarm is not None else 0
        balance = self.baselines.latest if self.baselines is not None else None
        base = dict(run_id=self.cfg.run_id, peer_id=self.identity.fingerprint, version=__version__,
                    address=self.addresses[0] if self.addresses else "",
                    reachability=swarm_pb2.REACHABILITY_RELAYED if self.cfg.dht.client_mode
                    else swarm_pb2.REACHABILITY_DIRECT,
                    step=report.step if report is not None else 0, throughput=self.rollouts_done / elapsed,
                    bytes_sent=sent, bytes_received=swarm.bytes_received_total if swarm is not None else 0,
                    reported_at=get_dht_time())
        extra = dict(heldout_accuracy=_finite(evaluated, 0.0, 1.0),
                     publish_failures=self.publisher.failed if self.publisher is not None else 0,
                     balance_round=balance.round if balance is not None else None)
        if m is not None:
            extra |= dict(tokens_per_s=_finite(m.tokens_per_s, 0.0), step_seconds=_finite(m.time_step, 0.0),
                          reward=_finite(m.reward), accuracy=_finite(m.accuracy, 0.0, 1.0), kl=_finite(m.kl),
                          er=_finite(m.er), erv=_finite(m.erv), era=_finite(m.era), gate=_finite(m.gate, 0.0, 1.0),
                          aux=_finite(m.aux), staleness=m.staleness,
                          baselines_source=m.baselines if m.baselines in ("global", "local") else "unknown",
                          **{f"{name}_deciles": {"count": d.count, "values": list(d.values)} if d is not None
                             else None for name, d in (("er", m.er_deciles), ("erv", m.erv_deciles),
                                                       ("era", m.era_deciles))})
        if swarm is not None:
            extra |= dict(compression_ratio=swarm.dense_bytes_total / sent if sent and swarm.dense_bytes_total
                          else None, epoch=swarm.epoch, num_peers_seen=swarm.num_peers,
                          averaging_rounds=swarm.rounds_averaged,
                          averaging_failures=swarm.rounds_failed + swarm.rounds_dropped,
                          last_averaging_error=(swarm.averaging_error or "")[:256],
                          gradient_bytes_sent=swarm.gradient_bytes_sent_total,
                          gradient_bytes_received=swarm.gradient_bytes_received_total,
                          state_averaging_bytes_sent=swarm.state_averaging_bytes_sent_total,
                          state_averaging_bytes_received=swarm.state_averaging_bytes_received_total,
                          state_bytes_served=swarm.state_bytes_sent_total,
                          state_bytes_downloaded=swarm.state_bytes_received_total)
        try:
            return records.build(swarm_pb2.PeerStatus, **base, **extra)
        except records.RecordError as err:  # report what is sound rather than nothing
            log.warning("status report without the dashboard's fields: %s", err)
            return records.build(swarm_pb2.PeerStatus, **base)

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        return self.trainer.run(on_step=self._on_step, before_first_step=self._before_first_step,
                                after_last_step=self._after_last_step)

    def abort(self, timeout_s: float = 5.0) -> None:
        """After a failure: `stop`, but for at most `timeout_s` (a half-built or failed averager can block
        its shutdown); the command then ends whatever is left of the processes it started."""
        worker = threading.Thread(target=self._stop_quietly, name="peer-abort", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            log.warning("the peer did not stop within %.0fs; its processes are ended", timeout_s)

    def _stop_quietly(self) -> None:
        try:
            self.stop("failed")
        except Exception as err:  # already failing: the first error is the one to report
            log.warning("while stopping after a failure: %s", err)

    def stop(self, phase: str = "done") -> None:
        """Stop every part; `phase` (done, failed) is what the heartbeat keeps saying afterwards."""
        if self.heartbeat is not None:
            self.heartbeat.stop(phase)
            self.heartbeat = None
        if self.publisher is not None:
            self.publisher.close()
        if self.baselines is not None:
            self.baselines.stop()
        if self.admission is not None:
            self.admission.stop()
        if self.trainer is not None:
            self.trainer.update.shutdown()
        if self.trainer is not None:
            self.trainer.metrics.close()
        if self.dht is not None:
            self.dht.shutdown()
            self.dht = None


def main(cfg: NodeConfig) -> int:
    slot = None
    if cfg.shared_run_dir:
        slot = claim_slot(cfg.run_dir)
        # each slot samples its own prompts: peers started from one config would otherwise all draw the same
        cfg = cfg.model_copy(update={"run_dir": str(slot.path), "seed": cfg.seed + slot.index})
        print(f"claimed {slot.path} of the shared run_dir (its identity and checkpoints; seed {cfg.seed})",
              flush=True)
    node = Node(cfg)
    try:
        node.start()
        summary = node.run()
    except BaseException:
        node.abort()  # the command (rankswarm/cli.py) reports the error and ends what is left
        if slot is not None:
            slot.release()
        raise
    node.stop("done")
    if slot is not None:
        slot.release()
    start, end = summary["eval_start"], summary["eval_end"]
    if start is not None:
        print(f"held-out greedy accuracy: {start.greedy_accuracy:.3f} -> {end.greedy_accuracy:.3f}", flush=True)
    return 0
