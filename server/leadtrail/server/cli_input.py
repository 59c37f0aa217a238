"""What the operator types or pipes in, turned into SDK values.

Events arrive as JSON lines with the field names of the public contract
(API.md), so that the output of ``query --format jsonl`` or ``export`` can be
appended again: the output-only fields it carries (``position``,
``recorded_at``, ``account_id``) are accepted and ignored, because the server
assigns them. Every problem is a ``ValueError`` whose message names the field,
so the caller only has to add the line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from leadtrail.client import Event, Outcome

_STRING_FIELDS = ("type", "lead_id", "flow_id", "id", "entity_id", "reason", "integration")
_COUNT_FIELDS = ("duration_ms", "response_code")
_OBJECT_FIELDS = ("details", "lead")
_OUTPUT_ONLY = ("position", "recorded_at", "account_id")
_KNOWN = {*_STRING_FIELDS, *_COUNT_FIELDS, *_OBJECT_FIELDS, *_OUTPUT_ONLY, "timestamp", "outcome", "price"}
_UINT32_MAX = 2**32 - 1
_DIGITS = re.compile(r"^-?[0-9]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_RELATIVE = re.compile(r"^(\d+)\s*(s|m|min|h|d|w)(?:\s+ago)?$")


def parse_time(value: str | int, *, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2024-01-15T14:30:45.123Z``), a date (midnight UTC), UTC milliseconds,
    or a time relative to ``now``: ``now``, ``today``, ``yesterday`` (midnight UTC) or
    a span ago (``90s``, ``15m``, ``2h``, ``3d``, ``1w``, also ``2h ago``).

    A time without an offset is taken as UTC: the store keeps nothing else.
    """
    if isinstance(value, int) or _DIGITS.match(value):
        try:
            return _EPOCH + timedelta(milliseconds=int(value))
        except OverflowError:
            raise ValueError(f"{value}: milliseconds out of range") from None
    relative = _relative(value.strip().lower(), now or datetime.now(UTC))
    if relative is not None:
        return relative
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r}: expected RFC 3339 (2024-01-15T14:30:45.123Z), UTC milliseconds, "
            "or a time ago such as 15m, 2h, 3d, today, yesterday"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _relative(text: str, now: datetime) -> datetime | None:
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "now":
        return now
    if text == "today":
        return midnight
    if text == "yesterday":
        return midnight - timedelta(days=1)
    match = _RELATIVE.match(text)
    if match is None:
        return None
    try:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        raise ValueError(f"{text}: too long ago") from None


def parse_outcome(value: str | int) -> Outcome:
    """``SUCCESS``, ``success``, ``OUTCOME_SUCCESS`` or the enum number."""
    if isinstance(value, int):
        try:
            return Outcome(value)
        except ValueError:
            raise ValueError(f"{value}: no such outcome number (0..{max(Outcome)})") from None
    name = value.strip().upper().removeprefix("OUTCOME_")
    try:
        return Outcome[name]
    except KeyError:
        names = ", ".join(o.name for o in Outcome)
        raise ValueError(f"{value!r}: expected one of {names}") from None


def _price(value: Any) -> Decimal | None:
    if isinstance(value, bool | float):
        # A float has already lost the exact amount; the contract keeps money as text.
        raise ValueError(f'price {value!r}: give money as a decimal string, e.g. "25.00"')
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        raise ValueError("price: expected a decimal string")
    if value == "":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"price {value!r}: not a decimal number") from None
    if not amount.is_finite():
        raise ValueError(f"price {value!r}: not a finite amount")
    return amount


def event_from_json(obj: Any) -> Event:
    """One event object of the contract as an SDK ``Event``; server-side rules
    (type pattern, id format, lengths) are left to the server, which names them."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    fields: dict[str, Any] = {}
    for name in _STRING_FIELDS:
        value = obj.get(name, "")
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string")
        fields[name] = value
    for name in ("type", "lead_id", "flow_id"):
        if not fields[name]:
            raise ValueError(f"{name}: required")
    for name in _COUNT_FIELDS:
        value = obj.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
            raise ValueError(f"{name}: expected a whole number 0..{_UINT32_MAX}")
        fields[name] = value
    for name in _OBJECT_FIELDS:
        value = obj.get(name, {})
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a JSON object")
        fields[name] = value
    timestamp = obj.get("timestamp")
    if timestamp is not None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, str | int):
            raise ValueError("timestamp: expected an RFC 3339 string or UTC milliseconds")
        try:
            fields["timestamp"] = parse_time(timestamp)
        except ValueError as e:
            raise ValueError(f"timestamp {e}") from None
    outcome = obj.get("outcome", 0)
    if isinstance(outcome, bool) or not isinstance(outcome, str | int):
        raise ValueError('outcome: expected a name such as "SUCCESS" or its number')
    try:
        fields["outcome"] = parse_outcome(outcome)
    except ValueError as e:
        raise ValueError(f"outcome {e}") from None
    fields["price"] = _price(obj.get("price", ""))
    return Event(**fields)


def read_events(lines: Iterable[bytes]) -> Iterator[tuple[int, Event]]:
    """(line number, event) for each non-blank line; a bad line raises
    ``ValueError("line N: problem")``."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"line {number}: not valid JSON ({e})") from None
        try:
            yield number, event_from_json(obj)
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
