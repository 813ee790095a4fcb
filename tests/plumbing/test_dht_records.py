"""Record validation on read, publishing preconditions and polling (a small in-memory DHT fake)."""

from concurrent.futures import Future

import pytest
from hivemind.utils import ValueWithExpiration, get_dht_time

from plumbing.dht_keys import balance_key, meta_signals_key, peer_status_key
from plumbing.dht_records import KINDS, FetchResult, expires_in, fetch, fetch_balance, fetch_meta_signals, poll, publish
from plumbing.identity import SigningIdentity
from protos import records, swarm_pb2
from shaping import INDICATORS, Baselines, IndicatorStats

RUN = "r"
ALICE, BOB, COORD = SigningIdentity.generate(), SigningIdentity.generate(), SigningIdentity.generate()
STATS = IndicatorStats.from_dict({"moments": {n: [2, 1.0, 0.625] for n in INDICATORS},
                                  "gate_sum": 1.25, "gate_count": 2})


class DictDHT:
    """Stands in for hivemind.DHT's get/store futures; values are what hivemind would return (the bytes stored)."""

    def __init__(self):
        self.data: dict[str, dict] = {}
        self.fail = False

    def get(self, key, latest=False, return_future=False):
        future = Future()
        if self.fail:
            future.set_exception(TimeoutError("no peer answered"))
        elif key in self.data:
            items = {sub: ValueWithExpiration(value, get_dht_time() + 60) for sub, value in self.data[key].items()}
            future.set_result(ValueWithExpiration(items, get_dht_time() + 60))
        else:
            future.set_result(None)
        return future

    def store(self, key, value, expiration_time, subkey=None, return_future=False):
        self.data.setdefault(key, {})[subkey] = value
        future = Future()
        future.set_result(True)
        return future


def _signal(identity, step_, **changes) -> swarm_pb2.MetaSignal:
    record = records.build(swarm_pb2.MetaSignal, run_id=RUN, peer_id=identity.fingerprint, step=step_,
                           stats=records.stats_message(STATS), mean_gate=STATS.gate_mean, published_at=1.0)
    return records.replace(record, **changes)


def _balance(identity, round_=4) -> swarm_pb2.BalanceWeights:
    return records.build(swarm_pb2.BalanceWeights, run_id=RUN, round=round_,
                         baselines=records.baselines_message(Baselines.initial()), lambda_t=1.0,
                         merged=records.stats_message(STATS), num_peers=1, num_contributions=1, issued_at=1.0,
                         coordinator_key=identity.fingerprint)


@pytest.mark.unit
def test_valid_records_pass_and_every_kind_of_bad_record_is_rejected_with_a_reason():
    dht = DictDHT()
    good = _signal(ALICE, 1)
    inconsistent = _signal(BOB, 4)
    inconsistent.stats.er.sumsq = 0.01  # sum^2 > count * sumsq: no real values have these moments
    dht.data[meta_signals_key(RUN)] = {
        ALICE.owner_subkey(1): records.encode(good),
        ALICE.owner_subkey(2): records.encode(_signal(ALICE, 3)),                  # step differs from its subkey
        BOB.owner_subkey(1): records.encode(_signal(ALICE, 1)),                    # claims to be alice
        BOB.owner_subkey(2): _signal(BOB, 2, schema_version=99).SerializeToString(),  # newer schema
        BOB.owner_subkey(3): records.encode(_signal(BOB, 3, run_id="other")),      # another run
        BOB.owner_subkey(4): inconsistent.SerializeToString(),                     # malformed statistics
        BOB.owner_subkey(5): "just a string",
        BOB.owner_subkey(6): records.encode(_signal(BOB, 6)) + b"\xf8\x01\x01",  # a field number 31 it does not know
        BOB.owner_subkey(7): _signal(BOB, 7, mean_gate=float("nan")).SerializeToString(),  # not finite
        BOB.owner_subkey(8): {"schema_version": 1, "run": RUN, "step": 8},         # a msgpack dict of rankswarm 0.1
        BOB.owner_subkey(9): b"\xff\xfe garbage",
        b"unsigned": records.encode(_signal(BOB, 10)),
    }
    result = fetch_meta_signals(dht, RUN)
    assert result.records == [good] and result.reachable
    reasons = {r.subkey: r.reason for r in result.rejected}
    assert len(reasons) == 11
    bob = {r.subkey.split("#")[-1]: r.rule for r in result.rejected if r.subkey.startswith(BOB.fingerprint)}
    assert bob == {"1": "owner", "2": "schema_version", "3": "run", "4": "signal_stats", "5": "bytes",
                   "6": "known_fields", "7": "finite", "8": "bytes", "9": "wire_format"}  # what the dashboard counts
    assert {r.subkey: r.rule for r in result.rejected if not r.subkey.startswith(BOB.fingerprint)} == {
        f"{ALICE.fingerprint}#2": "number", "b'unsigned'": "owner"}
    assert "subkey says 2" in reasons[f"{ALICE.fingerprint}#2"]
    assert f"claims peer {ALICE.fingerprint} but is signed by {BOB.fingerprint}" in reasons[f"{BOB.fingerprint}#1"]
    assert "schema_version 99, newer than the 1" in reasons[f"{BOB.fingerprint}#2"]
    assert "run 'other'" in reasons[f"{BOB.fingerprint}#3"]
    assert "MetaSignal.stats" in reasons[f"{BOB.fingerprint}#4"] and "inconsistent" in reasons[f"{BOB.fingerprint}#4"]
    assert "value is a str, not MetaSignal protobuf bytes" in reasons[f"{BOB.fingerprint}#5"]
    assert "[31]" in reasons[f"{BOB.fingerprint}#6"] and "(rule known_fields)" in reasons[f"{BOB.fingerprint}#6"]
    assert "MetaSignal.mean_gate: is nan" in reasons[f"{BOB.fingerprint}#7"]
    assert "msgpack dict" in reasons[f"{BOB.fingerprint}#8"]
    assert "(rule wire_format)" in reasons[f"{BOB.fingerprint}#9"]
    assert "names no owner key" in reasons["b'unsigned'"]
    assert fetch_meta_signals(dht, RUN, step=2).records == []


