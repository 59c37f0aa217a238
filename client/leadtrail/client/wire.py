"""The converters between ``leadtrail.v1`` messages and plain Python values, kept once.

Both sides of the wire use them: the SDK (whose value types are in ``_model``) and
the server (whose values are the storage engine's). Nothing here knows either
model, so the SDK still imports with only grpcio and protobuf installed, and the
server imports this public module instead of an SDK-private one.

A ``Struct`` carries every number as a double, so whole numbers that a double
holds exactly come back as ``int``: a producer's ``"score": 71`` is stored and
returned as 71, not 71.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from google.protobuf import struct_pb2, timestamp_pb2

from leadtrail.v1 import admin_pb2, event_pb2

__all__ = [
    "OUTCOME_WIRE_PREFIX",
    "dict_to_struct",
    "field_policy_to_proto",
    "from_timestamp",
    "iso_ms",
    "ms_to_timestamp",
    "outcome_name",
    "plain_decimal",
    "python_to_value",
    "retention_policy_to_proto",
    "struct_to_dict",
    "timestamp_to_ms",
    "to_timestamp",
    "value_to_python",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# Doubles hold every integer up to 2**53 exactly; beyond it a "whole" double is
# only an approximation, so it stays a float.
_EXACT_INT_LIMIT = 2**53


# -- times -----------------------------------------------------------------------------------------


def timestamp_to_ms(ts: timestamp_pb2.Timestamp) -> int:
    # Millisecond precision: finer digits are cut, as API.md fixes the unit.
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def ms_to_timestamp(ms: int, out: timestamp_pb2.Timestamp) -> None:
    out.seconds, rest = divmod(ms, 1000)
    out.nanos = rest * 1_000_000


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp for an aware datetime, truncated to the store's millisecond precision."""
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive datetime is ambiguous (local time? UTC?); guessing corrupts the audit trail.
        raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware datetime")
    ms = (value - _EPOCH) // _MILLISECOND
    return timestamp_pb2.Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def from_timestamp(value: timestamp_pb2.Timestamp) -> datetime:
    # Integer arithmetic: float seconds would round some milliseconds.
    return _EPOCH + timedelta(milliseconds=timestamp_to_ms(value))


def iso_ms(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2026-11-28T10:15:00.123Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# -- money and outcomes ----------------------------------------------------------------------------


def plain_decimal(value: Decimal | int) -> str:
    """A decimal as a plain string: never an exponent (``1E+2`` is ``100``)."""
    text = format(value, "f")
    return text if text != "-0" else "0"


OUTCOME_WIRE_PREFIX = "OUTCOME_"


def outcome_name(value: int) -> str:
    """The short name every human and JSON output spells an outcome with (``SUCCESS``);
    the enum's wire name (``OUTCOME_SUCCESS``) stays on the wire only."""
    try:
        wire = event_pb2.Outcome.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return str(value)  # a number a newer peer knows and this one does not
    return wire.removeprefix(OUTCOME_WIRE_PREFIX)


# -- JSON values (google.protobuf.Struct / Value) --------------------------------------------------


class _NotJson(TypeError):
    """Raised deep in a value, given its path on the way out (no path built when all is well)."""

    def __init__(self, problem: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(problem)
        self.problem, self.path = problem, path

    def within(self, step: str) -> _NotJson:
        return _NotJson(self.problem, (step, *self.path))

    def described(self, root: str) -> TypeError:
        return TypeError(f"{root}{''.join(self.path)}: {self.problem}")


def _fill(item: Any, out: struct_pb2.Value) -> None:
    if item is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(item, bool):
        out.bool_value = item
    elif isinstance(item, int | float):
        out.number_value = item
    elif isinstance(item, str):
        out.string_value = item
    elif isinstance(item, Mapping):
        out.struct_value.SetInParent()
        _fill_struct(item, out.struct_value)
    elif isinstance(item, list | tuple):
        out.list_value.SetInParent()
        for index, element in enumerate(item):
            try:
                _fill(element, out.list_value.values.add())
            except _NotJson as e:
                raise e.within(f"[{index}]") from None
    else:
        raise _NotJson(
            f"{type(item).__name__} is not a JSON value (use str, number, bool, None, dict or list)"
        )


def _fill_struct(data: Mapping[Any, Any], out: struct_pb2.Struct) -> None:
    for key, item in data.items():
        if not isinstance(key, str):
            raise _NotJson(f"key {key!r} is not a string")
        try:
            _fill(item, out.fields[key])
        except _NotJson as e:
            raise e.within(f".{key}") from None


def python_to_value(item: Any, out: struct_pb2.Value, name: str = "value") -> None:
    """Fill ``out`` with a JSON value; anything else is a TypeError naming its path from
    ``name`` (e.g. ``details.a[1]``)."""
    try:
        _fill(item, out)
    except _NotJson as e:
        raise e.described(name) from None


def dict_to_struct(data: Mapping[str, Any], out: struct_pb2.Struct, name: str = "value") -> None:
    try:
        _fill_struct(data, out)
    except _NotJson as e:
        raise e.described(name) from None


def value_to_python(value: struct_pb2.Value) -> Any:
    """The Python value of a Value; an unset Value is None, like a JSON null."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        # Struct has only doubles: give back the int a JSON reader would see for "3".
        if number.is_integer() and -_EXACT_INT_LIMIT <= number <= _EXACT_INT_LIMIT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(v) for v in value.list_value.values]
    return None  # null_value, or a Value with nothing set


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    # The hot path of every append: snapshots are flat maps of scalars, so
    # scalars are unpacked inline (no call per field, no ItemsView).
    out: dict[str, Any] = {}
    fields = struct.fields
    for key in fields:
        value = fields[key]
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            out[key] = value.string_value
        elif kind == "number_value":
            number = value.number_value
            exact = number.is_integer() and -_EXACT_INT_LIMIT <= number <= _EXACT_INT_LIMIT
            out[key] = int(number) if exact else number
        elif kind == "bool_value":
            out[key] = value.bool_value
        else:
            out[key] = value_to_python(value)
    return out


# -- policies --------------------------------------------------------------------------------------
# The SDK's and the engine's policy types share their field names: one converter serves both.


class FieldPolicyValues(Protocol):
    @property
    def account_id(self) -> str: ...
    @property
    def secret(self) -> tuple[str, ...]: ...
    @property
    def pii(self) -> tuple[str, ...]: ...
    @property
    def plain(self) -> tuple[str, ...]: ...


class RetentionPolicyValues(Protocol):
    @property
    def account_id(self) -> str: ...
    @property
    def max_age_days(self) -> int: ...
    @property
    def legal_hold(self) -> bool: ...
    @property
    def pii_max_age_days(self) -> int: ...
    @property
    def secret_max_age_days(self) -> int: ...
    @property
    def max_age_seconds(self) -> int: ...


def field_policy_to_proto(policy: FieldPolicyValues) -> admin_pb2.FieldPolicy:
    return admin_pb2.FieldPolicy(
        account_id=policy.account_id,
        secret_fields=policy.secret,
        pii_fields=policy.pii,
        plain_fields=policy.plain,
    )


def retention_policy_to_proto(policy: RetentionPolicyValues) -> admin_pb2.RetentionPolicy:
    return admin_pb2.RetentionPolicy(
        account_id=policy.account_id,
        max_age_days=policy.max_age_days,
        legal_hold=policy.legal_hold,
        pii_max_age_days=policy.pii_max_age_days,
        secret_max_age_days=policy.secret_max_age_days,
        max_age_seconds=policy.max_age_seconds,
    )
