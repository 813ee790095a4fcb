"""How rankswarm's records are published to, fetched from and checked in the DHT.

The records are messages of `protos/swarm.proto` (MetaSignal, BalanceWeights, PeerStatus,
WeightsClaim); keys, writers and subkeys are listed in `plumbing.dht_keys`. A DHT value is the
record's protobuf bytes (`protos.records.encode`, never pickle) under its writer's owner subkey,
which hivemind's RSASignatureValidator signs (`plumbing.identity`). `publish` validates before
storing; every read decodes and validates again (`protos.records.decode`), and a record that is
malformed, of a newer schema, of another run, or whose claimed peer (or step, or epoch) disagrees
with its signed subkey is rejected with a logged reason and returned in `FetchResult.rejected`,
never raised. Records whose signature does not match their owner subkey are dropped inside
hivemind before they reach this module.

Every record has an absolute expiration (DHT time, `hivemind.utils.get_dht_time`); use
`expires_in(seconds)`. DHT calls are bounded by a timeout; `poll` retries a fetch with
exponential backoff until a deadline and returns what it has when it passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from google.protobuf.message import Message
from hivemind.utils import get_dht_time

from plumbing.dht_keys import (
    MAX_RECORD_TTL,
    admission_key,
    balance_key,
    describe_subkey,
    meta_signals_key,
    parse_subkey,
    peer_status_key,
    weights_key,
)
from plumbing.identity import SigningIdentity
from protos import records, swarm_pb2
from protos.records import RecordError

log = logging.getLogger(__name__)

DHT_CALL_TIMEOUT = 10.0  # seconds for one store/get; the DHT's own RPC timeouts are shorter

RecordT = TypeVar("RecordT", bound=Message)


@dataclass(frozen=True)
class RecordKind:
    """Where one record type lives in the DHT and which of its fields its signed subkey vouches for."""

    key: Callable[[str], str]  # run -> DHT key
    owner_field: str           # must equal the fingerprint of the key that signed the subkey
    owner_noun: str            # "peer" or "coordinator", for rejection reasons
    number_field: str | None   # carried in the subkey as #<n> (None: the subkey has no number)


KINDS: dict[type[Message], RecordKind] = {
    swarm_pb2.MetaSignal: RecordKind(meta_signals_key, "peer_id", "peer", "step"),
    swarm_pb2.BalanceWeights: RecordKind(balance_key, "coordinator_key", "coordinator", None),
    swarm_pb2.Admission: RecordKind(admission_key, "coordinator_key", "coordinator", None),
    swarm_pb2.PeerStatus: RecordKind(peer_status_key, "peer_id", "peer", None),
    swarm_pb2.WeightsClaim: RecordKind(weights_key, "peer_id", "peer", "epoch"),
}


def _kind(message_type: type[Message]) -> RecordKind:
    kind = KINDS.get(message_type)
    if kind is None:
        raise TypeError(f"{message_type.__name__} is not a DHT record; use one of {[t.__name__ for t in KINDS]}")
    return kind


class Rejection(NamedTuple):
    """A record that was not accepted: whose subkey, why (for people), and which rule (for counting)."""

    subkey: str
    reason: str
    rule: str  # a swarm.proto rule ("max", "schema_version", ...) or "run", "owner", "number", ...


@dataclass
class FetchResult(Generic[RecordT]):
    """Valid records, plus a `Rejection` for each record that was rejected."""

    records: list[RecordT] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    reachable: bool = True  # False when the DHT call itself failed or timed out


def expires_in(seconds: float) -> float:
    """Absolute DHT expiration time `seconds` from now (ValueError outside (0, MAX_RECORD_TTL])."""
    if not 0 < seconds <= MAX_RECORD_TTL:
        raise ValueError(f"record TTL must be in (0, {MAX_RECORD_TTL:.0f}] seconds, got {seconds}")
    return get_dht_time() + seconds


# ---------------------------------------------------------------- publishing

def publish(dht, record: Message, expiration_time: float, *, identity: SigningIdentity,
            timeout: float | None = DHT_CALL_TIMEOUT) -> bool | None:
    """Store `record` under its run's key (plumbing.dht_keys), subkey `[owner:<identity>]` (plus `#<step>` or
    `#<epoch>` where the key has one); True if stored, False if the DHT call failed (logged).

    `timeout=None` sends it without waiting and returns None (a training step does not wait for the DHT).
    `dht` must run `build_record_validators(identity, run)` so hivemind signs the value. A record of
    someone else, or one that breaks a rule of swarm.proto (RecordError), raises ValueError: a bug here."""
    kind = _kind(type(record))
    owner = getattr(record, kind.owner_field)
    if owner != identity.fingerprint:
        raise ValueError(f"{type(record).__name__}.{kind.owner_field} is {owner!r}, but it is published as "
                         f"{identity.fingerprint}: build it with {kind.owner_field}=identity.fingerprint")
    if not get_dht_time() < expiration_time <= get_dht_time() + MAX_RECORD_TTL:
        raise ValueError(f"expiration_time must be in the future and within {MAX_RECORD_TTL:.0f} s "
                         f"(use plumbing.dht_records.expires_in(seconds))")
    data = records.encode(record)
    key = kind.key(record.run_id)
    subkey = identity.owner_subkey(getattr(record, kind.number_field) if kind.number_field else None)
    future = dht.store(key, data, expiration_time, subkey=subkey, return_future=True)
    if timeout is None:
        return None
    try:
        return bool(future.result(timeout=timeout))
    except Exception as err:  # a failed store is reported to the caller as False, never raised
        future.cancel()
        log.warning("storing %s failed: %s: %s", key, type(err).__name__, err)
        return False


# ---------------------------------------------------------------- fetching and checking

def _get_dict(dht, key: str, timeout: float) -> dict | None:
    """The subkey -> value dictionary under `key` ({} if none), None if the DHT call failed."""
    future = dht.get(key, latest=True, return_future=True)
    try:
        found = future.result(timeout=timeout)
    except Exception as err:
        future.cancel()
        log.warning("reading %s failed: %s: %s", key, type(err).__name__, err)
        return None
    if found is None:
        return {}
    if not isinstance(found.value, dict):  # validators refuse plain values; a stale node could still serve one
        log.warning("ignoring a plain (non-dictionary) value under %s", key)
        return {}
    return {subkey: item.value for subkey, item in found.value.items()}


def _read(message_type: type[RecordT], kind: RecordKind, run: str, subkey: object, value: object) -> RecordT:
    """The record in `value` if valid, of `run` and vouched for by its signed `subkey`; RecordError says why not."""
    try:
        owned = parse_subkey(subkey)
    except ValueError as err:
        raise RecordError("subkey", "owner", str(err)) from None
    record = records.decode(message_type, value)
    name = type(record).__name__
    if record.run_id != run:
        raise RecordError(f"{name}.run_id", "run", f"record is for run {record.run_id!r}, not {run!r}")
    claimed = getattr(record, kind.owner_field)
    if claimed != owned.owner:
        raise RecordError(f"{name}.{kind.owner_field}", "owner",
                          f"record claims {kind.owner_noun} {claimed} but is signed by {owned.owner}")
    number = getattr(record, kind.number_field) if kind.number_field else None
    if number != owned.step:
        raise RecordError(f"{name}.{kind.number_field or 'subkey'}", "number",
                          f"record says {kind.number_field} {number} but its subkey says {owned.step}"
                          if kind.number_field else f"subkeys of {name} carry no #<number>")
    return record


def fetch(dht, run: str, message_type: type[RecordT], *, owner: str | None = None,
          timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[RecordT]:
    """Every live, valid record of `message_type` in `run`, plus (subkey, reason) for each one rejected.

    With `owner` (a key fingerprint), only records under that key's subkeys are read: anybody may
    write their own subkey under the balance key, and only the pinned coordinator's counts."""
    kind = _kind(message_type)
    key = kind.key(run)
    raw = _get_dict(dht, key, timeout)
    if raw is None:
        return FetchResult(reachable=False)
    result: FetchResult[RecordT] = FetchResult()
    for subkey, value in raw.items():
        if owner is not None and not _owned_by(subkey, owner):
            continue
        try:
            result.records.append(_read(message_type, kind, run, subkey, value))
        except RecordError as err:  # SchemaVersionError included: they name field and rule
            name = describe_subkey(subkey)
            log.warning("rejected DHT record %s[%s]: %s", key, name, err)
            result.rejected.append(Rejection(name, str(err), err.rule))
    return result


