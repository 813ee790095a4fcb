"""The `Coordinator`: one owner that wires a DHT participant, the round loop, the gRPC server and the store.

Run it with `rankswarm coordinator --config coordinator.toml` (the CLI builds a
`CoordinatorConfig` and calls `main(cfg)`), or in-process:

    coordinator = Coordinator(cfg); coordinator.start(); ...; coordinator.stop()

Start order: heartbeat (`health_file`, read by `rankswarm health`), history store (resumes the
last committed round), signing key, health monitor, DHT with the record validators, gRPC server,
the dashboard's HTTP server (`http_listen`, which also serves the bootstrap info peers join
with), then the round thread. The signing key and the DHT identity live next to `db_path` by
default, so a restarted coordinator keeps the key peers pin and the address they join at.
`stop()` undoes them in reverse and is safe to call twice or after a failed start. Every
`round_interval` seconds the round thread reads the peers' meta-signals and status records from
the DHT, lets the ledger merge and commit a round, publishes the balance record (and refreshes
it before it expires), then lets the monitor re-evaluate peer health and alerts.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from hivemind.utils import get_dht_time

from coordinator.config import CoordinatorConfig
from coordinator.dashboard.web import DashboardApp, DashboardServer
from coordinator.events import EventLog
from coordinator.ledger import Ledger
from coordinator.monitor import Monitor
from coordinator.rounds import RoundResult
from coordinator.security import load_or_create_certificate, load_or_create_token, ssl_context
from coordinator.service import CoordinatorService, add_to_server
from coordinator.store import HistoryStore
from plumbing import __version__
from plumbing.bootstrap import SCHEMA as BOOTSTRAP_SCHEMA
from plumbing.dht_records import expires_in, fetch, fetch_meta_signals, publish
from plumbing.health import Heartbeat
from plumbing.identity import SigningIdentity, build_record_validators
from plumbing.probe import serve_probes
from plumbing.swarm_dht import start_dht, visible_addresses
from protos import swarm_pb2

log = logging.getLogger(__name__)


class Coordinator:
    """Owner of the coordinator role. Not restartable: build a new one to start again."""

    def __init__(self, cfg: CoordinatorConfig):
        self.cfg = cfg
        self.identity: SigningIdentity | None = None
        self.store: HistoryStore | None = None
        self.events = EventLog()
        self.ledger: Ledger | None = None
        self.monitor: Monitor | None = None
        self.http: DashboardServer | None = None
        self.dht = None
        self._maddrs: list[str] = []  # read once: the DHT's pipe is not safe to share with gRPC threads
        self.port: int | None = None
        self._server: grpc.Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._round_lock = threading.Lock()  # the loop and a test's run_round() never overlap
        self._published_at = float("-inf")  # monotonic time of the last balance publication
        self._admission_published: tuple[int, float] = (-1, float("-inf"))  # (version, monotonic time)
        self.operator_token = ""
        self.heartbeat: Heartbeat | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Coordinator:
        """Start every part (see the module docstring); on failure, stop what was started and re-raise."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("Coordinator.start() called twice; build a new Coordinator to restart")
        try:
            health_file = self.cfg.health_file or Path(self.cfg.db_path).parent / "health.json"
            self.heartbeat = Heartbeat(health_file, "coordinator").start()
            self.heartbeat.problem = self._problem
            self.store = HistoryStore(self.cfg.db_path, self.cfg.run)
            self.operator_token = load_or_create_token(
                self.cfg.beside_history(self.cfg.operator_token_path, "operator.token"))
            self.identity = (SigningIdentity.load_or_create(self.cfg.signing_key_path) if self.cfg.signing_key_path
                             else SigningIdentity.generate())
            self.ledger = Ledger(self.store, self.events, run=self.cfg.run, coordinator_key=self.identity.fingerprint,
                                 shaping=self.cfg.shaping, peer_timeout=self.cfg.peer_timeout, trust=self.cfg.trust)
            self.monitor = Monitor(self.ledger, self.events, self.cfg.health, version=__version__,
                                   round_interval=self.cfg.round_interval, peer_timeout=self.cfg.peer_timeout,
                                   visible_maddrs=self.visible_maddrs, http_address=lambda: self.http_address or "",
                                   now=get_dht_time())
            self.heartbeat.set("joining")
            self.dht = start_dht(self.cfg.dht, record_validators=build_record_validators(self.identity, self.cfg.run))
            serve_probes(self.dht)
            self._maddrs = visible_addresses(self.dht)
            self._start_grpc()
            if self.cfg.http_listen:
                app = DashboardApp(self.monitor, self.store, peer_timeout=self.cfg.peer_timeout,
                                   max_history_rounds=self.cfg.max_history_rounds,
                                   token=self.operator_token if self.cfg.dashboard_token else None,
                                   bootstrap=self.bootstrap_document)
                tls = ssl_context(*self._tls_paths()) if self.cfg.tls else None
                self.http = DashboardServer(self.cfg.http_listen, app, tls=tls).start()
            self._thread = threading.Thread(target=self._loop, name="coordinator-rounds", daemon=True)
            self._thread.start()
            self.heartbeat.set("serving", step=self.ledger.latest.round if self.ledger.latest else 0)
        except BaseException:
            self.stop(phase="failed")
            raise
        log.info("coordinator for run %s: gRPC on %s, dashboard %s, key fingerprint %s, DHT %s", self.cfg.run,
                 self.address, self.http.url if self.http else "off", self.identity.fingerprint, self.visible_maddrs())
        return self

    def stop(self, timeout: float = 10.0, phase: str = "done") -> None:
        """Stop the round thread, gRPC server, DHT and store (each bounded by `timeout`); idempotent.
        `phase` (done, failed) is what the heartbeat keeps saying afterwards."""
        self._stop.set()
        if self.heartbeat is not None:
            self.heartbeat.stop(phase)
            self.heartbeat = None
        self.events.close()  # ends WatchSwarmEvents streams
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("round thread did not stop within %.0f s (a DHT call is still running)", timeout)
        if self.http is not None:
            self.http.stop(timeout)
        if self._server is not None:
            self._server.stop(grace=min(timeout, 2.0)).wait(timeout)
        if self.dht is not None:
            self.dht.shutdown()
            self.dht = None
        if self.store is not None and (self._thread is None or not self._thread.is_alive()):
            self.store.close()  # committed rounds are already durable; closing only checkpoints the WAL

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop(phase="done" if exc_type is None else "failed")

    @property
    def address(self) -> str:
        """host:port the gRPC server actually listens on."""
        host = self.cfg.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    @property
    def http_address(self) -> str | None:
        """host:port of the dashboard's HTTP server, None when it is off."""
        return self.http.address if self.http is not None else None

    def visible_maddrs(self) -> list[str]:
        """Multiaddrs peers join the swarm's DHT with (as seen at start)."""
        return list(self._maddrs)

    def _tls_paths(self) -> tuple[str, str]:
        return (self.cfg.beside_history(self.cfg.tls_cert_path, "tls/coordinator.crt"),
                self.cfg.beside_history(self.cfg.tls_key_path, "tls/coordinator.key"))

    def bootstrap_document(self) -> dict[str, Any]:
        """What a peer needs to join (plumbing/bootstrap.py): served at /api/v1/bootstrap and written by
        --ready-file."""
        return {"schema": BOOTSTRAP_SCHEMA, "run": self.cfg.run, "public_key": self.identity.fingerprint,
                "maddrs": self.visible_maddrs(), "grpc_address": self.address, "http_address": self.http_address,
                "version": __version__, "now": get_dht_time()}

    def _problem(self) -> str | None:
        """What the heartbeat reports as unhealthy: None while the DHT and the round thread are alive."""
        if self.dht is not None and not self.dht.is_alive():
            return "the DHT process died (see the log); no rounds can be read or published"
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return "the round thread stopped (see the log)"
        return None

    def _start_grpc(self) -> None:
        service = CoordinatorService(self.ledger, self.events, visible_maddrs=self.visible_maddrs,
                                     max_history_rounds=self.cfg.max_history_rounds, monitor=self.monitor,
                                     operator_token=self.operator_token)
        limit = self.cfg.max_message_bytes
        server = grpc.server(ThreadPoolExecutor(max_workers=self.cfg.grpc_workers,
                                                thread_name_prefix="coordinator-grpc"),
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
        add_to_server(service, server)
        if self.cfg.tls:
            host = self.cfg.listen.rpartition(":")[0]
            cert, key = load_or_create_certificate(*self._tls_paths(), hosts=[host])
            port = server.add_secure_port(self.cfg.listen, grpc.ssl_server_credentials([(key, cert)]))
        else:
            port = server.add_insecure_port(self.cfg.listen)
        if port == 0:
            raise OSError(f"cannot listen on {self.cfg.listen} (in use or not a local address); "
                          f"change coordinator.listen")
        server.start()
        self._server, self.port = server, port

    # ------------------------------------------------------------ rounds

    def _loop(self) -> None:
        next_due = time.monotonic()
        while not self._stop.wait(max(0.0, next_due - time.monotonic())):
            next_due = max(next_due + self.cfg.round_interval, time.monotonic())
            try:
                result = self.run_round()
                if result is not None and self.heartbeat is not None:
                    self.heartbeat.set(step=result.record.round)
            except Exception:  # deliberate: a failed round (DHT hiccup, disk full) must not end the coordinator
                log.exception("round failed; the next one runs in %.1f s", self.cfg.round_interval)
            try:
                self.monitor.refresh(get_dht_time())  # alerts open and close even while nobody watches
            except Exception:  # deliberate: health bookkeeping must not end the coordinator either
                log.exception("evaluating peer health failed")

    def run_round(self) -> RoundResult | None:
        """One round: read the DHT, merge and commit new meta-signals, publish the balance record."""
        with self._round_lock:
            now = get_dht_time()
            fetched = fetch_meta_signals(self.dht, self.cfg.run, timeout=self.cfg.fetch_timeout)
            if not fetched.reachable:
                log.warning("could not read meta-signals this round; keeping the last balance record")
                return None
            self.ledger.note_rejected(fetched.rejected, now)
            statuses = fetch(self.dht, self.cfg.run, swarm_pb2.PeerStatus, timeout=self.cfg.fetch_timeout)
            self.ledger.note_rejected(statuses.rejected, now)
            self.ledger.note_statuses(statuses.records, now)
            result = self.ledger.ingest(fetched.records, now)  # committed to the store before publishing
            self._publish(refresh=result is None)
            self._publish_admission()
            self.ledger.sweep(now)
            return result

    def _publish(self, refresh: bool) -> None:
        latest = self.ledger.latest
        if latest is None or (refresh and time.monotonic() - self._published_at < self.cfg.balance_ttl / 3):
            return
        if publish(self.dht, latest, expires_in(self.cfg.balance_ttl), identity=self.identity,
                   timeout=self.cfg.fetch_timeout):
            self._published_at = time.monotonic()
        else:
            log.warning("publishing round %d's balance record failed; retrying next round", latest.round)


    def _publish_admission(self) -> None:
        """Keep the admission list in the DHT: at once after a change, then refreshed like the balance record."""
        admission = self.ledger.admission
        version, at = self._admission_published
        if admission.version == version and time.monotonic() - at < self.cfg.balance_ttl / 3:
            return
        if publish(self.dht, admission, expires_in(self.cfg.balance_ttl), identity=self.identity,
                   timeout=self.cfg.fetch_timeout):
            self._admission_published = (admission.version, time.monotonic())
        else:
            log.warning("publishing admission list version %d failed; retrying next round", admission.version)


def main(cfg: CoordinatorConfig, ready_file: str | None = None) -> int:
    """Run a coordinator until SIGINT/SIGTERM; print how to reach it. Returns the exit code.

    `ready_file`: once serving, write the bootstrap info there as JSON (atomically; `bootstrap_document`:
    run, public_key, maddrs, grpc_address, http_address (null when the dashboard is off), version), so a
    launcher (the demo, tests) or a peer (`coordinator.bootstrap` = the file) can join it."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Coordinator(cfg) as coordinator:
            dashboard = f"  dashboard:   {coordinator.http.url}\n" if coordinator.http else ""
            print(f"coordinator for run {cfg.run}\n  gRPC:        {coordinator.address}\n{dashboard}"
                  f"  key:         {coordinator.identity.fingerprint}  (peers pin this as coordinator.trusted_key)\n"
                  f"  join DHT at: " + "\n               ".join(coordinator.visible_maddrs()), flush=True)
            if ready_file is not None:
                from plumbing.processes import write_json_atomic

                write_json_atomic(ready_file, coordinator.bootstrap_document())
            while not stop.wait(1.0):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
