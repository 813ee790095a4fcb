"""The records rankswarm keeps in the DHT, and how they are published, fetched and checked.

Keys, writers and subkeys are listed in `plumbing.dht_keys`. Values are plain msgpack
dicts made by pydantic models (never pickle); every read validates them again, and a
record that is malformed, of a newer schema, of another run, or whose claimed peer or step
disagrees with its signed subkey is rejected with a logged reason and returned in
`FetchResult.rejected`, never raised. Records whose signature does not match their owner
subkey are dropped inside hivemind before they reach this module.

Every record has an absolute expiration (DHT time, `hivemind.utils.get_dht_time`); use
`expires_in(seconds)`. DHT calls are bounded by a timeout; the polling helpers retry with
exponential backoff until a deadline and return what they have when it passes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, Literal, TypeVar

from hivemind.utils import get_dht_time
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from plumbing.dht_keys import MAX_RECORD_TTL, balance_key, check_run_id, describe_subkey, meta_signals_key, parse_subkey, peer_status_key, weights_key
from plumbing.identity import SigningIdentity
from shaping import Baselines, IndicatorStats

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # of every message and record, except where a record type says otherwise
PEER_STATUS_SCHEMA_VERSION = 2  # 2 added the dashboard's fields (throughput, training, health, deciles)
DHT_CALL_TIMEOUT = 10.0  # seconds for one store/get; the DHT's own RPC timeouts are shorter


class SchemaVersionError(ValueError):
    """A record or message of a newer schema than this process understands."""


def check_schema_version(version: int, what: str, latest: int = SCHEMA_VERSION) -> int:
    """Return `version` if this process understands it (1..latest); SchemaVersionError naming both otherwise."""
    if version > latest:
        raise SchemaVersionError(f"{what} has schema_version {version}, newer than this process's "
                                 f"{latest}; upgrade rankswarm on this machine")
    if version < 1:
        raise ValueError(f"{what} has no schema_version (got {version}); set schema_version={latest}")
    return version


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              arbitrary_types_allowed=True)

    # The newest schema of this record type this process reads (and writes). A type that gains
    # fields raises its own; older records still parse because new fields have defaults.
    LATEST_SCHEMA: ClassVar[int] = SCHEMA_VERSION

    schema_version: int = Field(SCHEMA_VERSION, description="Record schema; newer ones are refused.")
    run: str = Field(description="Run id the record belongs to (plumbing.dht_keys.RUN_ID_PATTERN).")

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        return check_schema_version(version, cls.__name__, cls.LATEST_SCHEMA)

    @field_validator("run")
    @classmethod
    def _valid_run(cls, run: str) -> str:
        return check_run_id(run)


def _stats_from_dict(value: Any) -> IndicatorStats:
    if isinstance(value, IndicatorStats):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"statistics must be a dict, got {type(value).__name__}")
    return IndicatorStats.from_dict(value)  # raises ValueError on bad input


class MetaSignalRecord(_Record):
    """[PUBLISH] one peer's sufficient statistics for one training step."""

    peer_id: str = Field(max_length=64, description="Fingerprint of the publisher's signing key.")
    step: int = Field(ge=0, description="The peer's training step.")
    stats: IndicatorStats = Field(description="The batch's sufficient statistics (IndicatorStats.to_dict on the wire).")
    num_rollouts: int = Field(0, ge=0, description="Rollouts in the batch.")
    num_tokens: int = Field(0, ge=0, description="Response tokens in the batch.")
    published_at: float = Field(description="DHT time of publication (seconds).")

    @field_validator("stats", mode="before")
    @classmethod
    def _parse_stats(cls, value: Any) -> IndicatorStats:
        return _stats_from_dict(value)

    @field_serializer("stats")
    def _dump_stats(self, stats: IndicatorStats) -> dict:
        return stats.to_dict()

    @property
    def mean_gate(self) -> float | None:
        count = self.stats.gate_count
        return self.stats.gate_sum / count if count else None


