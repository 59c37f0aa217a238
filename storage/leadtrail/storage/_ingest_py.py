"""The write path's per-event checks and keys in plain Python: the twin of ``_ingest.c``.

Both twins answer the same question the same way: does an event (or a ``details`` /
``lead`` object) obey the contract? They only say yes or no; the messages that name a
broken rule are written by ``validation``, once, for both. The compiled twin may say no
to something unusual that is still valid (a subclass of ``str`` or ``dict``, a
``Mapping`` that is not a dict): ``validation`` then asks this twin, so an answer of
the compiled one is never less exact, only faster. The tests hold the two to the same
answers on the same inputs.

The contract's limits are defined here, the one place both twins and ``validation``
take them from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .event import Event, Outcome
from .ulid import ID_PATTERN, id_bytes

TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
TYPE_MAX = 64
ID_FIELD_MAX = 128
REASON_MAX = 1024
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
ACCOUNT_MAX = 64
PRICE_PATTERN = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
PRICE_MAX = 32
FIELD_NAME_MAX = 256
MAX_DEPTH = 32
U32_MAX = 2**32 - 1
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
JSON_INT_MAX = 2**63 - 1
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
"""Not in an id: they break CSV exports and terminal output of everything that shows one."""

IMPLEMENTATION = "pure"

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


def plain_fields_ok(event: Event) -> bool:
    """Every field but ``details`` and ``lead`` obeys the contract (no messages)."""
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
        and _known(_KNOWN_ACCOUNTS, ACCOUNT_PATTERN, event.account_id, ACCOUNT_MAX)
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


def json_object_ok(value: object) -> bool:
    """``value`` is a ``details`` or ``lead`` object the contract admits (its size aside):
    a mapping of 1..256-character names to JSON values nested at most 32 deep, with
    64-bit integers and finite numbers only."""
    if not isinstance(value, Mapping):
        return False
    # The common case is a flat map of strings, numbers and booleans: check
    # those inline and hand anything nested to the recursive check.
    for key, item in value.items():
        if type(key) is not str or not 0 < len(key) <= FIELD_NAME_MAX:
            return False
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -JSON_INT_MAX - 1 <= item <= JSON_INT_MAX:
                return False
            continue
        if kind is float:
            if item - item != 0.0:  # NaN and infinities only
                return False
            continue
        if not _json_value_ok(item, 1):
            return False
    return True


def _json_value_ok(value: object, depth: int) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -JSON_INT_MAX - 1 <= value <= JSON_INT_MAX
    if isinstance(value, float):
        return value - value == 0.0
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and _json_value_ok(item, depth + 1) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(_json_value_ok(item, depth + 1) for item in value)
    return False


def id_key(prefix: bytes, event_id: str) -> bytes:
    """``prefix`` followed by the 16 bytes of a valid event id (an ``ids`` key)."""
    return prefix + id_bytes(event_id)


__all__ = [
    "ACCOUNT_MAX",
    "ACCOUNT_PATTERN",
    "CONTROL_CHARACTERS",
    "FIELD_NAME_MAX",
    "ID_FIELD_MAX",
    "IMPLEMENTATION",
    "JSON_INT_MAX",
    "MAX_DEPTH",
    "MAX_TIMESTAMP_MS",
    "PRICE_MAX",
    "PRICE_PATTERN",
    "REASON_MAX",
    "TYPE_MAX",
    "TYPE_PATTERN",
    "U32_MAX",
    "id_key",
    "json_object_ok",
    "plain_fields_ok",
]
