"""A peer's status report (schema 2) carries a real training step's numbers, as the dashboard shows them."""

import dataclasses
from types import SimpleNamespace

import pytest

from node.swarm.config import NodeConfig
from node.swarm.peer import Node
from node.swarm.update import GossipCounters
from plumbing import __version__
from node.training.build import build_trainer
from plumbing.identity import SigningIdentity
from plumbing.dht_records import PEER_STATUS_SCHEMA_VERSION, PeerStatusRecord


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
        bytes_received_total=1_500, state_bytes_sent_total=0, state_bytes_received_total=0,
        dense_bytes_total=19_000, compression_ratio=19.0, time_averaging=0.5, time_allreduce=0.1,
        time_waiting=0.4, averaging_error="TimeoutError: no group", rounds_averaged=4, rounds_failed=1,
        rounds_dropped=0, rounds_partial=0, resyncs=0, weights_disagreements=0, param_fingerprint=None)
    status = node.status_record(report)
    metrics = report.metrics_row()

    assert status.schema_version == PEER_STATUS_SCHEMA_VERSION and status.version == __version__
    assert (status.step, status.address, status.reachability) == (1, node.addresses[0], "direct")
    for key in ("reward", "accuracy", "er", "erv", "era", "gate", "aux", "tokens_per_s"):
        assert getattr(status, key) == pytest.approx(metrics[key]), key
    assert metrics["kl"] is None and status.kl is None  # kl_coef 0: no reference policy, KL not measured
    assert status.step_seconds == metrics["time_step"] and status.heldout_accuracy == 0.375
    assert (status.epoch, status.num_peers_seen, status.averaging_rounds, status.averaging_failures) == (3, 2, 4, 1)
    assert status.compression_ratio == 19.0 and (status.bytes_sent, status.bytes_received) == (1_000, 1_500)
    assert status.last_averaging_error == "TimeoutError: no group" and status.publish_failures == 2
    assert status.balance_round == 7 and status.baselines_source == "local"
    er = report.stats.moments["er"]
    deciles = status.deciles["er"]
    assert deciles.count == er.count and deciles.values == tuple(sorted(deciles.values))
    assert deciles.values[0] <= er.mean <= deciles.values[-1]
    # the dict a DHT node stores reads back equal
    assert PeerStatusRecord.model_validate(status.model_dump(mode="json")) == status


@pytest.mark.unit
def test_a_value_that_does_not_validate_never_stops_the_peer(tmp_path):
    node = _node(tmp_path)
    before_first_step = node.status_record(None)
    assert before_first_step.step == 0 and before_first_step.reward is None and before_first_step.deciles == {}
    report = node.trainer.train_step()
    broken = dataclasses.replace(report.metrics, reward=float("nan"), accuracy=1.0000000000000002,
                                 er_deciles=dataclasses.replace(report.metrics.er_deciles, values=(3.0,) * 10))
    status = node.status_record(dataclasses.replace(report, metrics=broken))
    assert status.step == 1 and status.reward is None and status.deciles == {}  # reported without them
    assert status.accuracy is None  # the whole dashboard part went when the deciles did not validate
