"""`rankswarm doctor`: check a peer's set-up against its config and the swarm, one line per check with the fix.

    rankswarm doctor [-c node.toml] [--set key=value ...] [--coordinator HOST:PORT] [--max-skew 2]

It reads the same config as `rankswarm node` (files, RANKSWARM_NODE_* variables, --set) and checks:

  versions        rankswarm, hivemind, torch and Python here
  device          model.device exists; its free memory against what training the model needs
                  (node/training/memory.py's estimate, the model's shape from config.json, no weights loaded)
  bootstrap       coordinator.bootstrap answers with well-formed bootstrap info (when set)
  initial peers   each of dht.initial_peers answers (the doctor joins as a DHT client)
  reachability    a swarm member dials this peer back on the address it announces, with a fresh,
                  unrelayed connection (plumbing/probe.py), unless dht.client_mode is set
  clock           the members' clocks against ours (fails beyond --max-skew seconds)
  swarm versions  what the members run
  coordinator key coordinator.trusted_key against the balance records in the DHT and the key of the
                  coordinator at --coordinator (or the bootstrap info's gRPC address)

A check that cannot run because an earlier one failed says so. The doctor listens on
dht.host_maddrs like the peer would, so run it before the peer starts (or give it another port).
Exit code: 0 when every check passed (warnings allowed), 1 when one failed (2: the config
itself is invalid, as for every command).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from node.swarm.config import NodeConfig
from plumbing import __version__

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
MAX_MEMBERS_ASKED = 3


@dataclass(frozen=True)
class Finding:
    """The outcome of one check; `fix` says what to change when it did not pass."""

    check: str
    status: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.check}: {self.message}"
        return text + (f"\n      fix: {self.fix}" if self.fix else "")


@dataclass
class _Context:
    cfg: NodeConfig
    coordinator: str | None
    max_skew: float
    timeout: float
    bootstrap_key: str | None = None
    dht: object = None
    members: list[str] = field(default_factory=list)  # peer ids (base58) of initial peers that answered
    answers: list = field(default_factory=list)       # plumbing.probe.ProbeAnswer


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f} GiB"


def check_versions(ctx: _Context) -> Iterator[Finding]:
    import hivemind
    import torch

    yield Finding("versions", OK, f"rankswarm {__version__}, hivemind {hivemind.__version__}, "
                                  f"torch {torch.__version__}, Python {platform.python_version()}")


# what the doctor assumes that it cannot know before the first step
PROMPT_ALLOWANCE = 64  # tokens of prompt on top of sampling.max_new_tokens
RUNTIME_BYTES = 512 << 20  # Python, torch, transformers and hivemind themselves (resident before the model)


def check_device(ctx: _Context) -> Iterator[Finding]:
    from node.model.loading import resolve_dtype
    from node.training.build import resolve_device
    from node.training.memory import estimate_memory, free_memory, shape_from_config

    cfg = ctx.cfg
    try:
        device = resolve_device(cfg.model.device)
        shape = shape_from_config(cfg.model.path, resolve_dtype(cfg.model.dtype, device))
    except (ValueError, OSError, RuntimeError) as err:
        yield Finding("device", FAIL, str(err), "fix model.device / model.path")
        return
    # the same estimate the peer checks before its first step (node/training/memory.py)
    estimate = estimate_memory(shape, cfg, device, prompt_tokens=PROMPT_ALLOWANCE, swarm=True)
    needed = estimate.total + (RUNTIME_BYTES if device.type == "cpu" else 0)
    free, total, what = free_memory(device)
    model = cfg.model.path or "the embedded model"
    summary = (f"{device}: {what} {_gib(free)} of {_gib(total)}; training {model} ({shape.num_params / 1e6:,.1f}M "
               f"parameters, {shape.dtype_bytes} bytes each) needs about {_gib(needed)}")
    if needed > free:
        yield Finding("device", FAIL, summary + " (estimate): it does not fit",
                      "use a device with more free memory, a smaller model (model.path), or lower "
                      "memory.micro_batch_size, algo.prompts_per_step x sampling.group_size or "
                      "sampling.max_new_tokens (the peer's own check names the figure each reaches)")
    elif needed > 0.8 * free:
        yield Finding("device", WARN, summary + " (estimate): little headroom", "free memory or shrink the batch")
    else:
        yield Finding("device", OK, summary + " (estimate)")


def check_bootstrap(ctx: _Context) -> Iterator[Finding]:
    from node.swarm.joining import CoordinatorKeyMismatch, adopt
    from plumbing.bootstrap import NotYetAvailable, read_bootstrap
    from plumbing.swarm_dht import BootstrapError

    spec = ctx.cfg.coordinator.bootstrap
    if not spec:
        return
    try:
        info = read_bootstrap(spec, timeout=ctx.timeout)
    except NotYetAvailable as err:
        yield Finding("bootstrap", FAIL, f"no bootstrap info: {err}",
                      "start the coordinator, make its dashboard (http_listen) reachable from here, or fix "
                      "coordinator.bootstrap")
        return
    except BootstrapError as err:
        yield Finding("bootstrap", FAIL, str(err), "point coordinator.bootstrap at a rankswarm coordinator")
        return
    ctx.bootstrap_key = info.public_key
    if ctx.coordinator is None and info.grpc_address:
        host, _, port = info.grpc_address.rpartition(":")
        url_host = urlsplit(spec).hostname
        if host in ("0.0.0.0", "::", "[::]") and url_host:
            host = url_host
        ctx.coordinator = f"{host}:{port}"
    try:
        ctx.cfg = adopt(ctx.cfg, info)
    except CoordinatorKeyMismatch as err:
        yield Finding("coordinator key", FAIL, str(err), f"coordinator.trusted_key={info.public_key!r} if you "
                                                         "trust it")
        # go on checking the swarm at the addresses it lists, with the key the user pinned
        pinned = ctx.cfg.coordinator.trusted_key
        joined = adopt(_with_key(ctx.cfg, None), info)
        ctx.cfg = _with_key(joined, pinned)
        return
    except BootstrapError as err:
        yield Finding("bootstrap", FAIL, str(err), "fix run_id or coordinator.bootstrap")
        return
    yield Finding("bootstrap", OK, f"{info.source}: run {info.run}, coordinator key {info.public_key}, "
                                   f"{len(info.maddrs)} address(es), version {info.version or '?'}")


def _with_key(cfg: NodeConfig, key: str | None) -> NodeConfig:
    return cfg.model_copy(update={"coordinator": cfg.coordinator.model_copy(update={"trusted_key": key})})


def check_initial_peers(ctx: _Context) -> Iterator[Finding]:
    from plumbing.identity import SigningIdentity, build_record_validators
    from plumbing.probe import connected_peers
    from plumbing.swarm_dht import BootstrapError, start_dht

    dht_cfg = ctx.cfg.dht
    if not dht_cfg.initial_peers:
        yield Finding("initial peers", WARN, "none configured: this peer would start a new swarm of its own",
                      "set dht.initial_peers (or coordinator.bootstrap) to join an existing swarm")
        return
    # a client of the DHT with a throw-away identity: nobody adds it to their routing table, and a running
    # peer's identity is never borrowed
    probe_cfg = dht_cfg.model_copy(update={"client_mode": True, "identity_path": None})
    try:
        ctx.dht = start_dht(probe_cfg, record_validators=build_record_validators(SigningIdentity.generate(),
                                                                                 ctx.cfg.run_id))
    except BootstrapError as err:
        yield Finding("initial peers", FAIL, str(err).splitlines()[0] + " " + ", ".join(dht_cfg.initial_peers),
                      "\n      ".join(str(err).splitlines()[1:]))
        return
    connected = set(connected_peers(ctx.dht))
    for maddr in dht_cfg.initial_peers:
        peer_id = maddr.rsplit("/p2p/", 1)[-1]
        if peer_id in connected:
            ctx.members.append(peer_id)
            yield Finding("initial peers", OK, f"{maddr} answered")
        else:
            yield Finding("initial peers", WARN, f"{maddr} did not answer (others did)",
                          "drop it from dht.initial_peers, or check that it runs and its port is open")


def check_reachability(ctx: _Context) -> Iterator[Finding]:
    from plumbing.bootstrap import dialable_first
    from plumbing.probe import ask
    from plumbing.swarm_dht import visible_addresses

    if not ctx.members:
        yield Finding("reachability", SKIP, "no swarm member to ask (see initial peers)")
        return
    mine = dialable_first(visible_addresses(ctx.dht))
    shown = ", ".join(m.split("/p2p/")[0] for m in mine)
    for member in ctx.members[:MAX_MEMBERS_ASKED]:
        try:
            ctx.answers.append(ask(ctx.dht, member, [] if ctx.cfg.dht.client_mode else mine,
                                   timeout=ctx.timeout))
        except Exception as err:  # network boundary: a member that cannot answer is a finding, not a crash
            yield Finding("reachability", WARN, f"member {member} did not answer the probe ({type(err).__name__}: "
                                                f"{err}); it may run an older rankswarm")
    if ctx.cfg.dht.client_mode:
        yield Finding("reachability", OK, "dht.client_mode is set: others will not dial this peer, it dials them "
                                          "(fine behind NAT; it cannot serve its state to late joiners)")
        return
    if not ctx.answers:
        yield Finding("reachability", WARN, "could not be checked: no member answered the probe")
        return
    reached = [a for a in ctx.answers if a.reply.dialed]
    if reached:
        yield Finding("reachability", OK, f"swarm member {reached[0].peer_id} reached this peer directly at "
                                          f"{shown}")
        return
    ports = sorted({m.split("/tcp/")[1].split("/")[0] for m in ctx.cfg.dht.host_maddrs if "/tcp/" in m} - {"0"})
    port = f"TCP port {', '.join(ports)}" if ports else \
        "a fixed TCP port (dht.host_maddrs=[\"/ip4/0.0.0.0/tcp/31337\"])"
    yield Finding("reachability", FAIL, f"no swarm member could reach this peer at {shown} "
                                        f"({ctx.answers[0].reply.dial_error})",
                  f"listen on {port}, open it to the internet (firewall, port forwarding) and set "
                  "dht.announce_maddrs to your public address, e.g. [\"/ip4/<public ip>/tcp/<port>\"]; or set "
                  "dht.client_mode=true")


def check_clock_and_versions(ctx: _Context) -> Iterator[Finding]:
    if not ctx.answers:
        yield Finding("clock", SKIP, "no swarm member answered (see reachability)")
        return
    worst = max(ctx.answers, key=lambda a: abs(a.clock_offset))
    skew = max(0.0, abs(worst.clock_offset) - worst.uncertainty)
    what = f"{'ahead of' if worst.clock_offset < 0 else 'behind'} member {worst.peer_id}"
    if skew > ctx.max_skew:
        yield Finding("clock", FAIL, f"this machine's clock is {abs(worst.clock_offset):.1f}s {what} "
                                     f"(over {ctx.max_skew:g}s; DHT records and averaging deadlines use wall time)",
                      "synchronise the clock (e.g. `timedatectl set-ntp true`, chrony)")
    else:
        yield Finding("clock", OK, f"within {abs(worst.clock_offset):.2f}s (+-{worst.uncertainty:.2f}s) of "
                                   f"{len(ctx.answers)} member(s)")
    others = sorted({a.reply.version for a in ctx.answers if a.reply.version != __version__})
    if others:
        yield Finding("swarm versions", WARN, f"members run {', '.join(others)}, this peer {__version__}",
                      "install the swarm's rankswarm version (peers of other versions may not average together)")
    else:
        yield Finding("swarm versions", OK, f"the members asked run {__version__}, like this peer")


def check_coordinator_key(ctx: _Context) -> Iterator[Finding]:
    from coordinator.client import CoordinatorClient, CoordinatorError
    from plumbing.dht_records import fetch
    from protos import swarm_pb2

    pinned = ctx.cfg.coordinator.trusted_key
    if not pinned:
        yield Finding("coordinator key", WARN, "no coordinator pinned: this peer shapes with local baselines only",
                      "set coordinator.trusted_key to the key `rankswarm coordinator` prints, or "
                      "coordinator.bootstrap")
        return
    if ctx.coordinator:
        try:
            with CoordinatorClient(ctx.coordinator, timeout=ctx.timeout) as client:
                state = client.swarm_state()
        except CoordinatorError as err:
            yield Finding("coordinator key", WARN, f"could not ask the coordinator: {err}",
                          "check --coordinator HOST:PORT (its gRPC listen address) and that it runs")
        else:
            if state.coordinator_key != pinned:
                yield Finding("coordinator key", FAIL, f"the coordinator at {ctx.coordinator} signs with "
                                                       f"{state.coordinator_key}, but coordinator.trusted_key pins "
                                                       f"{pinned}",
                              f"if it is your coordinator, pin coordinator.trusted_key={state.coordinator_key!r}")
            elif state.run_id != ctx.cfg.run_id:
                yield Finding("coordinator key", FAIL, f"the coordinator at {ctx.coordinator} runs {state.run_id!r}, "
                                                       f"this peer run_id {ctx.cfg.run_id!r}",
                              f"set run_id={state.run_id!r}")
            else:
                yield Finding("coordinator key", OK, f"the coordinator at {ctx.coordinator} has the pinned key "
                                                     f"(run {state.run_id}, round {state.round})")
    if ctx.dht is None:
        return
    found = fetch(ctx.dht, ctx.cfg.run_id, swarm_pb2.BalanceWeights, timeout=ctx.timeout)
    keys = {r.coordinator_key for r in found.records}
    if pinned in keys:
        latest = max(r.round for r in found.records if r.coordinator_key == pinned)
        yield Finding("coordinator key", OK, f"the DHT holds the pinned coordinator's balance record (round {latest})")
    elif keys:
        yield Finding("coordinator key", FAIL, f"the balance records of run {ctx.cfg.run_id} are signed by "
                                               f"{', '.join(sorted(keys))}, not by the pinned {pinned}",
                      "pin the key your coordinator prints (coordinator.trusted_key); a stale pin is ignored "
                      "silently by the peer, which then trains with local baselines only")
    else:
        yield Finding("coordinator key", WARN, f"no balance record of run {ctx.cfg.run_id} in the DHT yet (the "
                                               "coordinator publishes one after its first round with peers)")


CHECKS: tuple[Callable[[_Context], Iterator[Finding]], ...] = (
    check_versions, check_device, check_bootstrap, check_initial_peers, check_reachability,
    check_clock_and_versions, check_coordinator_key)


def run_doctor(cfg: NodeConfig, *, coordinator: str | None = None, max_skew: float = 2.0, timeout: float = 20.0,
               out: Callable[[str], None] = print) -> list[Finding]:
    """Run every check, printing each finding as it comes; returns them all."""
    ctx = _Context(cfg, coordinator, max_skew, timeout)
    findings: list[Finding] = []
    try:
        for check in CHECKS:
            for finding in check(ctx):
                findings.append(finding)
                out(finding.line())
                sys.stdout.flush()
    finally:
        if ctx.dht is not None:
            ctx.dht.shutdown()
    return findings
