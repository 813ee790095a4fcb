"""A peer's status report (schema 3) carries a real training step's numbers, as the dashboard shows them."""

import dataclasses
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from hivemind.utils import ValueWithExpiration, get_dht_time

from node.swarm.config import NodeConfig
from node.swarm.peer import Node
from node.swarm.update import GossipCounters
from node.training.build import build_trainer
from plumbing import __version__
from plumbing.dht_keys import peer_status_key
from plumbing.identity import SigningIdentity
from protos import records, swarm_pb2


def _node(tmp_path):
    cfg = NodeConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "seed": 0, "steps": 1, "progress": False, "torch_threads": 2,
        "algo": {"prompts_per_step": 4}, "sampling": {"group_size": 4, "max_new_tokens": 40},
        "eval": {"every": 0, "num_problems": 8}, "checkpoint": {"every": 0}, "run_id": "status-test"})
    node = Node(cfg)
    node.trainer = build_trainer(cfg)  # local update and baselines: no DHT needed to make a report
    node.identity = SigningIdentity.generate()
    node.addresses = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWFake"]
    node.publisher = SimpleNamespace(failed=2)
    node.baselines = SimpleNamespace(latest=SimpleNamespace(round=7))
    return node


@pytest.mark.unit
def test_status_report_carries_the_steps_numbers(tmp_path):
    node = _node(tmp_path)
    node.trainer.metrics.log({"kind": "eval", "step": 0, "greedy_accuracy": 0.375})  # as the start evaluation
    report = node.trainer.train_step()
    # what the gossip update adds on a swarm peer
    report.update.details = GossipCounters(
        epoch=3, num_peers=2, bytes_sent=100, bytes_received=150, bytes_sent_total=1_000,
        bytes_received_total=1_500, state_bytes_sent_total=70, state_bytes_received_total=80,
        gradient_bytes_sent_total=900, gradient_bytes_received_total=1_400, state_averaging_bytes_sent_total=100,
        state_averaging_bytes_received_total=100, dense_bytes_total=19_000, compression_ratio=19.0,
        time_averaging=0.5, time_allreduce=0.1,
        time_waiting=0.4, averaging_error="TimeoutError: no group", rounds_averaged=4, rounds_failed=1,
        rounds_dropped=0, rounds_partial=0, resyncs=0, weights_disagreements=0, param_fingerprint=None)
    status = node.status_record(report)
    metrics = report.metrics_row()

    assert status.schema_version == records.latest_schema(swarm_pb2.PeerStatus) == 3 and status.version == __version__
    assert (status.step, status.address, status.reachability) == (1, node.addresses[0], swarm_pb2.REACHABILITY_DIRECT)
    for key in ("reward", "accuracy", "er", "erv", "era", "gate", "aux", "tokens_per_s"):
        assert getattr(status, key) == pytest.approx(metrics[key]), key
    # kl_coef 0: no reference policy, KL not measured
    assert metrics["kl"] is None and records.get(status, "kl") is None
    assert status.step_seconds == metrics["time_step"] and status.heldout_accuracy == 0.375
    assert (status.epoch, status.num_peers_seen, status.averaging_rounds, status.averaging_failures) == (3, 2, 4, 1)
    assert status.compression_ratio == 19.0 and (status.bytes_sent, status.bytes_received) == (1_000, 1_500)
    assert status.last_averaging_error == "TimeoutError: no group" and status.publish_failures == 2
    assert status.balance_round == 7 and status.baselines_source == "local"
    assert status.staleness == 0  # sampled by the weights it trained (sampling.max_staleness 0)
    traffic = [status.gradient_bytes_sent, status.gradient_bytes_received, status.state_averaging_bytes_sent,
               status.state_averaging_bytes_received, status.state_bytes_served, status.state_bytes_downloaded]
    assert traffic == [900, 1_400, 100, 100, 70, 80]
    er = report.stats.moments["er"]
    deciles = status.er_deciles
    assert deciles.count == er.count and list(deciles.values) == sorted(deciles.values)
    assert deciles.values[0] <= er.mean <= deciles.values[-1]
    # the bytes a DHT node stores read back equal
    assert records.decode(swarm_pb2.PeerStatus, records.encode(status)) == status


@pytest.mark.unit
def test_a_value_that_does_not_validate_never_stops_the_peer(tmp_path):
    node = _node(tmp_path)
    before_first_step = node.status_record(None)
    assert before_first_step.step == 0 and records.get(before_first_step, "reward") is None
    assert not before_first_step.HasField("er_deciles")
    report = node.trainer.train_step()
    broken = dataclasses.replace(report.metrics, reward=float("nan"), accuracy=1.0000000000000002,
                                 er_deciles=dataclasses.replace(report.metrics.er_deciles, values=(3.0,) * 10))
    status = node.status_record(dataclasses.replace(report, metrics=broken))
    assert status.step == 1 and records.get(status, "accuracy") is None  # reported without the dashboard's fields
    assert records.get(status, "reward") is None and not status.HasField("er_deciles")
    assert records.validate(status) is status


class DictDHT:
    """hivemind.DHT's store/get futures over a dict: what `publish` and `fetch` see of the DHT."""

    def __init__(self):
        self.data: dict[str, dict] = {}

    def store(self, key, value, expiration_time, subkey=None, return_future=False):
        self.data.setdefault(key, {})[subkey] = ValueWithExpiration(value, expiration_time)
        future = Future()
        future.set_result(True)
        return future

    def get(self, key, latest=False, return_future=False):
        future = Future()
        items = self.data.get(key)
        future.set_result(None if items is None else ValueWithExpiration(dict(items), get_dht_time() + 60))
        return future


@pytest.mark.unit
def test_a_peer_announces_its_status_and_counts_the_peers_announced_as_records(tmp_path):
    node = _node(tmp_path)
    node.cfg = node.cfg.model_copy(update={"gossip": node.cfg.gossip.model_copy(update={
        "min_peers": 2, "min_peers_timeout_s": 5.0})})
    node.dht = DictDHT()
    other = SigningIdentity.generate()
    status = records.build(swarm_pb2.PeerStatus, run_id="status-test", peer_id=other.fingerprint,
                           reported_at=get_dht_time())
    node.dht.store(peer_status_key("status-test"), records.encode(status), get_dht_time() + 60,
                   subkey=other.owner_subkey())
    assert node._announce_and_wait() == 2  # the other peer's record, and its own announcement
    mine = node.dht.data[peer_status_key("status-test")][node.identity.owner_subkey()].value
    assert records.decode(swarm_pb2.PeerStatus, mine).peer_id == node.identity.fingerprint
