"""`rankswarm demo`: a coordinator and N peers as separate processes on 127.0.0.1.

The demo only starts processes and reads what they publish through the one metrics
pipeline (each process's metrics.jsonl); it never reaches into their internals. Ctrl-C (or
the time budget) stops every process it started, p2p daemons included.

    rankswarm demo                      # 3 peers, embedded model and arithmetic task
    rankswarm demo --set peers=2 --set steps=20
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from node.gossip.config import GossipConfig
from node.gossip.consensus import fingerprint_gap
from plumbing.formatting import fmt
from plumbing.metrics import read_jsonl
from plumbing.processes import ManagedProcess, rankswarm_argv, stop_all, wait_for_json
from rankswarm.config import DemoConfig


def _last(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    for row in reversed(rows):
        if row.get("kind") == kind:
            return row
    return None


def _first(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((row for row in rows if row.get("kind") == kind), None)


def _read(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def weights_agreement(rows_by_peer: list[list[dict[str, Any]]]) -> tuple[int, float] | None:
    """(epoch, gap) at the last epoch every peer logged a parameter fingerprint for, where gap is the
    largest `fingerprint_gap` between the first peer and another (0 = identical weights);
    None if the peers share no such epoch. A peer's settle row (its weights after the last step,
    logged last) stands for its epoch over the train row before it."""
    prints = [{r["epoch"]: r["param_fingerprint"] for r in rows
               if r.get("kind") in ("train", "settle") and r.get("param_fingerprint")} for rows in rows_by_peer]
    shared = set.intersection(*(set(p) for p in prints)) if prints else set()
    if not shared:
        return None
    epoch = max(shared)
    first, *others = [p[epoch] for p in prints]
    return epoch, max((fingerprint_gap(first, other) for other in others), default=0.0)


class DemoSwarm:
    """Owns the demo's processes: start, watch, summarise, stop."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.root = Path(cfg.run_dir)
        self.coordinator: ManagedProcess | None = None
        self.peers: dict[int, ManagedProcess] = {}  # by index; a late joiner may be added any time
        self.ready: dict[str, Any] = {}
        self.rounds = 0

    @property
    def target_batch_per_peer(self) -> int:
        """Rollouts per peer per swarm step: `local_steps_per_round` local steps (a peer that leaves, or is
        refused, stops counting: the others keep the pace)."""
        cfg = self.cfg
        return cfg.local_steps_per_round * cfg.prompts_per_step * cfg.group_size

    def peer_dir(self, index: int) -> Path:
        return self.root / f"peer{index}"

    def start(self) -> None:
        """Start the coordinator, wait until it serves, then start `cfg.peers` peers."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.start_coordinator()
        for index in range(self.cfg.peers):
            self.start_peer(index)

    def start_coordinator(self) -> dict[str, Any]:
        coord_dir = self.root / "coordinator"
        overrides = [f"run={json.dumps(self.cfg.run_id)}", f"db_path={json.dumps(str(coord_dir / 'history.db'))}",
                     'listen="127.0.0.1:0"', f"http_listen={json.dumps(self.cfg.http_listen)}",
                     'dht.host_maddrs=["/ip4/127.0.0.1/tcp/0"]',
                     f"round_interval={self.cfg.round_interval}"]
        argv = rankswarm_argv("coordinator", "--ready-file", str(coord_dir / "ready.json"),
                              *[arg for o in overrides for arg in ("--set", o)])
        self.coordinator = ManagedProcess("coordinator", argv, coord_dir / "log.txt")
        self.ready = wait_for_json(coord_dir / "ready.json", 120, processes=[self.coordinator])
        print(f"coordinator up: gRPC {self.ready['grpc_address']}, DHT {self.ready['maddrs'][0]}", flush=True)
        if self.ready.get("http_address"):
            print(f"dashboard: http://{self.ready['http_address']}/  (live while the demo runs)", flush=True)
        return self.ready

    def start_peer(self, index: int, extra_overrides: list[str] = (),
                   command: list[str] | None = None) -> ManagedProcess:
        """Start peer `index` (run dir `peer<index>`); later overrides win over earlier ones. It joins through
        the coordinator's bootstrap file (its addresses and key), as a peer on a shared filesystem would.
        `command`: the program instead of `rankswarm node` (it takes the same `--set` overrides; a
        benchmark's attacker)."""
        run_dir = self.peer_dir(index)
        overrides = [
            f"run_dir={json.dumps(str(run_dir))}", f"seed={100 * self.cfg.seed + index}", f"steps={self.cfg.steps}",
            f"run_id={json.dumps(self.cfg.run_id)}", f"algo.prompts_per_step={self.cfg.prompts_per_step}",
            f"sampling.group_size={self.cfg.group_size}", "checkpoint.every=0", "eval.every=0",
            f"gossip.target_batch_per_peer={self.target_batch_per_peer}",
            f"gossip.target_batch_size={self.cfg.peers * self.target_batch_per_peer}",  # its cap
            # loopback peers find each other in well under a second; the default suits the internet
            f"gossip.matchmaking_time={self.cfg.matchmaking_time}", f"gossip.min_peers={self.cfg.peers}",
            f"coordinator.bootstrap={json.dumps(str(self.root / 'coordinator' / 'ready.json'))}",
            'dht.host_maddrs=["/ip4/127.0.0.1/tcp/0"]', "torch_threads=1", "progress=false",
            *self.cfg.node_overrides, *extra_overrides,
        ]
        argv = [*(command or rankswarm_argv("node")), *[arg for o in overrides for arg in ("--set", o)]]
        process = ManagedProcess(f"peer{index}", argv, run_dir / "log.txt")
        self.peers[index] = process
        return process

    @property
    def processes(self) -> list[ManagedProcess]:
        return ([self.coordinator] if self.coordinator else []) + list(self.peers.values())

    def peer_rows(self, index: int) -> list[dict[str, Any]]:
        return _read(self.peer_dir(index) / "metrics.jsonl")

    def peers_rows(self) -> list[list[dict[str, Any]]]:
        return [self.peer_rows(i) for i in sorted(self.peers)]

    def progress(self) -> str:
        lines = [f"{'peer':<6}{'step':>6}{'round':>6}{'reward':>9}{'acc':>7}{'ER':>7}{'gate':>7}{'base':>8}"
                 f"{'sent MB':>9}{'ratio':>7}  state"]
        for i, rows in zip(sorted(self.peers), self.peers_rows()):
            m = _last(rows, "train") or {}
            proc = self.peers[i]
            state = "running" if proc.alive else f"exited {proc.proc.returncode}"
            if not proc.alive and proc.proc.returncode:
                state += f": {proc.tail(1)[:160]}"  # a failed peer's last line is its error
            sent, dense = m.get("bytes_sent_total"), m.get("dense_bytes_total")
            ratio = dense / sent if sent and dense else None  # so far, over all rounds
            lines.append(
                f"peer{i:<2}{fmt(m.get('step'), 'd'):>6}{fmt(m.get('epoch'), 'd'):>6}"
                f"{fmt(m.get('reward'), '+.3f'):>9}"
                f"{fmt(m.get('accuracy'), '.2f'):>7}{fmt(m.get('er'), '.2f'):>7}{fmt(m.get('gate'), '.2f'):>7}"
                f"{m.get('baselines', '-'):>8}{fmt(_mb(m.get('bytes_sent_total')), '.2f'):>9}"
                f"{fmt(ratio, '.0f'):>6}x  {state}")
        lines.append(self.coordinator_line())
        return "\n".join(lines)

    def coordinator_line(self) -> str:
        from coordinator.client import CoordinatorClient, CoordinatorError
        from protos import records

        try:
            with CoordinatorClient(self.ready["grpc_address"], timeout=2.0) as client:
                state = client.swarm_state()
        except CoordinatorError as err:
            return f"coordinator: unreachable ({err})"
        self.rounds = state.round
        if not state.HasField("latest"):
            return f"coordinator: round {state.round}, waiting for meta-signals"
        latest = state.latest
        return (f"coordinator: round {state.round}, peers {latest.num_peers}, explore share "
                f"{fmt(records.get(latest.balance, 'explore_share'), '.2f')}, lambda {latest.lambda_t:.2f}, "
                f"ER baseline {fmt(records.get(latest.baselines, 'er'), '.2f')}")

    def finished(self) -> bool:
        return all(not p.alive for p in self.peers.values())

    def wait_finished(self, timeout_s: float, poll_s: float = 1.0) -> bool:
        """Wait (at most `timeout_s`) until every peer has exited; whether they all did."""
        deadline = time.monotonic() + timeout_s
        while not self.finished() and time.monotonic() < deadline:
            time.sleep(poll_s)
        return self.finished()

    def watch(self) -> None:
        deadline = time.monotonic() + self.cfg.max_minutes * 60
        redraw = sys.stdout.isatty()  # a terminal gets one table updated in place; a log gets them all
        while time.monotonic() < deadline and not self.finished():
            table = self.progress()
            print(("\x1b[H\x1b[2J" + table) if redraw else table + "\n", flush=True)
            time.sleep(self.cfg.refresh_s)
        if not self.finished():
            print(f"time budget of {self.cfg.max_minutes} min reached: stopping the peers", flush=True)

    def summary(self) -> str:
        rows = self.peers_rows()
        evals = [(_first(r, "eval"), _last(r, "eval")) for r in rows]
        lines = ["", "== demo summary =="]
        for i, (start, end) in zip(sorted(self.peers), evals):
            if start and end:
                lines.append(f"peer{i}: held-out greedy accuracy {start['greedy_accuracy']:.3f} -> "
                             f"{end['greedy_accuracy']:.3f} (step {end['step']})")
        sent = sum((_last(r, "train") or {}).get("bytes_sent_total") or 0 for r in rows)
        dense = sum((_last(r, "train") or {}).get("dense_bytes_total") or 0 for r in rows)
        if sent:
            lines.append(f"gradient bytes sent {sent / 1e6:.2f} MB vs {dense / 1e6:.2f} MB dense fp32 "
                         f"({dense / sent:.0f}x fewer, {(dense - sent) / 1e6:.2f} MB saved)")
        # a peer's settle row (after its last step) carries its final traffic totals
        final = [_last(r, "settle") or _last(r, "train") or {} for r in rows]
        kinds = {kind: sum(row.get(f"{key}_sent_total") or 0 for row in final) for kind, key in (
            ("gradients", "gradient_bytes"), ("state averaging", "state_averaging_bytes"),
            ("state served", "state_bytes"))}
        if any(kinds.values()):
            lines.append("bytes sent by kind (all peers): "
                         + ", ".join(f"{kind} {value / 1e6:.2f} MB" for kind, value in kinds.items()))
        state = sum(row.get("state_bytes_received_total") or 0 for row in final)
        if state:
            lines.append(f"state downloads (peers joining or catching up): {state / 1e6:.2f} MB")
        if len(rows) > 1 and (agreement := weights_agreement(rows)) is not None:
            epoch, gap = agreement
            last = [_last(r, "train") or {} for r in rows]
            lines.append(f"peers' weights at swarm step {epoch}: fingerprints differ by {gap:.1e} of their size "
                         f"({'the same weights' if gap <= GossipConfig().weights_rtol else 'NOT the same weights'}); "
                         "failed rounds "
                         f"dropped {sum(m.get('rounds_dropped') or 0 for m in last)}, state resyncs "
                         f"{sum(m.get('resyncs') or 0 for m in last)}, downloads while leaving "
                         f"{sum((_last(r, 'settle') or {}).get('settle_downloads') or 0 for r in rows)}")
        lines.append(f"coordinator rounds completed: {self.rounds}")
        return "\n".join(lines)

    def stop_peers(self) -> None:
        stop_all(list(self.peers.values()))

    def stop(self) -> None:
        # peers first (all at once), so the coordinator sees them leave; then the coordinator
        self.stop_peers()
        if self.coordinator is not None:
            self.coordinator.stop()


def _mb(value: Any) -> float | None:
    return None if value is None else value / 1e6


def run_demo(cfg: DemoConfig) -> int:
    swarm = DemoSwarm(cfg)
    try:
        swarm.start()
        swarm.watch()
        swarm.stop_peers()
        if swarm.ready:
            swarm.coordinator_line()  # the final round count
        print(swarm.summary(), flush=True)
    finally:
        swarm.stop()
    failed = [p for p in swarm.peers.values() if p.proc.returncode not in (0, None)]
    if failed:
        for process in failed:
            print(f"{process.name} exited {process.proc.returncode}: {process.tail(1)}")
        print(f"processes that failed: {', '.join(p.name for p in failed)}; their logs are in "
              f"{cfg.run_dir}/<name>/log.txt")
        return 1
    return 0
