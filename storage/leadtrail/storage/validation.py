"""The contract's rules for an event, checked before anything is written.

A batch is all or nothing: the first broken rule rejects it with an error that
names the event's index in the request, the field, and the rule or limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from . import ingest
from .errors import LimitExceededError, ValidationError
from .event import Event, Outcome
from .ingest import (
    ACCOUNT_PATTERN,
    CONTROL_CHARACTERS,
    FIELD_NAME_MAX,
    ID_FIELD_MAX,
    JSON_INT_MAX,
    MAX_DEPTH,
    MAX_TIMESTAMP_MS,
    PRICE_MAX,
    PRICE_PATTERN,
    REASON_MAX,
    TYPE_MAX,
    TYPE_PATTERN,
    U32_MAX,
)
from .options import Options
from .ulid import ID_PATTERN

NO_CONTROL_CHARACTERS = "must not contain control characters"


def validate_batch(events: Sequence[Event], options: Options) -> list[bytes]:
    """Check every event; return each one's snapshot as JSON (what the encoder stores)."""
    if len(events) > options.max_events_per_append:
        raise LimitExceededError(
            None,
            "events",
            f"{len(events)} events in one request; the limit is {options.max_events_per_append}",
        )
    return [validate_event(index, event, options) for index, event in enumerate(events)]


def validate_event(index: int, event: Event, options: Options) -> bytes:
    """Check one event; return its snapshot as JSON."""
    if not isinstance(event, Event):
        raise ValidationError(index, "event", f"expected an Event, got {type(event).__name__}")
    # The checks of ``ingest`` say only yes or no. A no from the compiled twin may be
    # over-cautious (it leaves unusual types to the pure one), so the pure twin decides
    # before a rule is explained; an event the pure twin accepts is accepted.
    if not (ingest.plain_fields_ok(event) or ingest.pure_plain_fields_ok(event)):
        _explain_plain_fields(index, event)
    _json_object(index, "details", event.details, options.max_details_bytes)
    return _json_object(index, "lead", event.lead, options.max_snapshot_bytes)


def _explain_plain_fields(index: int, event: Event) -> None:
    """Raise the error naming the first broken rule among the plain fields."""

    def fail(field: str, rule: str) -> ValidationError:
        return ValidationError(index, field, rule)

    if event.id and isinstance(event.id, str) and CONTROL_CHARACTERS.search(event.id):
        raise fail("id", NO_CONTROL_CHARACTERS)
    if event.id and (not isinstance(event.id, str) or not ID_PATTERN.fullmatch(event.id)):
        raise fail("id", f"{event.id!r} is not 'evt_' followed by a 26-character ULID")
    _text(fail, "type", event.type, 1, TYPE_MAX)
    if not TYPE_PATTERN.fullmatch(event.type):
        raise fail("type", f"{event.type!r} must match <category>.<action> ({TYPE_PATTERN.pattern})")
    for id_field, text, low in (
        ("lead_id", event.lead_id, 1),
        ("flow_id", event.flow_id, 1),
        ("entity_id", event.entity_id, 0),
    ):
        _text(fail, id_field, text, low, ID_FIELD_MAX)
        if CONTROL_CHARACTERS.search(text):
            raise fail(id_field, NO_CONTROL_CHARACTERS)
    _text(fail, "integration", event.integration, 0, ID_FIELD_MAX)
    _text(fail, "reason", event.reason, 0, REASON_MAX)
    if not isinstance(event.account_id, str) or not ACCOUNT_PATTERN.fullmatch(event.account_id):
        raise fail("account_id", f"{event.account_id!r} must be 1..64 characters of [A-Za-z0-9_.-]")
    ts = event.timestamp_ms
    if ts is not None and (not _is_int(ts) or not 0 <= ts <= MAX_TIMESTAMP_MS):
        raise fail("timestamp", f"{ts!r} must be UTC milliseconds in 0..{MAX_TIMESTAMP_MS}")
    if not isinstance(event.outcome, Outcome):
        try:
            Outcome(event.outcome)
        except (ValueError, TypeError):
            raise fail("outcome", f"{event.outcome!r} is not an Outcome (0..4)") from None
        raise fail("outcome", f"{event.outcome!r} must be given as an Outcome member")
    for name, value in (("duration_ms", event.duration_ms), ("response_code", event.response_code)):
        if not _is_int(value) or not 0 <= value <= U32_MAX:
            raise fail(name, f"{value!r} must be an integer in 0..{U32_MAX}")
    price = event.price
    bad_price = (
        isinstance(price, str) and price and (len(price) > PRICE_MAX or not PRICE_PATTERN.fullmatch(price))
    )
    if not isinstance(price, str) or bad_price:
        raise fail(
            "price",
            f"{price!r} must be a plain decimal string like '25.00' or '-3.5' "
            f"(no exponent, at most {PRICE_MAX} characters)",
        )
    raise fail("event", "breaks a rule of the contract")  # the fast check and this one disagree


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(fail: Any, field: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, str):
        raise fail(field, f"must be a string, got {type(value).__name__}")
    if not low <= len(value) <= high:
        if low and not value:
            raise fail(field, "is required")
        raise fail(field, f"is {len(value)} characters; allowed {low}..{high}")


