"""protobuf <-> typed objects: exact round trips, version refusal, malformed messages refused."""

import random

import pytest

from coordinator.events import EventKind, SwarmEvent
from coordinator.rounds import RoundState, merge_round
from coordinator.views import Alert, PeerView, RoundView, SwarmStateView
from coordinator_fakes import RUN, batch_stats, meta_record, random_batch
from protos import convert, swarm_pb2
from plumbing.dht_records import Deciles, PeerStatusRecord, SchemaVersionError
from shaping import ShapingConfig


def _round(gated: bool = True):
    rng = random.Random(5)
    values, gates = random_batch(rng, 6)
    records = [meta_record("a", 3, batch_stats(values, gates if gated else []))]
    return merge_round(RoundState.initial(ShapingConfig()), records, ShapingConfig(), run=RUN, coordinator_key="k", issued_at=7.5)


def _status() -> PeerStatusRecord:
    return PeerStatusRecord(run=RUN, peer_id="a", version="0.1.0", address="/ip4/1.2.3.4/tcp/5", reachability="relayed",
                            step=9, throughput=1.5, bytes_sent=10, bytes_received=20, reported_at=8.0)


def _wire(message):
    """Serialize and parse again, as the bytes would cross the network."""
    return type(message).FromString(message.SerializeToString())


@pytest.mark.unit
@pytest.mark.parametrize("gated", [True, False])
def test_records_round_trip_exactly(gated):
    result = _round(gated)
    assert convert.balance_from_pb(_wire(convert.balance_to_pb(result.record))) == result.record
    assert convert.balance_from_response(_wire(convert.balance_response(result.record))) == result.record
    assert convert.balance_from_response(_wire(convert.balance_response(None))) is None
    signal = result.contributions[0]
    assert convert.meta_signal_from_pb(_wire(convert.meta_signal_to_pb(signal))) == signal
    assert convert.peer_status_from_pb(_wire(convert.peer_status_to_pb(_status()))) == _status()
    view = RoundView(result.record, result.contributions)
    assert convert.round_from_pb(_wire(convert.round_to_pb(view))) == view


@pytest.mark.unit
def test_views_and_events_round_trip():
    result = _round()
    peers = (PeerView("a", 1.0, 2.0, 3, 4, True, _status()), PeerView("b", 1.0, 2.0, None, 0, False, None))
    for latest in (result.record, None):
        view = SwarmStateView(RUN, "k", 1 if latest else 0, latest, peers, ("/ip4/127.0.0.1/tcp/1/p2p/X",), 9.0)
        assert convert.swarm_state_from_pb(_wire(convert.swarm_state_to_pb(view))) == view
    for event in (SwarmEvent(1, EventKind.ROUND_COMPLETED, 2.0, round=1, weights=result.record, detail="d"),
                  SwarmEvent(2, EventKind.RECORD_REJECTED, 3.0, peer_id="x#1", detail="bad")):
        assert convert.event_from_pb(_wire(convert.event_to_pb(event))) == event


@pytest.mark.unit
def test_newer_or_missing_schema_versions_are_refused():
    message = convert.balance_to_pb(_round().record)
    message.schema_version = 2
    with pytest.raises(SchemaVersionError, match="schema_version 2, newer than this process's 1"):
        convert.balance_from_pb(message)
    status = convert.peer_status_to_pb(_status())
    status.schema_version = 0
    with pytest.raises(ValueError, match="no schema_version"):
        convert.peer_status_from_pb(status)
    with pytest.raises(SchemaVersionError, match="schema_version 3, newer than this coordinator's 1"):
        convert.check_request_version(3, "GetHistoryRequest")
    with pytest.raises(ValueError, match="set schema_version=1"):
        convert.check_request_version(0, "GetHistoryRequest")


@pytest.mark.unit
def test_malformed_messages_are_refused():
    message = convert.balance_to_pb(_round().record)
    message.baselines.alpha = 0.0  # a message that never set it
    with pytest.raises(ValueError, match="alpha"):
        convert.balance_from_pb(message)
    status = convert.peer_status_to_pb(_status())
    status.reachability = 7  # an enum value from a newer peer
    with pytest.raises(ValueError, match="reachability 7"):
        convert.peer_status_from_pb(status)
    status = convert.peer_status_to_pb(_status())
    status.run_id = "no spaces allowed"
    with pytest.raises(ValueError, match="run"):
        convert.peer_status_from_pb(status)
    bad_balance = convert.balance_to_pb(_round().record)
    bad_balance.round = 0
    with pytest.raises(ValueError, match="round"):
        convert.balance_from_pb(bad_balance)
    assert swarm_pb2.SwarmEvent(schema_version=1, kind=99).kind == 99
    with pytest.raises(ValueError, match="kind 99"):
        convert.event_from_pb(swarm_pb2.SwarmEvent(schema_version=1, kind=99))


@pytest.mark.unit
def test_baselines_state_survives_the_wire_exactly_in_both_modes():
    rng = random.Random(9)
    for cfg in (ShapingConfig(), ShapingConfig.reference()):
        state = RoundState.initial(cfg)
        for step in range(3):
            values, gates = random_batch(rng, 5)
            state = merge_round(state, [meta_record("a", step, batch_stats(values, gates))], cfg, run=RUN,
                                coordinator_key="k", issued_at=1.0).state
        message = _wire(convert.baselines_to_pb(state.baselines))
        assert convert.baselines_from_pb(message) == state.baselines
        assert message.era == pytest.approx(state.baselines.value("era"))


@pytest.mark.unit
def test_dashboard_fields_round_trip_and_schema_1_reports_still_parse():
    deciles = Deciles(count=5, values=tuple(float(i) for i in range(11)))
    full = _status().model_copy(update={
        "tokens_per_s": 812.5, "step_seconds": 1.25, "compression_ratio": 19.3, "reward": -0.25, "accuracy": 0.5,
        "heldout_accuracy": 0.39, "kl": 0.0, "er": 21.5, "erv": -0.5, "era": 0.0, "gate": 1.0, "aux": -0.01,
        "epoch": 0, "num_peers_seen": 3, "averaging_rounds": 4, "averaging_failures": 1,
        "last_averaging_error": "TimeoutError: x", "publish_failures": 2, "baselines_source": "global",
        "balance_round": 12, "deciles": {"er": deciles, "era": deciles}})
    assert convert.peer_status_from_pb(_wire(convert.peer_status_to_pb(full))) == full  # zeros stay zeros, not None
    old = convert.peer_status_to_pb(_status())
    old.schema_version = 1
    parsed = convert.peer_status_from_pb(_wire(old))
    assert parsed.schema_version == 1 and parsed.reward is None and parsed.deciles == {}
    alert = Alert("peer_behind:a", "peer_behind", "warning", "a", "a is 3 behind", 5.0, 2)
    peers = (PeerView("a", 1.0, 2.0, 3, 4, True, full, state="behind", version_mismatch=True, epoch_lag=3),
             PeerView("b", 1.0, 2.0, None, 0, False, None, state="gone"))
    view = SwarmStateView(RUN, "k", 0, None, peers, (), 9.0, alerts=(alert,), coordinator_version="0.1.0",
                          http_address="127.0.0.1:8080", records_rejected=7)
    assert convert.swarm_state_from_pb(_wire(convert.swarm_state_to_pb(view))) == view
