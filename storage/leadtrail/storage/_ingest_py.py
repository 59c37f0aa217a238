"""The write path's per-event checks and index keys in plain Python: the twin of ``_ingest.c``.

Both twins answer the same question the same way: does an event (or a ``details`` /
``lead`` object) obey the contract? They only say yes or no; the messages that name a
broken rule are written by ``validation``, once, for both. The compiled twin may say no
to something unusual that is still valid (a subclass of ``str`` or ``dict``, a
``Mapping`` that is not a dict): ``validation`` then asks this twin, so an answer of
the compiled one is never less exact, only faster. The tests hold the two to the same
answers on the same inputs.

``index_rows`` builds a committed group's index rows, the same rows from both twins.

The contract's limits are defined here, the one place both twins and ``validation``
take them from.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .event import Event, EventFields, Outcome
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


class IndexedEvent(EventFields, Protocol):
    """What ``index_rows`` reads of an event to index (an ``Event``): what a filter looks
    at, its id and when it was recorded."""

    @property
    def id(self) -> str: ...
    @property
    def recorded_at_ms(self) -> int: ...


class Placed(Protocol):
    """An event to index and where its record sits (``index.Located``)."""

    @property
    def event(self) -> IndexedEvent: ...
    @property
    def segment_base(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def raw_bytes(self) -> int: ...
    @property
    def id_key(self) -> bytes | None: ...


Rows = list[tuple[bytes, bytes]]
IndexRows = tuple[Rows, Rows, Rows, Rows, Rows, Rows, Rows, dict[bytes, tuple[int, int]], int, int]
"""A group's rows of ``ids``, ``positions``, ``lead``, ``type``, ``time``, ``flow`` and
``entity`` (unsorted), its ``segacct`` bounds, how many events, and their raw bytes."""

_U48_MAX = (1 << 48) - 1
_U48 = struct.Struct(">HI")
_U64 = struct.Struct(">Q")
_POSOFF = struct.Struct(">II")


def index_rows(
    located: Sequence[Placed], number: Callable[[bytes, str], bytes], lead_hash: Callable[[str], bytes]
) -> IndexRows:
    """A group's index rows (see ``index``'s key layout). ``number(kind, name)`` gives a
    name's 4-byte number (kinds ``a``, ``t``, ``f``, ``e``), ``lead_hash(lead_id)`` a lead's
    8 bytes; each is asked once a group and account for a name."""
    ids: Rows = []
    positions: Rows = []
    leads: Rows = []
    types: Rows = []
    times: Rows = []
    flows: Rows = []
    entities: Rows = []
    segacct: dict[bytes, tuple[int, int]] = {}
    raw = 0
    # The group's few accounts, types, flows and entities, each looked up once.
    accounts: dict[str, bytes] = {}
    type_keys: dict[tuple[bytes, str], bytes] = {}
    flow_keys: dict[tuple[bytes, str], bytes] = {}
    entity_keys: dict[tuple[bytes, str], bytes] = {}
    lead_keys: dict[tuple[bytes, str], bytes] = {}
    base_keys: dict[int, bytes] = {}
    pack_u64, pack_posoff, pack_u48 = _U64.pack, _POSOFF.pack, _U48.pack
    last_bounds_key, last_recorded = b"", -1
    ids_append, positions_append, leads_append = ids.append, positions.append, leads.append
    types_append, times_append, flows_append = types.append, times.append, flows.append
    for item in located:
        e = item.event
        account = e.account_id
        acct = accounts.get(account)
        if acct is None:
            acct = accounts[account] = number(b"a", account)
        position = e.position
        timestamp = e.timestamp_ms or 0
        if 0 <= timestamp <= _U48_MAX and 0 <= position <= _U48_MAX:
            value = (timestamp << 48 | position).to_bytes(12, "big")
        else:  # clamped to 48 bits each
            clamped_ts = min(max(timestamp, 0), _U48_MAX)
            value = (clamped_ts << 48 | min(max(position, 0), _U48_MAX)).to_bytes(12, "big")
        id_key = item.id_key
        at = pack_u48(position >> 32, position & 0xFFFFFFFF)
        ids_append((id_key if id_key is not None else acct + id_bytes(e.id), at))
        base = item.segment_base
        base_key = base_keys.get(base)
        if base_key is None:
            base_key = base_keys[base] = pack_u64(base)
        positions_append((base_key, pack_posoff(position - base, item.offset)))
        name_key = (acct, e.lead_id)
        key = lead_keys.get(name_key)
        if key is None:
            key = lead_keys[name_key] = acct + lead_hash(e.lead_id)
        leads_append((key, value))
        name_key = (acct, e.type)
        key = type_keys.get(name_key)
        if key is None:
            key = type_keys[name_key] = acct + number(b"t", e.type)
        types_append((key, value))
        times_append((acct, value))
        name_key = (acct, e.flow_id)
        key = flow_keys.get(name_key)
        if key is None:
            key = flow_keys[name_key] = acct + number(b"f", e.flow_id)
        flows_append((key, value))
        if e.entity_id:
            name_key = (acct, e.entity_id)
            key = entity_keys.get(name_key)
            if key is None:
                key = entity_keys[name_key] = acct + number(b"e", e.entity_id)
            entities.append((key, value))
        key = base_key + acct
        recorded = e.recorded_at_ms
        # A committed group shares one recorded_at: most events change nothing here.
        if key != last_bounds_key or recorded != last_recorded:
            last_bounds_key, last_recorded = key, recorded
            bounds = segacct.get(key)
            if bounds is None:
                segacct[key] = (recorded, recorded)
            elif recorded < bounds[0] or recorded > bounds[1]:
                segacct[key] = (min(bounds[0], recorded), max(bounds[1], recorded))
        raw += item.raw_bytes
    return ids, positions, leads, types, times, flows, entities, segacct, len(located), raw


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
    "IndexRows",
    "IndexedEvent",
    "Placed",
    "Rows",
    "id_key",
    "index_rows",
    "json_object_ok",
    "plain_fields_ok",
]
