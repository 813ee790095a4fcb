"""Real peers training together: `rankswarm coordinator` and `rankswarm node` processes on 127.0.0.1.

One scenario, shared by the tests below (about two minutes on 2 cores): a coordinator and two
peers start (peer0 with 40 steps, peer1 with 30); once they have averaged a few rounds a third peer
joins late; once it has caught up, one of the first peers and the coordinator are killed with
SIGKILL. The survivors must finish their steps. Everything is read back from what the processes
write (metrics.jsonl, exit codes) and from the coordinator's gRPC API before it dies; every wait is bounded.
Weight equality is read from the parameter fingerprint each peer logs after every update
(tests/integration/test_gossip_consistency.py forces the failure cases on purpose).
"""

from __future__ import annotations

import statistics
import time

import pytest

from coordinator.client import CoordinatorClient
from plumbing.identity import SigningIdentity
from protos import records
from rankswarm.config import DemoConfig
from rankswarm.demo import DemoSwarm
from shaping import IndicatorStats

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NODE_OVERRIDES = [
    "eval.num_problems=16", "gossip.averaging_timeout=15", "gossip.load_state_timeout=60",
    "coordinator.max_age_s=8", "coordinator.poll_interval_s=1", "meta_signal_ttl_s=60",
    "gossip.peer_expiration_s=10",
]


def train_rows(swarm: DemoSwarm, index: int) -> list[dict]:
    return [r for r in swarm.peer_rows(index) if r.get("kind") == "train"]