class BalanceRecord(_Record):
    """[BROADCAST] what the coordinator publishes after a round."""

    round: int = Field(ge=1, description="Coordinator round that produced the record (1, 2, ...).")
    baselines: Baselines = Field(description="Global baselines after the round (Baselines.to_dict on the wire).")
    lambda_t: float = Field(ge=0, description="Auxiliary-signal scale for the next steps.")
    mean_gate: float | None = Field(None, ge=0, le=1, description="Merged gate_sum / gate_count.")
    explore_share: float | None = Field(None, ge=0, le=1, description="Incentive share of the exploration channel.")
    exploit_share: float | None = Field(None, ge=0, le=1, description="Incentive share of the exploitation channel.")
    merged: IndicatorStats = Field(description="The round's merged statistics.")
    num_peers: int = Field(ge=0, description="Distinct peers merged in the round.")
    num_contributions: int = Field(ge=0, description="(peer, step) meta-signals merged in the round.")
    issued_at: float = Field(description="DHT time the round was committed (seconds).")
    coordinator_key: str = Field(max_length=64, description="Fingerprint of the coordinator's signing key.")

    @field_validator("merged", mode="before")
    @classmethod
    def _parse_merged(cls, value: Any) -> IndicatorStats:
        return _stats_from_dict(value)

    @field_validator("baselines", mode="before")
    @classmethod
    def _parse_baselines(cls, value: Any) -> Baselines:
        if isinstance(value, Baselines):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"baselines must be a dict, got {type(value).__name__}")
        return Baselines.from_dict(value)

    @field_serializer("merged")
    def _dump_merged(self, stats: IndicatorStats) -> dict:
        return stats.to_dict()

    @field_serializer("baselines")
    def _dump_baselines(self, baselines: Baselines) -> dict:
        return baselines.to_dict()


DISTRIBUTION_INDICATORS = ("er", "erv", "era")


