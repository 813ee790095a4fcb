"""What a peer takes from the coordinator's bootstrap info (`coordinator.bootstrap`, plumbing/bootstrap.py).

`adopt` returns the peer's config with the coordinator's DHT addresses added to `dht.initial_peers`,
its key pinned as `coordinator.trusted_key` when the peer pins none (trust on first use), and its
run id when the peer did not set one. A key or run id that contradicts what the peer set is a
`BootstrapError`: silently following another coordinator is what pinning is there to prevent.
"""

from __future__ import annotations

from pydantic import ValidationError

from node.swarm.config import NodeConfig
from plumbing.bootstrap import BootstrapInfo, dialable_first, wait_for_bootstrap
from plumbing.swarm_dht import BootstrapError


class CoordinatorKeyMismatch(BootstrapError):
    """The coordinator publishes another key than the one this peer pins."""


def adopt(cfg: NodeConfig, info: BootstrapInfo) -> NodeConfig:
    """`cfg` joined to the coordinator described by `info` (see the module docstring)."""
    if "run_id" in cfg.model_fields_set and cfg.run_id != info.run:
        raise BootstrapError(f"this peer's run_id is {cfg.run_id!r} but the coordinator at {info.source} runs "
                             f"{info.run!r}: set run_id={info.run!r}, or point coordinator.bootstrap at the "
                             f"coordinator of run {cfg.run_id!r}")
    pinned = cfg.coordinator.trusted_key
    if pinned and pinned != info.public_key:
        raise CoordinatorKeyMismatch(
            f"coordinator.trusted_key pins {pinned} but the coordinator at {info.source} signs with "
            f"{info.public_key}: if it is your coordinator and its key changed (signing.key lost or replaced), "
            "pin the new key; otherwise this is not the coordinator you trust")
    tree = cfg.model_dump()
    tree["run_id"] = info.run
    tree["dht"]["initial_peers"] = list(dict.fromkeys([*cfg.dht.initial_peers, *dialable_first(info.maddrs)]))
    tree["coordinator"]["trusted_key"] = info.public_key
    try:
        return NodeConfig.model_validate(tree)
    except ValidationError as err:
        raise BootstrapError(f"the bootstrap info at {info.source} does not fit this peer's config: {err}") from None


def join_through_bootstrap(cfg: NodeConfig) -> tuple[NodeConfig, BootstrapInfo]:
    """Wait for the bootstrap info at `cfg.coordinator.bootstrap` and adopt it; prints what it waits for."""
    spec = cfg.coordinator.bootstrap
    info = wait_for_bootstrap(spec, cfg.coordinator.bootstrap_timeout_s, on_first_wait=lambda why: print(
        f"waiting for the coordinator's bootstrap info at {spec} ({why}); up to "
        f"{cfg.coordinator.bootstrap_timeout_s:.0f}s", flush=True))
    joined = adopt(cfg, info)
    print(f"bootstrap: run {info.run}, coordinator key {info.public_key}, joining at "
          + ", ".join(joined.dht.initial_peers), flush=True)
    return joined, info
