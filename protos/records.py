"""The one place a record is checked: validate, encode and decode the messages of `swarm.proto`.

    from protos import records, swarm_pb2
    status = records.build(swarm_pb2.PeerStatus, run_id="r1", peer_id=key, reported_at=now)
    data = records.encode(status)                          # validated, deterministic bytes
    again = records.decode(swarm_pb2.PeerStatus, data)     # parsed and validated, or RecordError

The rules live in swarm.proto as options (`[(rule) = {min: 0, max: 1}]`, `option (record) =
...`; the [VALIDATE] step there lists them) and `validate` reads them from the descriptors, so a
new field gets checked by declaring it. On top of the declared rules every double must be finite,
every enum value defined (unless `open_enum`), every string at most DEFAULT_MAX_LEN characters,
and no field may be one this schema does not know (a sender that adds fields raises its
schema_version, which is refused with both versions named). Submessages and repeated items are
checked too; statistics get shaping's own semantic checks (`INVARIANTS`). A violation raises
`RecordError` (a ValueError) naming the field path and the rule; a newer schema raises its
subclass `SchemaVersionError`.

The rules are read from the descriptors rather than checked by buf's protovalidate, which would
bring its own .proto imports and a CEL runtime for what a walk over eleven rule kinds does here.

Messages are treated as immutable once built: `replace` returns a changed copy. `get` reads a
field with presence (proto3 `optional`, submessages) as None when unset. The small conversions
between the statistics records and shaping's domain types (`stats_of`, `stats_message`,
`baselines_of`, `baselines_message`) live here too: they are how shaping's checks are applied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from google.protobuf import descriptor, unknown_fields
from google.protobuf import message as pb_message

from protos import RUN_ID_PATTERN, swarm_pb2
from shaping import INDICATORS, Baselines, IndicatorStats

M = TypeVar("M", bound=pb_message.Message)

DEFAULT_MAX_LEN = 4096  # characters of a string field that declares no max_len
# Bytes of one record read from the DHT or the history store. Protobuf keeps records small on the
# wire: a MetaSignal is ~140 bytes, a BalanceWeights ~270, a schema-2 PeerStatus with one deciles
# ~320, where the msgpack dicts of the former format (field names in every record) took 239, 456
# and 669 bytes (tests/protos/test_records.py measures both on the same records).
MAX_RECORD_BYTES = 64 * 1024

_FieldDescriptor = descriptor.FieldDescriptor


class RecordError(ValueError):
    """A message that breaks a rule of swarm.proto; `path` names the field, `rule` the rule."""

    def __init__(self, path: str, rule: str, problem: str):
        super().__init__(f"{path}: {problem} (rule {rule})")
        self.path, self.rule = path, rule


class SchemaVersionError(RecordError):
    """A message of a newer schema than this process understands (both versions are named)."""


# ---------------------------------------------------------------- the rules, read once per message type

@dataclass(frozen=True)
class _Field:
    name: str
    kind: str            # "float", "int", "bool", "string", "bytes", "enum" or "message"
    repeated: bool
    presence: bool       # proto3 `optional` or a submessage: unset is distinguishable from the default
    rule: swarm_pb2.FieldRule
    enum: descriptor.EnumDescriptor | None


@dataclass(frozen=True)
class _Plan:
    name: str
    latest_schema: int   # 0: the message carries no schema_version
    invariant: str
    fields: tuple[_Field, ...]


_KINDS = {_FieldDescriptor.CPPTYPE_DOUBLE: "float", _FieldDescriptor.CPPTYPE_FLOAT: "float",
          _FieldDescriptor.CPPTYPE_INT32: "int", _FieldDescriptor.CPPTYPE_INT64: "int",
          _FieldDescriptor.CPPTYPE_UINT32: "int", _FieldDescriptor.CPPTYPE_UINT64: "int",
          _FieldDescriptor.CPPTYPE_BOOL: "bool", _FieldDescriptor.CPPTYPE_ENUM: "enum",
          _FieldDescriptor.CPPTYPE_MESSAGE: "message"}


def _kind(field: descriptor.FieldDescriptor) -> str:
    if field.cpp_type == _FieldDescriptor.CPPTYPE_STRING:
        return "bytes" if field.type == _FieldDescriptor.TYPE_BYTES else "string"
    return _KINDS[field.cpp_type]


@cache
def _plan(message_descriptor: descriptor.Descriptor) -> _Plan:
    record = message_descriptor.GetOptions().Extensions[swarm_pb2.record]
    fields = []
    for field in message_descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            raise NotImplementedError(f"{field.full_name}: map fields are not validated; use a repeated message")
        fields.append(_Field(field.name, _kind(field), field.is_repeated, field.has_presence,
                             field.GetOptions().Extensions[swarm_pb2.rule], field.enum_type))
    return _Plan(message_descriptor.name, record.latest_schema, record.invariant, tuple(fields))


def latest_schema(message_type: type[pb_message.Message]) -> int:
    """The newest schema_version of `message_type` this process reads and writes (0: unversioned)."""
    return _plan(message_type.DESCRIPTOR).latest_schema


# ---------------------------------------------------------------- validation

def validate(message: M) -> M:
    """Return `message` if it keeps every rule of swarm.proto, else raise RecordError (see the module doc)."""
    _check_message(message, type(message).DESCRIPTOR.name)
    return message


def _check_message(message: pb_message.Message, path: str) -> None:
    plan = _plan(message.DESCRIPTOR)
    version = _check_version(message, plan, path) if plan.latest_schema else None
    unknown = unknown_fields.UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({item.field_number for item in unknown})
        raise RecordError(path, "known_fields", f"has field number(s) {numbers} that this schema does not define "
                                                f"(a sender that adds fields must raise schema_version)")
    for field in plan.fields:
        _check_field(message, field, f"{path}.{field.name}", version)
    if plan.invariant:
        try:
            INVARIANTS[plan.invariant](message)
        except ValueError as err:
            raise RecordError(path, plan.invariant, str(err)) from None


def _check_version(message: pb_message.Message, plan: _Plan, path: str) -> int:
    version, latest = message.schema_version, plan.latest_schema
    what = path if path == plan.name else f"{path} ({plan.name})"
    if version == 0:
        raise RecordError(f"{path}.schema_version", "schema_version",
                          f"{what} has no schema_version; the sender must set schema_version={latest}")
    if version > latest:
        raise SchemaVersionError(f"{path}.schema_version", "schema_version",
                                 f"{what} has schema_version {version}, newer than the {latest} this rankswarm "
                                 f"reads: upgrade the receiving side, or send schema_version {latest}")
    return version


def _check_field(message: pb_message.Message, field: _Field, path: str, version: int | None) -> None:
    rule = field.rule
    if field.repeated:
        values = getattr(message, field.name)
        if len(values) < rule.min_items or (rule.max_items and len(values) > rule.max_items):
            bounds = f"{rule.min_items}..{rule.max_items or 'any'}"
            raise RecordError(path, "min_items" if len(values) < rule.min_items else "max_items",
                              f"has {len(values)} items, allowed {bounds}")
        if values and version is not None and rule.since > version:
            raise _too_new(path, rule.since, version)
        for index, value in enumerate(values):
            _check_value(field, value, f"{path}[{index}]")
        if rule.non_decreasing and any(b < a for a, b in zip(values, values[1:])):
            raise RecordError(path, "non_decreasing", f"{list(values)} is not non-decreasing")
        return
    if field.presence and not message.HasField(field.name):
        if rule.required:
            raise RecordError(path, "required", "is not set")
        return
    value = getattr(message, field.name)
    if version is not None and rule.since > version and (field.presence or value != _zero(field)):
        raise _too_new(path, rule.since, version)
    _check_value(field, value, path)


def _zero(field: _Field) -> Any:
    return {"float": 0.0, "int": 0, "bool": False, "string": "", "bytes": b"", "enum": 0}[field.kind]


def _too_new(path: str, since: int, version: int) -> RecordError:
    return RecordError(path, "since",
                       f"is set, but it exists since schema {since} and the record says schema {version}")


def _check_value(field: _Field, value: Any, path: str) -> None:
    rule, kind = field.rule, field.kind
    if kind == "message":
        _check_message(value, path)
    elif kind in ("float", "int"):
        if kind == "float" and not math.isfinite(value):
            raise RecordError(path, "finite", f"is {value}, not a finite number")
        if rule.HasField("min") and value < rule.min:
            raise RecordError(path, "min", f"is {value}, below the minimum {rule.min:g}")
        if rule.HasField("max") and value > rule.max:
            raise RecordError(path, "max", f"is {value}, above the maximum {rule.max:g}")
    elif kind in ("string", "bytes"):
        limit = rule.max_len or DEFAULT_MAX_LEN
        if len(value) > limit:
            raise RecordError(path, "max_len", f"has {len(value)} characters, at most {limit} allowed")
        if rule.run_id and not RUN_ID_PATTERN.match(value):
            raise RecordError(path, "run_id", f"{value!r} is not a run id: 1-64 characters from A-Z a-z 0-9 _ -")
        if rule.allowed and value not in rule.allowed:
            raise RecordError(path, "allowed", f"{value!r} is not one of {list(rule.allowed)}")
    elif kind == "enum" and not rule.open_enum and field.enum.values_by_number.get(value) is None:
        raise RecordError(path, "enum", f"{value} is not a {field.enum.name} value this schema defines "
                                        f"(from a newer sender?)")


# ---------------------------------------------------------------- bytes in and out

def encode(message: pb_message.Message) -> bytes:
    """The validated message as deterministic protobuf bytes (what the DHT and the history store keep)."""
    return validate(message).SerializeToString(deterministic=True)


def decode(message_type: type[M], data: Any, *, max_bytes: int = MAX_RECORD_BYTES) -> M:
    """Parse and validate bytes from another process; RecordError says what is wrong, never another error."""
    name = message_type.DESCRIPTOR.name
    if not isinstance(data, bytes):
        raise RecordError(name, "bytes", f"value is a {type(data).__name__}, not {name} protobuf bytes"
                                         + (" (a msgpack dict: a record of a rankswarm from before protobuf "
                                            "records; upgrade its writer)" if isinstance(data, dict) else ""))
    if len(data) > max_bytes:
        raise RecordError(name, "max_bytes", f"is {len(data)} bytes, at most {max_bytes} allowed")
    try:
        message = message_type.FromString(data)
    except pb_message.DecodeError as err:
        raise RecordError(name, "wire_format", f"bytes are not a {name} message ({err})") from None
    return validate(message)


# ---------------------------------------------------------------- building and reading messages

def build(message_type: type[M], /, **fields: Any) -> M:
    """A validated message; schema_version defaults to the latest, and a field given as None stays unset."""
    fields = {name: value for name, value in fields.items() if value is not None}
    latest = latest_schema(message_type)
    if latest:
        fields.setdefault("schema_version", latest)
    try:
        message = message_type(**fields)
    except (TypeError, ValueError) as err:  # a wrong type or an unknown field name: a bug or bad input
        raise RecordError(message_type.DESCRIPTOR.name, "types", str(err)) from None
    return validate(message)


def get(message: pb_message.Message, name: str, default: Any = None) -> Any:
    """The field's value; `default` (None) when the field has presence and is unset."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.has_presence and not message.HasField(name):
        return default
    return getattr(message, name)