class Deciles(BaseModel):
    """The 0 %, 10 %, ..., 100 % quantiles of one indicator over the responses of a batch."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    count: int = Field(ge=1, description="Responses that have the indicator.")
    values: tuple[float, ...] = Field(min_length=11, max_length=11, description="11 quantiles, non-decreasing.")

    @field_validator("values", mode="before")
    @classmethod
    def _as_tuple(cls, values: Any) -> Any:
        return tuple(values) if isinstance(values, list) else values  # msgpack and JSON give lists

    @field_validator("values")
    @classmethod
    def _sorted(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(b < a for a, b in zip(values, values[1:])):
            raise ValueError("deciles must be non-decreasing")
        return values


class PeerStatusRecord(_Record):
    """[STATUS] a peer's health report (every few steps).

    Schema 1 had the fields up to `reported_at`; schema 2 added the rest, all optional, so a
    coordinator reads both, and a schema-1 coordinator refuses schema 2 naming both versions."""

    LATEST_SCHEMA: ClassVar[int] = PEER_STATUS_SCHEMA_VERSION

    schema_version: int = Field(PEER_STATUS_SCHEMA_VERSION, description="Record schema; newer ones are refused.")
    peer_id: str = Field(max_length=64, description="Fingerprint of the peer's signing key.")
    version: str = Field("", max_length=64, description="rankswarm version the peer runs.")
    address: str = Field("", max_length=512, description="A multiaddr the peer is reachable at.")
    reachability: Literal["unknown", "direct", "relayed"] = Field("unknown", description="How others reach it.")
    step: int = Field(0, ge=0, description="The peer's latest training step.")
    throughput: float = Field(0.0, ge=0, description="Rollouts per second since the peer started.")
    bytes_sent: int = Field(0, ge=0, description="Bytes sent to the swarm since start.")
    bytes_received: int = Field(0, ge=0, description="Bytes received from the swarm since start.")
    reported_at: float = Field(description="DHT time of the report (seconds).")
    # ---- schema 2: None (or 0 / "") in schema-1 records and when the peer does not know yet
    tokens_per_s: float | None = Field(None, ge=0, description="Response tokens per second in the latest step.")
    step_seconds: float | None = Field(None, ge=0, description="Wall time of the latest training step.")
    compression_ratio: float | None = Field(None, ge=0, description=(
        "Dense fp32 gradient bytes over the bytes actually sent, since start."))
    reward: float | None = Field(None, description="Mean reward of the latest step's rollouts.")
    accuracy: float | None = Field(None, ge=0, le=1, description="Share of the latest step's rollouts judged correct.")
    heldout_accuracy: float | None = Field(None, ge=0, le=1, description=(
        "Latest held-out greedy accuracy, if evaluated."))
    kl: float | None = Field(None, description="KL to the reference policy in the latest step's loss.")
    er: float | None = Field(None, description="Mean effective rank over the latest step's responses.")
    erv: float | None = Field(None, description="Mean ER velocity over the latest step's responses that have one.")
    era: float | None = Field(None, description="Mean ER acceleration over the latest step's responses that have one.")
    gate: float | None = Field(None, ge=0, le=1, description="Mean ERA gate (exploration share) of the latest step.")
    aux: float | None = Field(None, description="Mean auxiliary signal r_aux of the latest step.")
    epoch: int | None = Field(None, ge=0, description="The peer's optimizer epoch (swarm updates applied).")
    num_peers_seen: int | None = Field(None, ge=0, description="Training peers this peer sees (itself included).")
    averaging_rounds: int = Field(0, ge=0, description="Averaging rounds completed since start.")
    averaging_failures: int = Field(0, ge=0, description="Averaging rounds that failed since start.")
    last_averaging_error: str = Field("", max_length=256, description="The latest step's averaging error, if any.")
    publish_failures: int = Field(0, ge=0, description="DHT records this peer failed to publish since start.")
    baselines_source: Literal["unknown", "global", "local"] = Field("unknown", description=(
        "Which baselines the latest step shaped with: the coordinator's (global) or the peer's own EMA (local)."))
    balance_round: int | None = Field(None, ge=1, description="Round of the newest coordinator weights it holds.")
    deciles: dict[Literal["er", "erv", "era"], Deciles] = Field(default_factory=dict, description=(
        "Per-response distribution of ER, ERV and ERA in the latest step (indicators no response had are absent)."))


class WeightsClaimRecord(_Record):
    """[CLAIM] which weights a peer holds right after reaching an optimizer epoch (update or state download).

    Peers of one swarm must hold the same weights at the same epoch; comparing these claims is how
    a peer finds out that it does not (node.gossip.consensus)."""

    peer_id: str = Field(max_length=64, description="Fingerprint of the peer's signing key.")
    epoch: int = Field(ge=0, description="The peer's optimizer epoch (swarm updates applied).")
    fingerprint: tuple[float, ...] = Field(min_length=1, max_length=16, description=(
        "node.gossip.fingerprint.parameter_fingerprint of the weights at that epoch."))
    published_at: float = Field(description="DHT time of publication (seconds).")

    @field_validator("fingerprint", mode="before")
    @classmethod
    def _as_tuple(cls, values: Any) -> Any:
        return tuple(values) if isinstance(values, list) else values  # msgpack and JSON give lists


RecordT = TypeVar("RecordT", bound=_Record)


@dataclass
class FetchResult(Generic[RecordT]):
    """Valid records, plus (subkey, reason) for each record that was rejected."""

    records: list[RecordT] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    reachable: bool = True  # False when the DHT call itself failed or timed out


def expires_in(seconds: float) -> float:
    """Absolute DHT expiration time `seconds` from now (ValueError outside (0, MAX_RECORD_TTL])."""
    if not 0 < seconds <= MAX_RECORD_TTL:
        raise ValueError(f"record TTL must be in (0, {MAX_RECORD_TTL:.0f}] seconds, got {seconds}")
    return get_dht_time() + seconds


# ---------------------------------------------------------------- raw DHT calls, bounded in time

def _store(dht, key: str, subkey: bytes, value: dict, expiration_time: float, timeout: float) -> bool:
    if not get_dht_time() < expiration_time <= get_dht_time() + MAX_RECORD_TTL:
        raise ValueError(f"expiration_time must be in the future and within {MAX_RECORD_TTL:.0f} s "
                         f"(use plumbing.dht_records.expires_in(seconds))")
    future = dht.store(key, value, expiration_time, subkey=subkey, return_future=True)
    try:
        return bool(future.result(timeout=timeout))
    except Exception as err:  # a failed store is reported to the caller as False, never raised
        future.cancel()
        log.warning("storing %s failed: %s: %s", key, type(err).__name__, err)
        return False


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


def _reject(result: FetchResult, key: str, subkey: object, reason: str) -> None:
    name = describe_subkey(subkey)
    log.warning("rejected DHT record %s[%s]: %s", key, name, reason)
    result.rejected.append((name, reason))


def _validation_reason(err: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors()[:3]]
    return "invalid record: " + "; ".join(parts)


def _parse_owned(key: str, raw: dict, model: type[RecordT], run: str,
                 check: Callable[[RecordT, Any], str | None]) -> FetchResult[RecordT]:
    """Validate every subkey's value against `model`; `check(record, parsed_subkey)` returns a reason or None."""
    result: FetchResult[RecordT] = FetchResult()
    for subkey, value in raw.items():
        try:
            owned = parse_subkey(subkey)
            if not isinstance(value, dict):
                raise ValueError(f"value is {type(value).__name__}, not a record dict")
            record = model.model_validate(value)
        except ValidationError as err:
            _reject(result, key, subkey, _validation_reason(err))
            continue
        except ValueError as err:  # SchemaVersionError included: its message names both versions
            _reject(result, key, subkey, str(err))
            continue
        reason = f"record is for run {record.run!r}, not {run!r}" if record.run != run else check(record, owned)
        if reason is not None:
            _reject(result, key, subkey, reason)
        else:
            result.records.append(record)
    return result


