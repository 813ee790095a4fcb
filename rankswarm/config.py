"""`DemoConfig`: the local swarm demo (`rankswarm demo`). Light: pydantic only (tests/test_light_configs.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DemoConfig(BaseModel):
    """The local swarm demo."""

    model_config = ConfigDict(extra="forbid")

    peers: int = Field(3, ge=1, le=16, description="Peers to start (each a separate process).")
    steps: int = Field(60, ge=1, description="Training steps each peer runs.")
    run_dir: str = Field("runs/demo", description="Everything the demo's processes write (wiped at start).")
    max_minutes: float = Field(9.0, gt=0, description="Stop everything after this many minutes.")
    seed: int = Field(0, ge=0, description="Peer i trains with seed 100 * seed + i.")
    run_id: str = Field("rankswarm-demo", description="Run id shared by the coordinator and the peers.")
    prompts_per_step: int = Field(8, ge=1, description="Prompts per peer step (each with group_size rollouts).")
    group_size: int = Field(8, ge=2, description="Rollouts per prompt.")
    round_interval: float = Field(2.0, gt=0, description="Seconds between coordinator rounds.")
    http_listen: str = Field("127.0.0.1:0", description=(
        "The coordinator's dashboard (host:port; port 0 = a free one, printed at start)."))
    node_overrides: list[str] = Field(default_factory=list, description="Extra `key=value` overrides for every peer.")
    local_steps_per_round: int = Field(2, ge=1, description=(
        "Local steps each peer accumulates per averaging round (sets gossip.target_batch_per_peer)."))
    matchmaking_time: float = Field(3.0, gt=0, description="Seconds peers wait to form an averaging group.")
    refresh_s: float = Field(2.0, gt=0, description="Seconds between progress refreshes.")
