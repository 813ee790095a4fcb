"""Record validation on read, publishing preconditions and polling (a small in-memory DHT fake)."""

import time
from concurrent.futures import Future

import pytest
from hivemind.utils import ValueWithExpiration, get_dht_time

from plumbing.dht_keys import balance_key, meta_signals_key
from plumbing.identity import SigningIdentity
from plumbing.dht_records import (BalanceRecord, FetchResult, MetaSignalRecord, expires_in, fetch_balance,
                                   fetch_meta_signals, poll, publish_meta_signal)
from shaping import INDICATORS, Baselines, IndicatorStats

RUN = "r"
ALICE, BOB, COORD = SigningIdentity.generate(), SigningIdentity.generate(), SigningIdentity.generate()
STATS = IndicatorStats.from_dict({"moments": {n: [2, 1.0, 0.625] for n in INDICATORS},
                                  "gate_sum": 1.25, "gate_count": 2})


class DictDHT:
    """Stands in for hivemind.DHT's get/store futures; values are the plain dicts hivemind would return."""

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


def _signal(identity, step_, **changes) -> dict:
    record = MetaSignalRecord(run=RUN, peer_id=identity.fingerprint, step=step_, stats=STATS, published_at=1.0)
    return {**record.model_dump(mode="json"), **changes}


@pytest.mark.unit
def test_valid_records_pass_and_every_kind_of_bad_record_is_rejected_with_a_reason():
    dht = DictDHT()
    good = _signal(ALICE, 1)
    dht.data[meta_signals_key(RUN)] = {
        ALICE.owner_subkey(1): good,
        ALICE.owner_subkey(2): _signal(ALICE, 3),                        # step differs from its subkey
        BOB.owner_subkey(1): _signal(ALICE, 1),                          # claims to be alice
        BOB.owner_subkey(2): _signal(BOB, 2, schema_version=99),         # newer schema
        BOB.owner_subkey(3): _signal(BOB, 3, run="other"),               # another run
        BOB.owner_subkey(4): _signal(BOB, 4, stats={"er": "nope"}),      # malformed statistics
        BOB.owner_subkey(5): "just a string",
        BOB.owner_subkey(6): {**_signal(BOB, 6), "extra": 1},            # unknown field
        BOB.owner_subkey(7): _signal(BOB, 7, step="7"),                  # no type coercion
        b"unsigned": _signal(BOB, 8),
    }
    result = fetch_meta_signals(dht, RUN)
    assert [r.model_dump(mode="json") for r in result.records] == [good]
    reasons = dict(result.rejected)
    assert len(reasons) == 9
    assert "subkey says 2" in reasons[f"{ALICE.fingerprint}#2"]
    assert f"claims peer {ALICE.fingerprint} but is signed by {BOB.fingerprint}" in reasons[f"{BOB.fingerprint}#1"]
    assert "schema_version 99, newer than this process's 1" in reasons[f"{BOB.fingerprint}#2"]
    assert "run 'other'" in reasons[f"{BOB.fingerprint}#3"]
    assert "stats" in reasons[f"{BOB.fingerprint}#4"]
    assert "not a record dict" in reasons[f"{BOB.fingerprint}#5"]
    assert "extra" in reasons[f"{BOB.fingerprint}#6"]
    assert "step" in reasons[f"{BOB.fingerprint}#7"]
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
    record = BalanceRecord(run=RUN, round=4, baselines=Baselines.initial(), lambda_t=1.0, merged=STATS, num_peers=1,
                           num_contributions=1, issued_at=1.0, coordinator_key=COORD.fingerprint)
    impostor = record.model_copy(update={"coordinator_key": BOB.fingerprint, "round": 99})
    dht = DictDHT()
    dht.data[balance_key(RUN)] = {COORD.owner_subkey(): record.model_dump(mode="json"),
                                  BOB.owner_subkey(): impostor.model_dump(mode="json")}
    assert fetch_balance(dht, RUN, COORD.fingerprint) == record
    assert fetch_balance(dht, RUN, ALICE.fingerprint) is None
    with pytest.raises(ValueError, match="pin the coordinator's key"):
        fetch_balance(dht, RUN, "")


@pytest.mark.unit
def test_publishing_refuses_records_of_someone_else_and_bad_expirations():
    dht = DictDHT()
    record = MetaSignalRecord(run=RUN, peer_id=ALICE.fingerprint, step=1, stats=STATS, published_at=1.0)
    with pytest.raises(ValueError, match="peer_id=identity.fingerprint"):
        publish_meta_signal(dht, RUN, record, expires_in(60), identity=BOB)
    with pytest.raises(ValueError, match="expires_in"):
        publish_meta_signal(dht, RUN, record, get_dht_time() - 1, identity=ALICE)
    with pytest.raises(ValueError, match="TTL"):
        expires_in(10 * 86400)
    assert publish_meta_signal(dht, RUN, record, expires_in(60), identity=ALICE)
    assert fetch_meta_signals(dht, RUN).records == [record]


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