def _fetch_owned(dht, key: str, model: type[RecordT], run: str, check: Callable[[RecordT, Any], str | None],
                 timeout: float) -> FetchResult[RecordT]:
    """Read `key` and validate every subkey's record (see _parse_owned); unreachable if the read failed."""
    raw = _get_dict(dht, key, timeout)
    if raw is None:
        return FetchResult(reachable=False)
    return _parse_owned(key, raw, model, run, check)


def _claims_owner(record, owned) -> str | None:
    if record.peer_id != owned.owner:
        return f"record claims peer {record.peer_id} but is signed by {owned.owner}"
    return None


# ---------------------------------------------------------------- meta-signals (peers write, coordinator reads)

def publish_meta_signal(dht, run: str, record: MetaSignalRecord, expiration_time: float, *,
                        identity: SigningIdentity, timeout: float = DHT_CALL_TIMEOUT) -> bool:
    """Store `record` under `<run>.meta_signals`, subkey `[owner:<identity>]#<step>`; True if stored.

    `dht` must run `build_record_validators(identity, run)` so hivemind signs the value.
    """
    if record.run != run or record.peer_id != identity.fingerprint:
        raise ValueError(f"record is for run {record.run!r} / peer {record.peer_id}, but publishing for run "
                         f"{run!r} as {identity.fingerprint}: build it with peer_id=identity.fingerprint")
    return _store(dht, meta_signals_key(run), identity.owner_subkey(record.step),
                  record.model_dump(mode="json"), expiration_time, timeout)


def _meta_signal_check(step: int | None):
    def check(record: MetaSignalRecord, owned) -> str | None:
        if owned.step is None or owned.step != record.step:
            return f"record says step {record.step} but its subkey says {owned.step}"
        if step is not None and record.step != step:
            return None  # filtered below, not a fault
        return _claims_owner(record, owned)
    return check


