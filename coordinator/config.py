"""The coordinator's configs: `CoordinatorConfig` and its `health` section.

Light on purpose (pydantic and the DHT key rules only): reading or printing a config never
imports torch, grpc or hivemind (tests/test_light_configs.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plumbing.dht_keys import MAX_RECORD_TTL, check_run_id
from plumbing.swarm_dht import DHTConfig
from shaping.config import ShapingConfig


def _host_port(listen: str, key: str, example: str) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{key}={listen!r} must be host:port, e.g. {example} or 0.0.0.0:0")
    return listen


class HealthConfig(BaseModel):
    """Thresholds of the peer states and alerts (coordinator config section `health`)."""

    model_config = ConfigDict(extra="forbid")

    silent_after_s: float = Field(30.0, gt=0, description=(
        "A peer silent this long (and for 3 of its own steps) is unreachable, until peer_timeout makes it gone."))
    behind_epochs: int = Field(2, ge=1, description=(
        "A peer is behind when another had reported an epoch more than this many ahead of it at its last report."))
    stale_round_after_s: float | None = Field(None, gt=0, description=(
        "No new round for this long while peers are online raises stale_weights; "
        "None = max(60 s, 6 x round_interval)."))
    stale_weights_rounds: int = Field(10, ge=1, description=(
        "A peer shaping with coordinator weights this many rounds old (or with its local baselines while the "
        "coordinator's are ready) raises peer_stale_weights."))
    failure_window_s: float = Field(600.0, gt=0, description=(
        "Averaging or publishing failures and rejected records within this many seconds raise an alert."))
    joining_timeout_s: float = Field(600.0, gt=0, description="A peer joining for longer raises peer_stuck_joining.")
    status_retention_s: float = Field(7 * 86400.0, gt=0, description=(
        "Status reports older than this are deleted from the history (the charts' per-peer KL, accuracy, tokens/s)."))


class TrustConfig(BaseModel):
    """What the coordinator accepts from peers (section `trust`; docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    closed: bool = Field(False, description=(
        "A closed swarm: only identities the operator admitted (`rankswarm admit KEY`) take part; everyone "
        "else's records, votes and averaging parts are ignored. Open (false): anyone not banned takes part, "
        "and robust aggregation carries the load (docs/security.md)."))
    max_rollouts_per_step: int = Field(1024, ge=1, le=10_000_000, description=(
        "Most rollouts one peer's meta-signal may count: a record claiming more (in num_rollouts or any "
        "indicator count) is rejected. Set it to the largest per-step batch a peer of this run uses."))
    max_clock_skew_s: float = Field(60.0, gt=0, le=3600, description=(
        "A meta-signal or status dated more than this far in the future is rejected (a future date would "
        "otherwise keep a forged report newer than the peer's real ones)."))
    max_share: float = Field(4.0, ge=1.0, le=1000.0, description=(
        "In one round a peer's meta-signals are merged up to this many times the typical peer's number "
        "(the lower median); the rest wait for later rounds, so publishing many steps buys no weight."))
    outlier_deviations: float = Field(8.0, gt=0, le=1000.0, description=(
        "With 3 or more peers in a round, a peer whose mean of any indicator lies more than this many robust "
        "deviations (1.4826 x median absolute deviation, at least 5 % of the median) from the median of the "
        "peers' means is held out of the round."))


class CoordinatorConfig(BaseModel):
    """Everything a coordinator needs; forbids unknown keys."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="Run id: names the DHT keys and the history (A-Z a-z 0-9 _ -, up to 64).")
    listen: str = Field("127.0.0.1:50051", description=(
        "gRPC listen address host:port (port 0 = any free port; use 0.0.0.0:PORT to serve other machines)."))
    http_listen: str | None = Field("127.0.0.1:8080", description=(
        "The dashboard, JSON API and /metrics: host:port (port 0 = any free port; 0.0.0.0:PORT serves other "
        "machines); None or \"\" = no HTTP server."))
    db_path: str = Field(description="SQLite history file (created if missing; a restart resumes from it).")
    signing_key_path: str | None = Field(None, description=(
        "RSA key that signs balance records (created if missing). Keep it: peers pin its fingerprint. "
        "None = signing.key next to db_path, so a restart (or a re-created container) keeps the key."))
    health_file: str | None = Field(None, description=(
        "Heartbeat file `rankswarm health` reads; None = health.json next to db_path."))
    round_interval: float = Field(10.0, ge=0.05, le=3600, description="Seconds between rounds.")
    fetch_timeout: float = Field(5.0, gt=0, le=120, description="Seconds one DHT read may take.")
    balance_ttl: float = Field(300.0, gt=0, le=MAX_RECORD_TTL, description=(
        "Seconds a published balance record lives; refreshed every third of it while the coordinator runs."))
    peer_timeout: float = Field(120.0, gt=0, le=86400, description="Seconds unseen before a peer counts as gone.")
    max_history_rounds: int = Field(1000, ge=1, le=100_000, description="Most rounds one GetHistory returns.")
    grpc_workers: int = Field(16, ge=2, le=256, description=(
        "gRPC worker threads; each open WatchSwarmEvents stream holds one."))
    dht: DHTConfig = Field(default_factory=DHTConfig, description=(
        "How the coordinator joins the swarm's DHT (initial_peers, host_maddrs, identity_path, ...); "
        "identity_path None = dht.identity next to db_path, so the address peers join with survives a restart."))
    shaping: ShapingConfig = Field(default_factory=ShapingConfig, description=(
        "Baseline EMA and lambda settings; must match the peers' shaping config."))
    health: HealthConfig = Field(default_factory=HealthConfig, description=(
        "When a peer counts as unreachable or behind, and when the dashboard raises alerts."))
    trust: TrustConfig = Field(default_factory=TrustConfig, description=(
        "Bounds on what peers' records may claim, and how a round resists peers that lie."))
    tls: bool = Field(False, description=(
        "Serve gRPC and the dashboard over TLS (a self-signed certificate is made on first start and kept; "
        "clients pass it: `rankswarm status --tls-cert FILE`). Use it whenever the coordinator is reached "
        "over a network you do not control."))
    tls_cert_path: str | None = Field(None, description=(
        "TLS certificate (PEM); None = tls/coordinator.crt next to db_path."))
    tls_key_path: str | None = Field(None, description=(
        "TLS private key (PEM); None = tls/coordinator.key next to db_path."))
    operator_token_path: str | None = Field(None, description=(
        "The operator's token (made on first start, mode 0600): needed to admit and ban peers "
        "(`rankswarm admit/ban --token-file`) and, with dashboard_token, to read the dashboard. "
        "None = operator.token next to db_path."))
    dashboard_token: bool = Field(False, description=(
        "The dashboard, JSON API and /metrics need the operator token (`Authorization: Bearer <token>`, or "
        "`?token=` once in a browser). /healthz stays open for probes."))
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024, description=(
        "Largest gRPC message the coordinator accepts or sends."))

    def beside_history(self, path: str | None, default: str) -> str:
        """`path`, or `default` in the folder of db_path."""
        return path or str(Path(self.db_path).parent / default)

    @field_validator("run")
    @classmethod
    def _run_id(cls, run: str) -> str:
        return check_run_id(run)

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        return _host_port(listen, "listen", "127.0.0.1:50051")

    @field_validator("http_listen")
    @classmethod
    def _http_listen(cls, listen: str | None) -> str | None:
        return _host_port(listen, "http_listen", "127.0.0.1:8080") if listen else None

    @model_validator(mode="after")
    def _identity_next_to_history(self) -> CoordinatorConfig:
        # Both keys default to files beside the history: a coordinator that forgets them on restart
        # would stop matching every peer's pinned trusted_key and every published join address.
        home = Path(self.db_path).parent
        if self.signing_key_path is None:
            self.signing_key_path = str(home / "signing.key")
        if self.dht.identity_path is None:
            self.dht = self.dht.model_copy(update={"identity_path": str(home / "dht.identity")})
        return self

    @model_validator(mode="after")
    def _fetch_fits_round(self) -> CoordinatorConfig:
        if self.balance_ttl < 2 * self.round_interval:
            raise ValueError(f"balance_ttl ({self.balance_ttl}) must be at least twice round_interval "
                             f"({self.round_interval}) or the balance record expires between rounds")
        return self