def _owned_by(subkey: object, owner: str) -> bool:
    try:
        return parse_subkey(subkey).owner == owner
    except ValueError:
        return False


def fetch_meta_signals(dht, run: str, step: int | None = None, *,
                       timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[swarm_pb2.MetaSignal]:
    """All live meta-signals of `run` (only those of `step` if given), validated, sorted by (peer, step)."""
    result = fetch(dht, run, swarm_pb2.MetaSignal, timeout=timeout)
    result.records = sorted((r for r in result.records if step is None or r.step == step),
                            key=lambda r: (r.peer_id, r.step))
    return result


def fetch_balance_result(dht, run: str, trusted_key: str, *,
                         timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[swarm_pb2.BalanceWeights]:
    """Balance records under the trusted coordinator key (at most one), plus rejections."""
    if not trusted_key:
        raise ValueError("trusted_key is empty: pin the coordinator's key fingerprint "
                         "(printed at its start and shown by `rankswarm status`)")
    return fetch(dht, run, swarm_pb2.BalanceWeights, owner=trusted_key, timeout=timeout)


def fetch_balance(dht, run: str, trusted_key: str, *,
                  timeout: float = DHT_CALL_TIMEOUT) -> swarm_pb2.BalanceWeights | None:
    """The latest balance record signed by the coordinator whose key fingerprint is `trusted_key`, else None."""
    found = fetch_balance_result(dht, run, trusted_key, timeout=timeout).records
    return max(found, key=lambda r: r.round) if found else None


# ---------------------------------------------------------------- polling with backoff and a deadline

@dataclass
class PollResult(Generic[RecordT]):
    """What polling ended with: the last fetch, whether the goal was met, and how many tries it took."""

    result: FetchResult[RecordT]
    complete: bool
    attempts: int


def poll(fetch: Callable[[], FetchResult[RecordT]], done: Callable[[FetchResult[RecordT]], bool], *,
         deadline: float, initial_delay: float = 0.1, max_delay: float = 2.0) -> PollResult[RecordT]:
    """Call `fetch` until `done(result)` or `deadline` (time.monotonic()); return the last result either way.

    The delay between tries doubles from `initial_delay` up to `max_delay` and never runs past
    the deadline; a partial result is returned (complete=False) and logged, never swallowed.
    """
    delay, attempts = initial_delay, 0
    while True:
        attempts += 1
        result = fetch()
        if done(result):
            return PollResult(result, True, attempts)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.info("polling gave up after %d tries: %d records, %d rejected, reachable=%s",
                     attempts, len(result.records), len(result.rejected), result.reachable)
            return PollResult(result, False, attempts)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay)


def poll_balance(dht, run: str, trusted_key: str, *, deadline: float, after_round: int = 0,
                 **backoff) -> PollResult[swarm_pb2.BalanceWeights]:
    """Poll until a trusted balance record of a round after `after_round` is visible (or the deadline)."""
    return poll(lambda: fetch_balance_result(dht, run, trusted_key),
                lambda res: any(r.round > after_round for r in res.records), deadline=deadline, **backoff)