def fetch_meta_signals(dht, run: str, step: int | None = None, *,
                       timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[MetaSignalRecord]:
    """All live meta-signal records of `run` (only those of `step` if given), validated."""
    result = _fetch_owned(dht, meta_signals_key(run), MetaSignalRecord, run, _meta_signal_check(step), timeout)
    if step is not None:
        result.records = [r for r in result.records if r.step == step]
    result.records.sort(key=lambda r: (r.peer_id, r.step))
    return result


# ---------------------------------------------------------------- balance (coordinator writes, peers read)

def publish_balance(dht, run: str, record: BalanceRecord, expiration_time: float, *,
                    identity: SigningIdentity, timeout: float = DHT_CALL_TIMEOUT) -> bool:
    """Store the coordinator's `record` under `<run>.balance`, subkey `[owner:<coordinator key>]`."""
    if record.run != run or record.coordinator_key != identity.fingerprint:
        raise ValueError(f"balance record is for run {record.run!r} / key {record.coordinator_key}, but "
                         f"publishing for run {run!r} as {identity.fingerprint}")
    return _store(dht, balance_key(run), identity.owner_subkey(), record.model_dump(mode="json"),
                  expiration_time, timeout)


def fetch_balance_result(dht, run: str, trusted_key: str, *,
                         timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[BalanceRecord]:
    """Balance records under the trusted coordinator key (at most one), plus rejections."""
    key = balance_key(run)
    raw = _get_dict(dht, key, timeout)
    if raw is None:
        return FetchResult(reachable=False)
    trusted = {}
    for subkey, value in raw.items():
        try:
            if parse_subkey(subkey).owner == trusted_key:
                trusted[subkey] = value
        except ValueError:
            pass  # anybody may write their own subkey here; only the pinned key counts

    def check(record: BalanceRecord, owned) -> str | None:
        if record.coordinator_key != owned.owner:
            return f"record claims coordinator {record.coordinator_key} but is signed by {owned.owner}"
        return None
    return _parse_owned(key, trusted, BalanceRecord, run, check)


def fetch_balance(dht, run: str, trusted_key: str, *, timeout: float = DHT_CALL_TIMEOUT) -> BalanceRecord | None:
    """The latest balance record signed by the coordinator whose key fingerprint is `trusted_key`, else None."""
    if not trusted_key:
        raise ValueError("trusted_key is empty: pin the coordinator's key fingerprint "
                         "(printed at its start and shown by `rankswarm status`)")
    records = fetch_balance_result(dht, run, trusted_key, timeout=timeout).records
    return max(records, key=lambda r: r.round) if records else None


# ---------------------------------------------------------------- peer status (peers write, anyone reads)

def publish_peer_status(dht, run: str, record: PeerStatusRecord, expiration_time: float, *,
                        identity: SigningIdentity, timeout: float = DHT_CALL_TIMEOUT) -> bool:
    """Store `record` under `<run>.peer_status`, subkey `[owner:<identity>]`."""
    if record.run != run or record.peer_id != identity.fingerprint:
        raise ValueError(f"status is for run {record.run!r} / peer {record.peer_id}, but publishing for run "
                         f"{run!r} as {identity.fingerprint}")
    return _store(dht, peer_status_key(run), identity.owner_subkey(), record.model_dump(mode="json"),
                  expiration_time, timeout)


def fetch_peer_statuses(dht, run: str, *, timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[PeerStatusRecord]:
    """Every live, valid peer status of `run`."""
    def check(record: PeerStatusRecord, owned) -> str | None:
        if owned.step is not None:
            return "status subkeys carry no step"
        return _claims_owner(record, owned)
    return _fetch_owned(dht, peer_status_key(run), PeerStatusRecord, run, check, timeout)


# ---------------------------------------------------------------- weights claims (peers write, peers read)

def publish_weights_claim(dht, run: str, record: WeightsClaimRecord, expiration_time: float, *,
                          identity: SigningIdentity, timeout: float | None = DHT_CALL_TIMEOUT) -> bool | None:
    """Store `record` under `<run>.weights`, subkey `[owner:<identity>]#<epoch>`.

    `timeout=None` sends it without waiting (returns None): the training step does not wait for the DHT."""
    if record.run != run or record.peer_id != identity.fingerprint:
        raise ValueError(f"claim is for run {record.run!r} / peer {record.peer_id}, but publishing for run "
                         f"{run!r} as {identity.fingerprint}")
    if timeout is None:
        dht.store(weights_key(run), record.model_dump(mode="json"), expiration_time,
                  subkey=identity.owner_subkey(record.epoch), return_future=True)
        return None
    return _store(dht, weights_key(run), identity.owner_subkey(record.epoch), record.model_dump(mode="json"),
                  expiration_time, timeout)


def fetch_weights_claims(dht, run: str, *, timeout: float = DHT_CALL_TIMEOUT) -> FetchResult[WeightsClaimRecord]:
    """Every live, valid weights claim of `run` (all peers, all recent epochs)."""
    def check(record: WeightsClaimRecord, owned) -> str | None:
        if owned.step is None or owned.step != record.epoch:
            return f"claim says epoch {record.epoch} but its subkey says {owned.step}"
        return _claims_owner(record, owned)
    return _fetch_owned(dht, weights_key(run), WeightsClaimRecord, run, check, timeout)


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


def poll_meta_signals(dht, run: str, *, min_peers: int, deadline: float, step: int | None = None,
                      **backoff) -> PollResult[MetaSignalRecord]:
    """Poll until records from at least `min_peers` distinct peers are visible (or the deadline)."""
    return poll(lambda: fetch_meta_signals(dht, run, step),
                lambda res: len({r.peer_id for r in res.records}) >= min_peers, deadline=deadline, **backoff)


def poll_balance(dht, run: str, trusted_key: str, *, deadline: float, after_round: int = 0,
                 **backoff) -> PollResult[BalanceRecord]:
    """Poll until a trusted balance record of a round after `after_round` is visible (or the deadline)."""
    return poll(lambda: fetch_balance_result(dht, run, trusted_key),
                lambda res: any(r.round > after_round for r in res.records), deadline=deadline, **backoff)
