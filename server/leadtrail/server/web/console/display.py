"""How the console spells values: UTC times, durations in human units, outcomes, JSON.

Everything here returns plain text; the templates escape it (autoescape), so a value holding
markup is shown as the text it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import struct_pb2, timestamp_pb2

from leadtrail.client.wire import outcome_name, timestamp_to_ms, value_to_python

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000))


def utc(ms: int) -> str:
    """``2026-12-03 15:04:05.123 UTC``."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d} UTC"


def utc_of(ts: timestamp_pb2.Timestamp) -> str:
    return utc(timestamp_to_ms(ts))


def duration(ms: int) -> str:
    """A duration in the two largest units it has: ``850 ms``, ``4.2 s``, ``3 min 12 s``,
    ``2 h 5 min``, ``1 d 3 h``."""
    if ms < 0:
        return "-" + duration(-ms)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        tenths = ms // 100  # cut, not rounded: 59,999 ms is not a minute
        return f"{tenths // 10} s" if tenths % 10 == 0 else f"{tenths // 10}.{tenths % 10} s"
    for i, (unit, size) in enumerate(_UNITS[:-1]):
        if ms >= size:
            whole, rest = divmod(ms, size)
            smaller, smaller_size = _UNITS[i + 1]
            part = rest // smaller_size
            return f"{whole} {unit} {part} {smaller}" if part else f"{whole} {unit}"
    raise AssertionError("unreachable: every duration of a minute or more has a unit")


def since_previous(ms: int) -> str:
    return "+" + duration(ms)


def outcome(value: int) -> str:
    """``SUCCESS``, ``FAILURE``, ``ERROR``, ``SKIP`` or ``UNSPECIFIED``."""
    return outcome_name(value)


def outcome_class(value: int) -> str:
    """The CSS class that colours an outcome."""
    return "outcome-" + outcome_name(value).lower()


def as_text(value: Any) -> str:
    """A snapshot or details value: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def value_text(value: struct_pb2.Value) -> str:
    return as_text(value_to_python(value))


def pretty_json(record: Any) -> str:
    return orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()