@pytest.mark.unit
def test_unreachable_dht_is_reported_not_raised():
    dht = DictDHT()
    dht.fail = True
    assert fetch_meta_signals(dht, RUN).reachable is False
    assert fetch_balance(dht, RUN, COORD.fingerprint) is None


@pytest.mark.unit
def test_balance_is_trusted_only_under_the_pinned_key():
    record = _balance(COORD)
    impostor = records.replace(record, coordinator_key=BOB.fingerprint, round=99)
    dht = DictDHT()
    dht.data[balance_key(RUN)] = {COORD.owner_subkey(): records.encode(record),
                                  BOB.owner_subkey(): records.encode(impostor)}
    assert fetch_balance(dht, RUN, COORD.fingerprint) == record
    assert fetch_balance(dht, RUN, ALICE.fingerprint) is None
    with pytest.raises(ValueError, match="pin the coordinator's key"):
        fetch_balance(dht, RUN, "")


@pytest.mark.unit
def test_publishing_refuses_records_of_someone_else_bad_records_and_bad_expirations():
    dht = DictDHT()
    record = _signal(ALICE, 1)
    with pytest.raises(ValueError, match="peer_id=identity.fingerprint"):
        publish(dht, record, expires_in(60), identity=BOB)
    with pytest.raises(ValueError, match="expires_in"):
        publish(dht, record, get_dht_time() - 1, identity=ALICE)
    with pytest.raises(ValueError, match="TTL"):
        expires_in(10 * 86400)
    with pytest.raises(records.RecordError, match=r"MetaSignal.mean_gate: is 1.5, above the maximum 1"):
        publish(dht, records.replace(record, mean_gate=1.5), expires_in(60), identity=ALICE)
    with pytest.raises(TypeError, match="not a DHT record"):
        publish(dht, swarm_pb2.Alert(), expires_in(60), identity=ALICE)
    assert dht.data == {}  # nothing was stored by the refused calls
    assert publish(dht, record, expires_in(60), identity=ALICE)
    assert fetch_meta_signals(dht, RUN).records == [record]


@pytest.mark.unit
def test_every_record_kind_is_stored_as_protobuf_bytes_under_its_owner_subkey_and_reads_back_equal():
    dht = DictDHT()
    written = {
        swarm_pb2.MetaSignal: _signal(ALICE, 12),
        swarm_pb2.BalanceWeights: _balance(ALICE),
        swarm_pb2.PeerStatus: records.build(swarm_pb2.PeerStatus, run_id=RUN, peer_id=ALICE.fingerprint,
                                            reported_at=3.0, kl=0.0, epoch=0),
        swarm_pb2.WeightsClaim: records.build(swarm_pb2.WeightsClaim, run_id=RUN, peer_id=ALICE.fingerprint,
                                              epoch=5, fingerprint=[1.0, -2.5], published_at=2.0),
        swarm_pb2.Admission: records.build(swarm_pb2.Admission, run_id=RUN, closed=True, admitted=[BOB.fingerprint],
                                           version=3, issued_at=4.0, coordinator_key=ALICE.fingerprint),
    }
    assert set(written) == set(KINDS)
    for message_type, record in written.items():
        assert publish(dht, record, expires_in(60), identity=ALICE)
        kind = KINDS[message_type]
        number = getattr(record, kind.number_field) if kind.number_field else None
        stored = dht.data[kind.key(RUN)][ALICE.owner_subkey(number)]
        assert stored == records.encode(record) and isinstance(stored, bytes)  # never pickle, never a dict
        fetched = fetch(dht, RUN, message_type)
        assert fetched.records == [record] and fetched.rejected == []
    status = fetch(dht, RUN, swarm_pb2.PeerStatus).records[0]
    assert status.HasField("kl") and not status.HasField("reward")  # a measured 0 stays 0, unmeasured stays unset
    dht.data[peer_status_key(RUN)][ALICE.owner_subkey(3)] = records.encode(written[swarm_pb2.PeerStatus])
    assert "carry no #<number>" in fetch(dht, RUN, swarm_pb2.PeerStatus).rejected[0][1]


class VirtualClock:
    """time.monotonic and time.sleep for `poll`, so its schedule is checked exactly, whatever the load."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.unit
def test_poll_backs_off_and_returns_partial_results_at_the_deadline(monkeypatch):
    import plumbing.dht_records as records

    clock = VirtualClock()
    monkeypatch.setattr(records, "time", clock)
    calls = []

    def fetch():
        calls.append(clock.now)
        return FetchResult(records=[None] * len(calls))

    done = poll(fetch, lambda r: len(r.records) >= 3, deadline=clock.now + 5, initial_delay=0.01)
    assert done.complete and done.attempts == 3
    assert clock.sleeps == [0.01, 0.02]  # the delay doubles
    calls.clear()
    clock.sleeps.clear()
    start = clock.now
    partial = poll(fetch, lambda r: False, deadline=start + 0.3, initial_delay=0.05, max_delay=0.1)
    assert not partial.complete and len(partial.result.records) == partial.attempts >= 3
    assert clock.sleeps[:2] == [0.05, 0.1] and max(clock.sleeps) == 0.1  # capped at max_delay
    assert clock.now == pytest.approx(start + 0.3)  # never sleeps past the deadline
