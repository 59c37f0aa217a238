"""The contract's rules for an event, checked before anything is written.

A batch is all or nothing: the first broken rule rejects it with an error that
names the event's index in the request, the field, and the rule or limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .errors import LimitExceededError, ValidationError
from .event import Event, Outcome
from .options import Options
from .ulid import ID_PATTERN

TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
TYPE_MAX = 64
ID_FIELD_MAX = 128
REASON_MAX = 1024
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
PRICE_PATTERN = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
PRICE_MAX = 32
FIELD_NAME_MAX = 256
MAX_DEPTH = 32
U32_MAX = 2**32 - 1
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
JSON_INT_MAX = 2**63 - 1
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
"""Not in an id: they break CSV exports and terminal output of everything that shows one."""
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
    if not _plain_fields_valid(event):
        _explain_plain_fields(index, event)
    _json_object(index, "details", event.details, options.max_details_bytes)
    return _json_object(index, "lead", event.lead, options.max_snapshot_bytes)


# Types and accounts repeat across millions of events: one pattern match each
# is enough. Bounded, so a stream of random names cannot grow it forever.
_KNOWN_TYPES: set[str] = set()
_KNOWN_ACCOUNTS: set[str] = set()
_KNOWN_MAX = 10_000


def _known(cache: set[str], pattern: re.Pattern[str], value: object, high: int) -> bool:
    if value in cache:
        return True
    if type(value) is not str or not 0 < len(value) <= high or not pattern.fullmatch(value):
        return False
    if len(cache) < _KNOWN_MAX:
        cache.add(value)
    return True


_CONTROL_SEARCH = CONTROL_CHARACTERS.search


def _no_control_characters(text: str) -> bool:
    # Control characters are not printable, so a printable text has none: one C
    # loop over the text, a tenth of the regular expression's search. Other
    # unprintable characters (non-ASCII separators) are allowed: the search decides.
    return text.isprintable() or _CONTROL_SEARCH(text) is None


def _plain_fields_valid(event: Event) -> bool:
    """Every field but ``details`` and ``lead`` obeys the contract (the hot path: no messages)."""
    ts, price = event.timestamp_ms, event.price
    return (
        (not event.id or (type(event.id) is str and ID_PATTERN.fullmatch(event.id) is not None))
        and _known(_KNOWN_TYPES, TYPE_PATTERN, event.type, TYPE_MAX)
        and type(event.lead_id) is str
        and 0 < len(event.lead_id) <= ID_FIELD_MAX
        and type(event.flow_id) is str
        and 0 < len(event.flow_id) <= ID_FIELD_MAX
        and type(event.entity_id) is str
        and len(event.entity_id) <= ID_FIELD_MAX
        and _no_control_characters(event.lead_id)
        and _no_control_characters(event.flow_id)
        and (not event.entity_id or _no_control_characters(event.entity_id))
        and type(event.integration) is str
        and len(event.integration) <= ID_FIELD_MAX
        and type(event.reason) is str
        and len(event.reason) <= REASON_MAX
        and _known(_KNOWN_ACCOUNTS, ACCOUNT_PATTERN, event.account_id, 64)
        and (ts is None or (type(ts) is int and 0 <= ts <= MAX_TIMESTAMP_MS))
        and type(event.outcome) is Outcome
        and type(event.duration_ms) is int
        and 0 <= event.duration_ms <= U32_MAX
        and type(event.response_code) is int
        and 0 <= event.response_code <= U32_MAX
        and (
            price == ""
            or (type(price) is str and len(price) <= PRICE_MAX and PRICE_PATTERN.fullmatch(price) is not None)
        )
    )


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
    def fail(field: str, rule: str) -> ValidationError:
        return ValidationError(index, field, rule)

    if not isinstance(value, Mapping):
        raise fail(field, f"must be an object of field names to JSON values, got {type(value).__name__}")
    # The common case is a flat map of strings, numbers and booleans: check
    # those inline and hand anything nested to the recursive check.
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