def replace(original: M, /, **changes: Any) -> M:
    """A copy of `original` with `changes` applied (None clears a field); the original is untouched."""
    copy = type(original)()
    copy.CopyFrom(original)
    for name, value in changes.items():
        if value is None:
            copy.ClearField(name)
        elif isinstance(value, pb_message.Message):
            getattr(copy, name).CopyFrom(value)
        elif copy.DESCRIPTOR.fields_by_name[name].is_repeated:
            del getattr(copy, name)[:]
            getattr(copy, name).extend(value)
        else:
            setattr(copy, name, value)
    return copy


def _enum_prefix(enum: descriptor.EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"  # PeerHealth -> PEER_HEALTH_


def label(enum_type: Any, value: int) -> str:
    """Lower-case name of an enum value without the enum's prefix (PEER_HEALTH_ONLINE -> "online");
    "" for the unspecified value 0 and for values this schema does not define."""
    enum = enum_type.DESCRIPTOR
    found = enum.values_by_number.get(value)
    if found is None or value == 0:
        return ""
    return found.name.removeprefix(_enum_prefix(enum)).lower()


def labels(enum_type: Any) -> tuple[str, ...]:
    """The labels of every value but the unspecified one, in number order."""
    return tuple(label(enum_type, v.number) for v in enum_type.DESCRIPTOR.values if v.number != 0)


def value_of(enum_type: Any, name: str) -> int:
    """The enum value whose label is `name` ("" -> 0); ValueError naming the labels otherwise."""
    if not name:
        return 0
    for v in enum_type.DESCRIPTOR.values:
        if v.number and label(enum_type, v.number) == name:
            return v.number
    raise ValueError(f"{name!r} is not one of {labels(enum_type)}")


# ---------------------------------------------------------------- shaping's domain types

def stats_message(stats: IndicatorStats) -> swarm_pb2.SignalStats:
    moments = {name: swarm_pb2.IndicatorMoments(count=m.count, sum=m.sum, sumsq=m.sumsq)
               for name, m in stats.moments.items()}
    return swarm_pb2.SignalStats(gate_sum=stats.gate_sum, gate_count=stats.gate_count, **moments)


def stats_of(message: swarm_pb2.SignalStats) -> IndicatorStats:
    """IndicatorStats of the message; ValueError if the moments are inconsistent or gates leave [0, 1]."""
    moments = {name: [getattr(message, name).count, getattr(message, name).sum, getattr(message, name).sumsq]
               for name in INDICATORS}
    return IndicatorStats.from_dict({"moments": moments, "gate_sum": message.gate_sum,
                                     "gate_count": message.gate_count})


def baselines_message(baselines: Baselines) -> swarm_pb2.Baselines:
    """The exact EMA state, plus the derived m_k values (unset before a batch held indicator k)."""
    states = {f"{name}_state": swarm_pb2.EmaState(raw=baselines.raw[name], updates=baselines.updates[name])
              for name in INDICATORS}
    return swarm_pb2.Baselines(ready=baselines.ready, alpha=baselines.alpha, bias_corrected=baselines.corrected,
                               **states, **baselines.values())


def baselines_of(message: swarm_pb2.Baselines) -> Baselines:
    """The exact baselines from the EMA states (the m_k fields are derived, for display); ValueError if bad."""
    states = {name: getattr(message, f"{name}_state") for name in INDICATORS}
    return Baselines.from_dict({"raw": {k: s.raw for k, s in states.items()},
                                "updates": {k: s.updates for k, s in states.items()},
                                "alpha": message.alpha, "corrected": message.bias_corrected})


# semantic checks named by `option (record).invariant` in swarm.proto; each raises ValueError
INVARIANTS: dict[str, Callable[[Any], Any]] = {"signal_stats": stats_of, "baselines": baselines_of}
