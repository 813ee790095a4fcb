"""protos.records: every rule of swarm.proto refuses what breaks it (naming the field and the rule),
valid records pass and survive encode/decode exactly, and records are small on the wire."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import sys
from pathlib import Path

import msgpack
import pytest

from protos import records, swarm_pb2
from protos.records import RecordError, SchemaVersionError
from shaping import Baselines, IndicatorStats, ShapingConfig

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "coordinator"))  # the coordinator tests' fakes: real statistics through shaping

from coordinator_fakes import (  # noqa: E402
    DECILES,
    RUN,
    batch_stats,
    full_peer_status,
    meta_record,
    peer_status,
    random_batch,
)

pytestmark = pytest.mark.unit
def _status(**changes) -> swarm_pb2.PeerStatus:
    return records.replace(full_peer_status("a", 8.0), **changes)


def _round(cfg: ShapingConfig | None = None, gated: bool = True):
    from coordinator.rounds import RoundState, merge_round

    cfg = cfg or ShapingConfig()
    values, gates = random_batch(random.Random(5), 6)
    signals = [meta_record("a", 3, batch_stats(values, gates if gated else []))]
    return merge_round(RoundState.initial(cfg), signals, cfg, run=RUN, coordinator_key="k", issued_at=7.5)


def _claim(**changes) -> swarm_pb2.WeightsClaim:
    claim = records.build(swarm_pb2.WeightsClaim, run_id=RUN, peer_id="a", epoch=3, fingerprint=[1.0, -2.0],
                          published_at=1.0)
    return records.replace(claim, **changes)


def _state() -> swarm_pb2.SwarmState:
    alert = swarm_pb2.Alert(key="peer_behind:a", kind="peer_behind", severity="warning", peer_id="a",
                            message="a is 3 behind", started_at=5.0, started_round=2)
    peers = [swarm_pb2.PeerState(peer_id="a", first_seen=1.0, last_seen=2.0, last_step=3, num_contributions=4,
                                 active=True, status=_status(), health=swarm_pb2.PEER_HEALTH_BEHIND,
                                 version_mismatch=True, epoch_lag=3),
             swarm_pb2.PeerState(peer_id="b", first_seen=1.0, last_seen=2.0, health=swarm_pb2.PEER_HEALTH_GONE)]
    return records.build(swarm_pb2.SwarmState, run_id=RUN, coordinator_key="k", round=1, latest=_round().record,
                         peers=peers, visible_maddrs=["/ip4/127.0.0.1/tcp/1/p2p/X"], now=9.0, alerts=[alert],
                         coordinator_version="0.1.0", http_address="127.0.0.1:8080", records_rejected=7)


def _refused(message, path: str, rule: str, error: type[RecordError] = RecordError) -> RecordError:
    with pytest.raises(error) as info:
        records.validate(message)
    assert (info.value.path, info.value.rule) == (path, rule), str(info.value)
    assert str(info.value).startswith(f"{path}: ") and str(info.value).endswith(f"(rule {rule})")
    return info.value


# ---------------------------------------------------------------- valid records pass, exactly

@pytest.mark.parametrize("gated", [True, False])
def test_every_record_survives_encode_and_decode_exactly(gated):
    result = _round(gated=gated)
    signal = result.contributions[0]
    events = [records.build(swarm_pb2.SwarmEvent, seq=1, kind=swarm_pb2.ROUND_COMPLETED, at=2.0, round=1,
                            weights=result.record, detail="d"),
              records.build(swarm_pb2.SwarmEvent, seq=2, kind=swarm_pb2.RECORD_REJECTED, at=3.0, peer_id="x#1")]
    history = records.build(swarm_pb2.GetHistoryResponse, rounds=[
        swarm_pb2.RoundRecord(weights=result.record, contributions=result.contributions)])
    for record in (signal, result.record, _status(), _claim(), _state(), history, *events):
        data = records.encode(record)
        assert records.decode(type(record), data) == record
        assert records.encode(records.decode(type(record), data)) == data  # deterministic bytes
    assert result.record.balance.HasField("mean_gate") is gated  # unmeasured stays unset, not 0


def test_baselines_state_survives_the_wire_exactly_in_both_modes():
    rng = random.Random(9)
    for cfg in (ShapingConfig(), ShapingConfig.reference()):
        baselines = Baselines.initial(cfg)
        for _ in range(3):
            baselines = baselines.update(batch_stats(*random_batch(rng, 5)), cfg)
        message = records.decode(swarm_pb2.Baselines, records.encode(records.baselines_message(baselines)))
        assert records.baselines_of(message) == baselines  # the EMA state bit for bit
        assert message.era == baselines.value("era") and message.ready == baselines.ready


def test_statistics_convert_to_shaping_and_back_exactly():
    stats = batch_stats(*random_batch(random.Random(2), 9))
    assert records.stats_of(records.stats_message(stats)) == stats
    empty = IndicatorStats()
    assert records.stats_of(records.stats_message(empty)) == empty


def test_a_schema_1_status_still_parses_with_the_schema_2_fields_unset():
    old = peer_status("b", 3.0, schema_version=1, version="0.0.9", step=2, throughput=0.5)
    parsed = records.decode(swarm_pb2.PeerStatus, records.encode(old))
    assert parsed.schema_version == 1 and records.get(parsed, "reward") is None
    assert not parsed.HasField("er_deciles") and parsed.baselines_source == ""


def test_zeros_stay_zeros_and_unset_stays_unset():
    status = records.decode(swarm_pb2.PeerStatus, records.encode(_status(reward=None)))
    assert records.get(status, "kl") == 0.0 and records.get(status, "epoch") == 0  # measured zeros
    assert records.get(status, "reward") is None and records.get(status, "step") == 9  # unset; no presence
    assert records.get(status, "reward", default=-1.0) == -1.0


# ---------------------------------------------------------------- each rule kind refuses, naming field and rule

@pytest.mark.parametrize("changes, path, rule", [
    ({"accuracy": 1.5}, "PeerStatus.accuracy", "max"),
    ({"gate": -0.1}, "PeerStatus.gate", "min"),
    ({"throughput": -1.0}, "PeerStatus.throughput", "min"),
    ({"balance_round": 0}, "PeerStatus.balance_round", "min"),
    ({"peer_id": "p" * 65}, "PeerStatus.peer_id", "max_len"),
    ({"last_averaging_error": "e" * 257}, "PeerStatus.last_averaging_error", "max_len"),
    ({"run_id": "no spaces allowed"}, "PeerStatus.run_id", "run_id"),
    ({"run_id": ""}, "PeerStatus.run_id", "run_id"),
    ({"baselines_source": "elsewhere"}, "PeerStatus.baselines_source", "allowed"),
    ({"reachability": 7}, "PeerStatus.reachability", "enum"),
    ({"er_deciles": swarm_pb2.Deciles(count=5, values=[1.0] * 10)}, "PeerStatus.er_deciles.values", "min_items"),
    ({"er_deciles": swarm_pb2.Deciles(count=5, values=[1.0] * 12)}, "PeerStatus.er_deciles.values", "max_items"),
    ({"era_deciles": swarm_pb2.Deciles(count=5, values=[2.0] + [1.0] * 10)}, "PeerStatus.era_deciles.values",
     "non_decreasing"),
    ({"er_deciles": swarm_pb2.Deciles(count=0, values=[1.0] * 11)}, "PeerStatus.er_deciles.count", "min"),
    ({"schema_version": 1}, "PeerStatus.tokens_per_s", "since"),  # schema-1 reports carry no schema-2 field
])
def test_a_status_that_breaks_a_rule_is_refused_naming_field_and_rule(changes, path, rule):
    _refused(_status(**changes), path, rule)


def test_since_also_covers_plain_fields_and_lists_but_not_their_defaults():
    base = dict(schema_version=1, reward=None, accuracy=None, tokens_per_s=None, step_seconds=None,
                compression_ratio=None, heldout_accuracy=None, kl=None, er=None, erv=None, era=None, gate=None,
                aux=None, epoch=None, num_peers_seen=None, averaging_rounds=0, averaging_failures=0,
                last_averaging_error="", publish_failures=0, baselines_source="", balance_round=None,
                er_deciles=None, era_deciles=None, staleness=None, gradient_bytes_sent=None,
                gradient_bytes_received=None, state_averaging_bytes_sent=None, state_averaging_bytes_received=None,
                state_bytes_served=None, state_bytes_downloaded=None)
    assert records.validate(_status(**base)).schema_version == 1  # defaults are not "set"
    _refused(_status(**{**base, "averaging_rounds": 3}), "PeerStatus.averaging_rounds", "since")
    _refused(_status(**{**base, "era_deciles": DECILES}), "PeerStatus.era_deciles", "since")
    # an optional field is "set" even at 0: a schema-2 report may not carry schema 3's staleness
    _refused(_status(**{**base, "schema_version": 2, "staleness": 0}), "PeerStatus.staleness", "since")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_no_double_anywhere_may_be_nan_or_infinite(value):
    _refused(_status(reward=value), "PeerStatus.reward", "finite")  # an optional field without other rules
    _refused(_status(reported_at=value), "PeerStatus.reported_at", "finite")  # a plain field
    _refused(_claim(fingerprint=[1.0, value]), "WeightsClaim.fingerprint[1]", "finite")  # a repeated item
    _refused(_status(er_deciles=swarm_pb2.Deciles(count=1, values=[0.0] * 10 + [value])),
             "PeerStatus.er_deciles.values[10]", "finite")
    signal = _round().contributions[0]
    bad = records.replace(signal, stats=records.replace(signal.stats, er=swarm_pb2.IndicatorMoments(
        count=1, sum=value, sumsq=1.0)))
    _refused(bad, "MetaSignal.stats.er.sum", "finite")  # two levels down
    state = _state()
    state.peers[0].status.kl = value
    _refused(state, "SwarmState.peers[0].status.kl", "finite")  # inside a repeated message inside a message
    weights = _round().record
    weights.baselines.er_state.raw = value
    _refused(weights, "BalanceWeights.baselines.er_state.raw", "finite")


def test_required_fields_and_repeated_message_items_are_checked():
    weights = records.replace(_round().record, merged=None)
    _refused(weights, "BalanceWeights.merged", "required")
    _refused(swarm_pb2.RoundRecord(), "RoundRecord.weights", "required")
    history = swarm_pb2.GetHistoryResponse(schema_version=1, rounds=[
        swarm_pb2.RoundRecord(weights=_round().record, contributions=[records.replace(
            _round().contributions[0], run_id="bad run")])])
    _refused(history, "GetHistoryResponse.rounds[0].contributions[0].run_id", "run_id")
    _refused(_claim(fingerprint=[]), "WeightsClaim.fingerprint", "min_items")
    _refused(_claim(fingerprint=[0.0] * 17), "WeightsClaim.fingerprint", "max_items")


def test_strings_without_a_declared_limit_get_the_default_cap():
    event = records.build(swarm_pb2.SwarmEvent, seq=1, kind=swarm_pb2.PEER_LEFT, at=1.0,
                          detail="x" * records.DEFAULT_MAX_LEN)
    _refused(records.replace(event, detail="x" * (records.DEFAULT_MAX_LEN + 1)), "SwarmEvent.detail", "max_len")
    alert = swarm_pb2.Alert(key="k", kind="no_peers", severity="fatal")
    _refused(alert, "Alert.severity", "allowed")


def test_statistics_get_shaping_semantic_checks():
    signal = _round().contributions[0]
    inconsistent = records.replace(signal, stats=records.replace(
        signal.stats, er=swarm_pb2.IndicatorMoments(count=2, sum=10.0, sumsq=1.0)))  # sum^2 > count * sumsq
    error = _refused(inconsistent, "MetaSignal.stats", "signal_stats")
    assert "inconsistent" in str(error)
    too_gated = records.replace(signal, stats=records.replace(signal.stats, gate_sum=5.0, gate_count=2))
    assert "gates lie in [0, 1]" in str(_refused(too_gated, "MetaSignal.stats", "signal_stats"))
    weights = records.replace(_round().record, baselines=records.replace(_round().record.baselines, alpha=0.0))
    assert "alpha" in str(_refused(weights, "BalanceWeights.baselines", "baselines"))
    _refused(records.replace(_round().record, round=0), "BalanceWeights.round", "min")


def test_a_peer_state_may_carry_a_health_value_of_a_newer_coordinator_but_not_an_unknown_event_kind():
    state = _state()
    state.peers[0].health = 42  # open_enum: a newer coordinator's state reads as unclassified
    assert records.validate(state) is state and records.label(swarm_pb2.PeerHealth, 42) == ""
    event = swarm_pb2.SwarmEvent(schema_version=1, seq=1, kind=99)
    assert event.kind == 99  # proto3 keeps the unknown value ...
    _refused(event, "SwarmEvent.kind", "enum")  # ... and validation refuses it


# ---------------------------------------------------------------- schema versions

@pytest.mark.parametrize("message_type", [swarm_pb2.MetaSignal, swarm_pb2.BalanceWeights, swarm_pb2.PeerStatus,
                                          swarm_pb2.WeightsClaim, swarm_pb2.SwarmState, swarm_pb2.SwarmEvent,
                                          swarm_pb2.GetHistoryRequest, swarm_pb2.GetHistoryResponse])
def test_a_missing_or_newer_schema_version_is_refused_naming_both_versions(message_type):
    latest = records.latest_schema(message_type)
    name = message_type.DESCRIPTOR.name
    missing = _refused(message_type(), f"{name}.schema_version", "schema_version")
    assert not isinstance(missing, SchemaVersionError)
    assert f"{name} has no schema_version; the sender must set schema_version={latest}" in str(missing)
    newer = _refused(message_type(schema_version=latest + 1), f"{name}.schema_version", "schema_version",
                     SchemaVersionError)
    assert f"has schema_version {latest + 1}, newer than the {latest} this rankswarm reads" in str(newer)


def test_a_nested_record_of_a_newer_schema_is_refused_inside_a_current_message():
    state = _state()
    state.peers[0].status.schema_version = 4
    error = _refused(state, "SwarmState.peers[0].status.schema_version", "schema_version", SchemaVersionError)
    assert "SwarmState.peers[0].status (PeerStatus) has schema_version 4, newer than the 3" in str(error)
    assert records.latest_schema(swarm_pb2.PeerStatus) == 3 and records.latest_schema(swarm_pb2.PeerState) == 0


# ---------------------------------------------------------------- bytes from elsewhere

def test_decode_refuses_what_is_not_a_valid_record_and_never_raises_anything_else():
    good = records.encode(_claim())
    cases = [(b"\xff\xff\xff", "wire_format"), (good[:-3], "wire_format"), ("text", "bytes"),
             ({"run": RUN}, "bytes"), (good + b"\x98\x06\x01", "known_fields"),  # field number 99
             (b"x" * (records.MAX_RECORD_BYTES + 1), "max_bytes"), (b"", "schema_version")]
    for data, rule in cases:
        with pytest.raises(RecordError) as info:
            records.decode(swarm_pb2.WeightsClaim, data)
        assert info.value.rule == rule, (data[:20], str(info.value))
    assert "msgpack dict" in str(pytest.raises(RecordError, records.decode, swarm_pb2.WeightsClaim, {}).value)
    rng = random.Random(0)
    for _ in range(300):  # random bytes: a RecordError or, rarely, a valid claim; never another exception
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        try:
            records.decode(swarm_pb2.WeightsClaim, noise)
        except RecordError:
            pass


def test_build_refuses_wrong_types_and_unknown_fields_as_record_errors():
    assert records.build(swarm_pb2.WeightsClaim, run_id=RUN, epoch=1, fingerprint=[1.0]).schema_version == 1
    for fields in ({"fingerprint": ["x"]}, {"epoch": -1}, {"color": "blue"}):
        with pytest.raises(RecordError, match=r"\(rule types\)"):
            records.build(swarm_pb2.WeightsClaim, run_id=RUN, **{"fingerprint": [1.0], **fields})


def test_replace_copies_and_clears_and_labels_name_enum_values():
    status = _status()
    changed = records.replace(status, reward=None, er_deciles=None, step=10)
    assert status.HasField("reward") and status.step == 9  # the original is untouched
    assert not changed.HasField("reward") and not changed.HasField("er_deciles") and changed.step == 10
    assert records.labels(swarm_pb2.PeerHealth) == ("online", "joining", "behind", "unreachable", "gone")
    assert records.labels(swarm_pb2.SwarmEventKind)[0] == "round_completed"
    assert records.value_of(swarm_pb2.Reachability, "relayed") == swarm_pb2.REACHABILITY_RELAYED
    assert records.value_of(swarm_pb2.Reachability, "") == 0
    with pytest.raises(ValueError, match="'sideways' is not one of"):
        records.value_of(swarm_pb2.Reachability, "sideways")


# ---------------------------------------------------------------- small on the wire

def test_records_are_smaller_than_the_msgpack_dicts_of_the_former_format():
    """The same records, as rankswarm 0.1.0 stored them (msgpack of the pydantic JSON) and as protobuf."""
    from coordinator import legacy_records

    conn = sqlite3.connect(":memory:")
    conn.executescript((TESTS / "coordinator" / "data" / "history_v2.sql").read_text())
    sizes = {}
    for table, parse in (("contributions", legacy_records.meta_signal), ("rounds", legacy_records.balance),
                         ("statuses", legacy_records.peer_status)):
        for (text,) in conn.execute(f"SELECT record FROM {table}"):
            old, new = len(msgpack.packb(json.loads(text))), len(records.encode(parse(json.loads(text))))
            sizes.setdefault(table, []).append((old, new))
            assert new < 0.65 * old, (table, old, new)
    assert max(new for _, new in sizes["contributions"]) < 160  # one peer's step, published every step
    assert max(new for _, new in sizes["rounds"]) < 300
