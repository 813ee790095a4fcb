"""`NodeConfig`: the single-node `TrainConfig` plus how this peer joins and talks to the swarm."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from node.gossip.config import GossipConfig
from node.training.config import TrainConfig
from plumbing.swarm_dht import DHTConfig


class CoordinatorLinkConfig(BaseModel):
    """Where the coordinator's balance weights come from and whom to trust for them."""

    model_config = ConfigDict(extra="forbid")

    trusted_key: str | None = Field(None, description=(
        "The coordinator's public key (as printed by `rankswarm coordinator`); balance records signed by "
        "any other key are ignored. None = shape with local baselines only."))
    max_age_s: float = Field(120.0, gt=0, description="Balance weights older than this are stale: use the local EMA.")
    poll_interval_s: float = Field(2.0, gt=0, le=600, description="Seconds between DHT reads of the balance record.")
    bootstrap: str | None = Field(None, description=(
        "Where to read the coordinator's bootstrap info at start instead of copying addresses and keys by hand: "
        "its dashboard (http://HOST:8080; the path /api/v1/bootstrap is implied) or the file it writes with "
        "--ready-file (e.g. on a shared volume). The peer joins the DHT at the addresses listed there; with "
        "trusted_key None it pins the key listed there (trust on first use: only over a network you trust), "
        "with trusted_key set a different key is an error. run_id, if not set, is taken from it too."))
    bootstrap_timeout_s: float = Field(600.0, gt=0, le=86400, description=(
        "Longest wait for the bootstrap info (the coordinator may start after the peer)."))


class NodeConfig(TrainConfig):
    """Everything `rankswarm node` needs: training plus swarm membership."""

    run_id: str = Field("rankswarm-demo", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                        description="Swarm run name: peers and coordinator of one run share it.")
    dht: DHTConfig = DHTConfig()
    gossip: GossipConfig = Field(default_factory=GossipConfig)
    coordinator: CoordinatorLinkConfig = CoordinatorLinkConfig()
    meta_signal_ttl_s: float = Field(300.0, gt=0, description=(
        "Expiration of this peer's meta-signal records in the DHT."))
    shared_run_dir: bool = Field(False, description=(
        "run_dir is shared by several peers (one volume for `compose --scale`): each claims the lowest free "
        "slot-N below it with a file lock, so a re-created peer takes back the identity, signing key and "
        "checkpoints of the one it replaces, and trains with seed + N. Needs a local filesystem (flock)."))
    health_file: str | None = Field(None, description=(
        "Heartbeat file `rankswarm health` reads (phase, step, liveness); None = health.json in run_dir."))