def wait_until(condition, timeout: float, what: str, swarm: DemoSwarm, killed: tuple[int, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        dead = [p.name for i, p in swarm.peers.items() if i not in killed and not p.alive and p.proc.returncode != 0]
        assert not dead, f"{dead} crashed while waiting for {what}:\n" + "\n".join(
            swarm.peers[int(n[4:])].tail(30) for n in dead)
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n"
                         + "\n".join(p.tail(15) for p in swarm.processes))


def epoch_of(swarm: DemoSwarm, index: int) -> int:
    rows = train_rows(swarm, index)
    return rows[-1].get("epoch", 0) if rows else 0


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("swarm")
    cfg = DemoConfig(peers=2, steps=30, run_dir=str(root), run_id="swarm-it", round_interval=1.0,
                     node_overrides=NODE_OVERRIDES)
    swarm = DemoSwarm(cfg)
    facts: dict = {}
    try:
        swarm.root.mkdir(parents=True, exist_ok=True)
        swarm.start_coordinator()
        # peer0 takes 10 steps more than the others: the fall-back check needs it to shape for well over 12 s
        # after the coordinator dies, however late the joiner caught up (a loaded CI machine killed the
        # coordinator with peer0 a few quick steps from its end, and no step saw the record older than 12 s)
        swarm.start_peer(0, ["steps=40"])
        swarm.start_peer(1)
        wait_until(lambda: min(epoch_of(swarm, 0), epoch_of(swarm, 1)) >= 2, 240, "two averaged rounds", swarm)
        facts["joined_at_epoch"] = epoch_of(swarm, 0)
        swarm.start_peer(2, ["steps=12"])
        wait_until(lambda: any("param_fingerprint" in r for r in train_rows(swarm, 2)), 240,
                   "the late joiner's first update", swarm)
        with CoordinatorClient(swarm.ready["grpc_address"], timeout=5.0) as client:
            facts["state_before_kill"] = client.swarm_state()
            facts["history_before_kill"] = client.history(include_contributions=True)
        facts["killed_at"] = time.time()
        facts["killed_epoch"] = max(epoch_of(swarm, i) for i in (0, 2))
        swarm.peers[1].kill()
        swarm.coordinator.kill()
        wait_until(lambda: not swarm.peers[0].alive and not swarm.peers[2].alive, 300,
                   "the survivors to finish", swarm, killed=(1,))
        yield swarm, facts
    finally:
        swarm.stop()


def fingerprints(swarm: DemoSwarm, index: int) -> dict[int, list[float]]:
    """epoch -> parameter fingerprint right after that epoch's update (or state download)."""
    return {r["epoch"]: r["param_fingerprint"] for r in train_rows(swarm, index) if "param_fingerprint" in r}


def tolerance(prints: dict[int, dict[int, list[float]]]) -> float:
    """A twentieth of what one optimizer step moves a fingerprint (median over all peers' steps)."""
    step_moves = [max(abs(a - b) for a, b in zip(fp[e], fp[e + 1]))
                  for fp in prints.values() for e in fp if e + 1 in fp]
    assert step_moves, "no peer logged two consecutive epochs"
    return 0.05 * statistics.median(step_moves)


def gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def resynced_after(swarm: DemoSwarm, index: int, epoch: int) -> bool:
    """Did the peer download the swarm's state (claims check) after it logged `epoch`?"""
    rows = [r for r in train_rows(swarm, index) if "param_fingerprint" in r]
    at = [r["resyncs"] for r in rows if r["epoch"] == epoch]
    return bool(at) and any(r["resyncs"] > at[-1] for r in rows if r["epoch"] >= epoch)


def stopped_at(swarm: DemoSwarm, index: int, epoch: int) -> bool:
    """Was `epoch` the last the peer logged (killed or finished: it never checked the claims again)?"""
    prints = fingerprints(swarm, index)
    return bool(prints) and max(prints) == epoch


def test_peers_hold_the_same_weights_at_every_epoch_they_share(scenario):
    swarm, _ = scenario
    prints = {i: fingerprints(swarm, i) for i in (0, 1, 2)}
    limit = tolerance(prints)
    disagreements = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        shared = sorted(set(prints[i]) & set(prints[j]))
        for epoch in shared:
            if gap(prints[i][epoch], prints[j][epoch]) <= limit:
                continue
            # hivemind cannot promise equal updates (a reducer timing out hands out partial averages
            # silently; a state download can carry the epoch before its label): such a split must be
            # caught by the weights claims and repaired by a state download, unless the peer that lost
            # never took another step (it was killed right after)
            assert any(resynced_after(swarm, k, epoch) or stopped_at(swarm, k, epoch) for k in (i, j)), (
                f"peer{i} and peer{j} differ at epoch {epoch} (gap {gap(prints[i][epoch], prints[j][epoch]):.2e}, "
                f"limit {limit:.2e}) and neither took the swarm's state")
            disagreements.append((i, j, epoch))
    founders = set(prints[0]) & set(prints[1])
    assert len(founders) >= 3, f"the founders shared only epochs {sorted(founders)}"
    # Not required yet (issue 4 stays open): that splits are rare. Most runs have none, but a split
    # can last a few epochs while a resynced peer's download races the others' next update.
    print(f"weight splits (peer, peer, epoch), each repaired by a state download: {disagreements}")


def test_rounds_are_compressed_averages_over_several_peers(scenario):
    swarm, _ = scenario
    rows = [r for i in (0, 2) for r in train_rows(swarm, i) if r.get("bytes_sent")]
    averaged = [r for r in rows if r.get("num_peers", 1) >= 2]
    assert averaged, "no averaging round moved any bytes"
    # the rounds that averaged: PowerSGD sends at least 16x fewer bytes than a dense fp32 all-reduce
    # (the per-round ratio varies with the peer count the tracker estimated for the round)
    dense = sum(r["compression_ratio"] * r["bytes_sent"] for r in averaged if r.get("compression_ratio"))
    compressed = sum(r["bytes_sent"] for r in averaged if r.get("compression_ratio"))
    assert compressed and dense / compressed >= 16, [(r["step"], r["bytes_sent"], r.get("compression_ratio"))
                                                     for r in rows]
    # all traffic, with the rounds that sent their part and then dropped or failed (the late join and
    # the kill cost a few, more on a loaded machine): each wastes one compressed round, never a dense one
    last = train_rows(swarm, 0)[-1]
    wasted = sum(r["bytes_sent"] for r in train_rows(swarm, 0)
                 if r.get("bytes_sent") and not r.get("compression_ratio"))
    print(f"peer0: {last['dense_bytes_total'] / last['bytes_sent_total']:.1f}x fewer bytes than dense in all, "
          f"{wasted} bytes in rounds that did not apply")
    assert last["dense_bytes_total"] / last["bytes_sent_total"] >= 8


def test_late_joiner_downloads_state_before_training(scenario):
    swarm, facts = scenario
    rows = train_rows(swarm, 2)
    assert rows[-1]["state_bytes_received_total"] > 0, "the late joiner never downloaded state"
    prints = fingerprints(swarm, 2)
    assert prints and min(prints) >= facts["joined_at_epoch"], "the late joiner restarted the swarm's epoch count"
    assert rows[-1]["step"] == 12 and swarm.peers[2].proc.returncode == 0


def test_survivors_hold_the_same_weights_at_their_last_shared_epoch(scenario):
    swarm, _ = scenario
    prints = {i: fingerprints(swarm, i) for i in (0, 1, 2)}
    shared = sorted(set(prints[2]) & set(prints[0]))
    assert shared, "the late joiner and peer0 never reached the same epoch"
    assert len(shared) >= 2, f"the late joiner shared only epochs {shared} with peer0"
    last = shared[-1]
    assert gap(prints[2][last], prints[0][last]) <= tolerance(prints), f"still apart at epoch {last}"


def test_each_survivor_leaves_with_the_swarms_weights(scenario):
    swarm, _ = scenario
    settled = {i: [r for r in swarm.peer_rows(i) if r.get("kind") == "settle"] for i in (0, 2)}
    for index, rows in settled.items():
        assert len(rows) == 1 and rows[0]["settled"], f"peer{index} settle rows: {rows}"
    # the survivor that left first left while the other still trained: the other held the same weights at that
    # epoch. Which one it is depends on the machine: the late joiner has fewer steps, but started later and its
    # first steps download state (on a loaded CI machine peer0 finished first and the joiner stepped on alone)
    first, other = sorted((0, 2), key=lambda i: settled[i][0]["time"])
    leaver = settled[first][0]
    prints = {i: fingerprints(swarm, i) for i in (0, 1, 2)}
    held = prints[other]
    assert leaver["epoch"] in held, f"peer{other} never logged epoch {leaver['epoch']}, where peer{first} left"
    assert gap(leaver["param_fingerprint"], held[leaver["epoch"]]) <= tolerance(prints)


def test_survivors_keep_training_after_a_peer_and_the_coordinator_die(scenario):
    swarm, facts = scenario
    assert swarm.peers[1].proc.returncode != 0  # killed
    for index in (0, 2):
        assert swarm.peers[index].proc.returncode == 0, swarm.peers[index].tail(30)
        after = [r for r in train_rows(swarm, index) if r["time"] > facts["killed_at"]]
        assert after, f"peer{index} logged no step after the kill"
    epochs_after = max(epoch_of(swarm, i) for i in (0, 2))
    assert epochs_after > facts["killed_epoch"], "no round completed after the kill"


def test_peers_shape_with_the_coordinators_weights_then_fall_back(scenario):
    swarm, facts = scenario
    state = facts["state_before_kill"]
    assert state.round >= 1 and state.HasField("latest")
    assert max(r.weights.num_peers for r in facts["history_before_kill"]) >= 2
    rows = train_rows(swarm, 0)
    before = [r["baselines"] for r in rows if r["time"] <= facts["killed_at"]]
    assert "global" in before, "peer0 never shaped with the coordinator's baselines"
    # max_age_s=8: a step shapes with the global baselines only while the coordinator's newest record is
    # at most that old (the age is read when the step shapes, which can be long before its row is written:
    # an averaging round waits up to gossip.averaging_timeout); once the dead coordinator's last record
    # is older, every step falls back to the local EMA
    used = [(r["step"], r["baselines"], r["baselines_global_age_s"]) for r in rows]
    assert all(age is not None and age <= 8 for _, source, age in used if source == "global"), used
    late = [source for _, source, age in used if age is not None and age > 12]
    assert late and set(late) == {"local"}, used
    assert used[-1][1] == "local", used


def test_coordinator_merged_exactly_what_the_peers_measured(scenario):
    swarm, facts = scenario
    peer_index = {SigningIdentity.load_or_create(swarm.peer_dir(i) / "signing.key").fingerprint: i
                  for i in swarm.peers}
    steps = {i: {r["step"]: r for r in train_rows(swarm, i)} for i in swarm.peers}
    checked, contributors = 0, set()
    for round_view in facts["history_before_kill"]:
        if not round_view.contributions:
            continue
        merged = IndicatorStats.merge_all(records.stats_of(c.stats) for c in round_view.contributions)
        for name, value in merged.means().items():
            expected = records.stats_of(round_view.weights.merged).means()[name]
            assert (value is None and expected is None) or value == pytest.approx(expected, rel=1e-12)
        for contribution in round_view.contributions:
            index = peer_index[contribution.peer_id]  # a record from an unknown peer would fail here
            row = steps[index][contribution.step]
            for name in ("er", "erv", "era"):
                if row[name] is not None:
                    assert records.stats_of(contribution.stats).means()[name] == pytest.approx(row[name], rel=1e-9)
            contributors.add(index)
            checked += 1
    assert checked >= 4 and len(contributors) >= 2, (checked, contributors)
