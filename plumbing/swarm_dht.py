"""Joining (or starting) a swarm's hivemind DHT, with errors a person can act on.

Users of neighbouring systems mostly trip on bootstrap ("none of the initial peers
responded") and on the p2p daemon not starting in time; both are turned into a
`BootstrapError` that lists what was tried and what to check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plumbing.errors import StartupError

if TYPE_CHECKING:  # hivemind is imported when a DHT starts, so that reading DHTConfig stays light
    import hivemind

log = logging.getLogger(__name__)


class DHTConfig(BaseModel):
    """How this process joins the swarm's DHT."""

    model_config = ConfigDict(extra="forbid")

    initial_peers: list[str] = Field(default_factory=list, description=(
        "Multiaddrs of peers already in the swarm, e.g. /ip4/1.2.3.4/tcp/31337/p2p/12D3Koo...; "
        "empty = start a new swarm and print the address others join with."))
    host_maddrs: list[str] = Field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/0"], description=(
        "Where to listen; use a fixed port (e.g. /ip4/0.0.0.0/tcp/31337) on a machine others dial."))
    announce_maddrs: list[str] = Field(default_factory=list, description=(
        "Public addresses to advertise when behind NAT/port forwarding (empty = what the daemon sees)."))
    identity_path: str | None = Field(None, description=(
        "Private key file giving this process a stable peer id across restarts (created if missing). "
        "None = the role's own file: dht.identity in a peer's run_dir, next to db_path for the coordinator."))
    client_mode: bool = Field(False, description="Set on peers that cannot accept incoming connections.")
    startup_timeout: float = Field(60.0, gt=0, le=600, description="Seconds to wait for the p2p daemon to start.")

    @field_validator("initial_peers", "host_maddrs", "announce_maddrs")
    @classmethod
    def _valid_multiaddrs(cls, values: list[str], info) -> list[str]:
        from hivemind.utils.multiaddr import Multiaddr  # vendored by hivemind 1.1.12

        for text in values:
            try:
                addr = Multiaddr(text)
            except Exception as err:  # the multiaddr package raises several error types
                raise ValueError(f"{text!r} is not a multiaddr ({err}); "
                                 "expected e.g. /ip4/1.2.3.4/tcp/31337/p2p/12D3Koo...") from None
            if info.field_name == "initial_peers" and "/p2p/" not in str(addr):
                raise ValueError(f"initial peer {text!r} has no /p2p/<peer id> part: "
                                 "copy the full address the peer printed")
        return values


class BootstrapError(StartupError):
    """This process could not join the swarm; the message says what was tried and what to check."""


def _advice(initial_peers: list[str]) -> str:
    tried = "\n".join(f"  - {addr}" for addr in initial_peers) or "  (none)"
    return (f"tried initial peers:\n{tried}\ncheck that:\n"
            "  - at least one of them is running and its address (including /p2p/<id>) was copied exactly;\n"
            "  - its host/port is reachable from here (firewall, NAT: it may need a fixed port in host_maddrs\n"
            "    and announce_maddrs with its public address);\n"
            "  - you use the same rankswarm/hivemind version as the swarm.")


def start_dht(cfg: DHTConfig, *, record_validators: Iterable = ()) -> hivemind.DHT:
    """Start a DHT process joined to `cfg.initial_peers` (or a new swarm if there are none)."""
    import hivemind
    from hivemind.p2p import P2PDaemonError

    kwargs = dict(host_maddrs=cfg.host_maddrs, client_mode=cfg.client_mode, startup_timeout=cfg.startup_timeout)
    if cfg.announce_maddrs:
        kwargs["announce_maddrs"] = cfg.announce_maddrs
    if cfg.identity_path:
        Path(cfg.identity_path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["identity_path"] = cfg.identity_path
    validators = list(record_validators)
    try:
        dht = _start_dht_process(hivemind, cfg, validators, kwargs)
    except P2PDaemonError as err:
        if "already taken" in str(err):
            raise BootstrapError(f"another running peer already uses the DHT identity {cfg.identity_path}: give "
                                 "each process its own run_dir (or dht.identity_path), or stop the other one "
                                 "first") from None
        if "bootstrap peers" in str(err):  # p2pd itself dials the initial peers before the DHT does
            raise BootstrapError(f"none of the initial peers answered.\n{_advice(cfg.initial_peers)}") from None
        raise BootstrapError(f"the p2p daemon did not start: {err}\n"
                             f"(raise dht.startup_timeout on a slow or loaded machine; check that "
                             f"host_maddrs {cfg.host_maddrs} are free)") from None
    except RuntimeError as err:
        if "bootstrap failed" in str(err):
            raise BootstrapError(f"none of the initial peers answered.\n{_advice(cfg.initial_peers)}") from None
        raise
    return dht


START_ATTEMPTS = 2  # a DHT child that dies while starting is started once more


def _start_dht_process(hivemind, cfg: DHTConfig, validators: list, kwargs: dict) -> hivemind.DHT:
    """hivemind.DHT, started, and ready. hivemind waits for readiness without a time limit, and a child
    that dies before it is ready leaves it waiting forever: seen as a segfault of the forked child
    in `asyncio.create_subprocess_exec` (starting p2pd, on the uvloop loop hivemind runs there) when
    the parent had many threads (a test process; twice in about ten full test runs, each a CI run
    hung for good). Here the wait watches the child: one that died is started again once, then
    reported."""
    # the daemon's own startup_timeout bounds a live child; the margin covers the DHT's bootstrap after it
    ready_within = cfg.startup_timeout + 120.0
    for attempt in range(1, START_ATTEMPTS + 1):
        dht = hivemind.DHT(initial_peers=cfg.initial_peers or None, start=False, record_validators=validators,
                           **kwargs)
        dht.run_in_background(await_ready=False)
        deadline = time.monotonic() + ready_within
        while True:
            try:
                dht.wait_until_ready(timeout=0.5)
                return dht
            except TimeoutError:
                pass
            if not dht.is_alive():
                dht.join(1)
                log.warning("the DHT process died while starting (exit code %s)%s", dht.exitcode,
                            ": starting it again" if attempt < START_ATTEMPTS else "")
                break
            if time.monotonic() > deadline:
                dht.terminate()
                raise BootstrapError(f"the DHT process did not become ready in {ready_within:.0f} s "
                                     "(raise dht.startup_timeout on a slow or loaded machine)")
    raise BootstrapError(f"the DHT process died while starting, on all {START_ATTEMPTS} attempts (last exit "
                         f"code {dht.exitcode}); see the log above for its error")


def visible_addresses(dht) -> list[str]:
    """The multiaddrs other peers can join this one with."""
    return [str(addr) for addr in dht.get_visible_maddrs()]