def _json_object(index: int, field: str, value: object, limit: int) -> bytes:
    if not (ingest.json_object_ok(value) or ingest.pure_json_object_ok(value)):
        _explain_json_object(index, field, value)
    data = orjson.dumps(value)
    if len(data) > limit:
        raise LimitExceededError(index, field, f"is {len(data)} bytes as JSON; the limit is {limit} bytes")
    # orjson's result keeps its whole output buffer (16 KiB at least, whatever
    # the JSON's length); this one lives until the batch is written, so keep an
    # exact copy: a batch of 1,000 would otherwise hold 16 MB instead of 1.5.
    return bytes(memoryview(data))


def _json_value(fail: Any, field: str, value: object, depth: int) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if not -JSON_INT_MAX - 1 <= value <= JSON_INT_MAX:
            raise fail(field, f"integer {value} is outside the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail(field, f"{value!r} is not a finite number (JSON has no NaN or Infinity)")
        return
    if depth >= MAX_DEPTH:
        raise fail(field, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise fail(field, f"nested field name {key!r} must be a string")
            _json_value(fail, f"{field}.{key}", item, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _json_value(fail, f"{field}[{i}]", item, depth + 1)
        return
    raise fail(field, f"{type(value).__name__} is not a JSON value")


def _explain_json_object(index: int, field: str, value: object) -> None:
    """Raise the error naming the first broken rule of a ``details`` or ``lead`` object."""

    def fail(field: str, rule: str) -> ValidationError:
        return ValidationError(index, field, rule)

    if not isinstance(value, Mapping):
        raise fail(field, f"must be an object of field names to JSON values, got {type(value).__name__}")
    for key, item in value.items():
        if type(key) is not str or not 0 < len(key) <= FIELD_NAME_MAX:
            raise fail(field, f"field name {key!r} must be a string of 1..{FIELD_NAME_MAX} characters")
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int and -JSON_INT_MAX - 1 <= item <= JSON_INT_MAX:
            continue
        if kind is float:
            if item - item != 0.0:  # NaN and infinities only
                raise fail(f"{field}.{key}", f"{item!r} is not a finite number (JSON has no NaN or Infinity)")
            continue
        _json_value(fail, f"{field}.{key}", item, 1)
    raise fail(field, "breaks a rule of the contract")  # the fast check and this one disagree


# The contract's limits stay importable from here, where they have always been.
__all__ = [
    "ACCOUNT_PATTERN",
    "CONTROL_CHARACTERS",
    "FIELD_NAME_MAX",
    "ID_FIELD_MAX",
    "ID_PATTERN",
    "JSON_INT_MAX",
    "MAX_DEPTH",
    "MAX_TIMESTAMP_MS",
    "NO_CONTROL_CHARACTERS",
    "PRICE_MAX",
    "PRICE_PATTERN",
    "REASON_MAX",
    "TYPE_MAX",
    "TYPE_PATTERN",
    "U32_MAX",
    "validate_batch",
    "validate_event",
]
