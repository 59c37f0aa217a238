"""The wire form of events and answers as plain bytes: the pure-Python twin of ``_wireform.c``.

Both twins write protobuf's canonical encoding (fields in number order, proto3
defaults left out) directly, with no message objects: a read answers by
splicing stored bytes, so the bytes built here must equal what
``SerializeToString()`` gives for the same content. ``wireform`` chooses the
twin; the tests hold the two to the same bytes.

Hot paths build a list of pieces and join it once, with precomputed tags and
the varints of small numbers (lengths, mostly) looked up in a table.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import zstandard

Blob: TypeAlias = bytes | bytearray | memoryview
"""What the functions take for bytes: anything bytes-like."""

_VARINT_TABLE_SIZE = 1 << 14  # every one- and two-byte varint: the lengths of nearly all pieces
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63
_INT32_MIN, _INT32_END = -(1 << 31), 1 << 31
_UINT32_END, _UINT64_END = 1 << 32, 1 << 64
_MAX_FIELD_NUMBER = (1 << 29) - 1


def _varint_of(n: int) -> bytes:
    # Unrolled up to five bytes: a timestamp's seconds and nanos, without a loop.
    if n < 1 << 21:
        if n < 1 << 7:
            return bytes((n,))
        if n < 1 << 14:
            return bytes((n & 0x7F | 0x80, n >> 7))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 1 << 28:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 1 << 35:
        return bytes(
            (n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80, n >> 28)
        )
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = tuple(_varint_of(n) for n in range(_VARINT_TABLE_SIZE))


def _varint(n: int) -> bytes:
    """A non-negative number's varint."""
    return _VARINTS[n] if n < _VARINT_TABLE_SIZE else _varint_of(n)


def _signed_varint(n: int) -> bytes:
    # int64 and enums: a negative number is its 64-bit two's complement, ten bytes.
    if n < 0:
        return _varint_of(n + _UINT64_END)
    return _VARINTS[n] if n < _VARINT_TABLE_SIZE else _varint_of(n)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint_of((field << 3) | wire_type)


# Tags, by message. Wire types: 0 varint, 1 64-bit, 2 length-delimited.
_EVENT_ID, _EVENT_TYPE, _EVENT_TIMESTAMP = _tag(1, 2), _tag(2, 2), _tag(3, 2)
_EVENT_RECORDED_AT, _EVENT_POSITION, _EVENT_ACCOUNT = _tag(4, 2), _tag(5, 0), _tag(6, 2)
_EVENT_LEAD_ID, _EVENT_FLOW_ID, _EVENT_ENTITY_ID = _tag(7, 2), _tag(8, 2), _tag(9, 2)
_EVENT_OUTCOME, _EVENT_REASON, _EVENT_DURATION = _tag(10, 0), _tag(11, 2), _tag(12, 0)
_EVENT_INTEGRATION, _EVENT_RESPONSE_CODE, _EVENT_PRICE = _tag(13, 2), _tag(14, 0), _tag(15, 2)
_EVENT_DETAILS_JSON, _EVENT_LEAD_JSON = _tag(18, 2), _tag(19, 2)
_TIMESTAMP_SECONDS, _TIMESTAMP_NANOS = _tag(1, 0), _tag(2, 0)
_NULL_VALUE = _tag(1, 0) + b"\x00"
_NUMBER_VALUE = struct.Struct("<Bd")  # the tag byte and the little-endian double after it
_NUMBER_TAG = (2 << 3) | 1
_STRING_VALUE, _STRUCT_VALUE, _LIST_VALUE = _tag(3, 2), _tag(5, 2), _tag(6, 2)
_BOOL_VALUES = {False: _tag(4, 0) + b"\x00", True: _tag(4, 0) + b"\x01"}
_STRUCT_ENTRY, _ENTRY_KEY, _ENTRY_VALUE = _tag(1, 2), _tag(1, 2), _tag(2, 2)
_LIST_ELEMENT = _tag(1, 2)
_TIMELINE_LEAD_ID, _TIMELINE_STEP, _TIMELINE_TOTAL = _tag(1, 2), _tag(2, 2), _tag(3, 0)
_TIMELINE_TOKEN, _TIMELINE_AUDIT = _tag(4, 2), _tag(5, 2)
_STEP_EVENT, _STEP_SINCE_PREVIOUS, _STEP_CHANGE = _tag(1, 2), _tag(2, 0), _tag(3, 2)
_CHANGE_FIELD, _CHANGE_BEFORE, _CHANGE_AFTER, _CHANGE_KIND = _tag(1, 2), _tag(2, 2), _tag(3, 2), _tag(4, 0)
# ChangeKind's tag and value together: ADDED = 1, CHANGED = 2, REMOVED = 3.
_KIND_ADDED, _KIND_CHANGED, _KIND_REMOVED = (
    _CHANGE_KIND + b"\x01",
    _CHANGE_KIND + b"\x02",
    _CHANGE_KIND + b"\x03",
)


# -- argument checks (the same exception types as the C twin) -------------------------------------


def _text(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value.encode()


def _blob(name: str, value: object) -> bytes | memoryview:
    """A bytes-like argument (bytes, bytearray, memoryview) as bytes or a view of its bytes."""
    if type(value) is bytes:
        return value
    try:
        return memoryview(value).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be bytes-like, not {type(value).__name__}") from None


def _integer(name: str, value: object, low: int, end: int) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if not low <= value < end:
        raise ValueError(f"{name} {value} is out of range [{low}, {end})")
    return value


# -- events ---------------------------------------------------------------------------------------

_EVENT_ARGUMENTS: tuple[tuple[str, str, int, int], ...] = (
    ("id", "text", 0, 0),
    ("type", "text", 0, 0),
    ("timestamp_ms", "int", _INT64_MIN, _INT64_END),
    ("lead_id", "text", 0, 0),
    ("flow_id", "text", 0, 0),
    ("entity_id", "text", 0, 0),
    ("outcome", "int", _INT32_MIN, _INT32_END),
    ("reason", "text", 0, 0),
    ("duration_ms", "int", 0, _UINT32_END),
    ("integration", "text", 0, 0),
    ("response_code", "int", 0, _UINT32_END),
    ("price", "text", 0, 0),
    ("details_json", "blob", 0, 0),
    ("lead_json", "blob", 0, 0),
)
"""encode_event's arguments in the order both twins check them: the first wrong one is reported."""


def _checked_event_arguments(arguments: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments checked one by one (raising for the first wrong one), ints as ints and
    bytes-likes as bytes: what the fast path of encode_event takes."""
    out: list[Any] = []
    for (name, kind, low, end), value in zip(_EVENT_ARGUMENTS, arguments, strict=True):
        if kind == "text":
            _text(name, value)
            out.append(value)
        elif kind == "int":
            out.append(int(_integer(name, value, low, end)))
        else:
            out.append(bytes(_blob(name, value)))
    return tuple(out)


_NANOS_FIELDS = tuple(
    _TIMESTAMP_NANOS + _varint_of(rest * 1_000_000) if rest else b"" for rest in range(1000)
)
"""A Timestamp's nanos field for each millisecond of a second (none for 0)."""
_seconds_field: tuple[int, bytes] = (0, b"")
"""The last seconds field written: events close in time share it, and its varint costs the most."""


def _timestamp_field(tag: bytes, ms: int) -> bytes:
    global _seconds_field
    seconds, rest = divmod(ms, 1000)
    last = _seconds_field
    if seconds == last[0]:
        seconds_field = last[1]
    else:
        seconds_field = _TIMESTAMP_SECONDS + _signed_varint(seconds) if seconds else b""
        _seconds_field = (seconds, seconds_field)
    body = seconds_field + _NANOS_FIELDS[rest]
    return tag + _VARINTS[len(body)] + body


_type = type  # encode_event's parameter ``type`` (the contract's name) hides the builtin there


def encode_event(
    id: str,
    type: str,
    timestamp_ms: int,
    lead_id: str,
    flow_id: str,
    entity_id: str,
    outcome: int,
    reason: str,
    duration_ms: int,
    integration: str,
    response_code: int,
    price: str,
    details_json: Blob,
    lead_json: Blob,
) -> tuple[bytes, int]:
    """An Event without its fields 4..6, and the length of the head (fields 1..3) they follow."""
    # The fast path takes what the engine passes (str, int, bytes) and writes without a call per
    # field; anything else goes through the checks, which raise for the first wrong argument.
    if not (
        _type(timestamp_ms) is int
        and _type(outcome) is int
        and _type(duration_ms) is int
        and _type(response_code) is int
        and _type(details_json) is bytes
        and _type(lead_json) is bytes
        and _INT64_MIN <= timestamp_ms < _INT64_END
        and _INT32_MIN <= outcome < _INT32_END
        and 0 <= duration_ms < _UINT32_END
        and 0 <= response_code < _UINT32_END
    ):
        return encode_event(*_checked_event_arguments(_event_arguments(locals())))
    varints, table_size = _VARINTS, _VARINT_TABLE_SIZE
    try:
        parts: list[bytes] = []
        data = id.encode()
        if data:
            parts += (
                _EVENT_ID,
                varints[len(data)] if len(data) < table_size else _varint_of(len(data)),
                data,
            )
        data = type.encode()
        if data:
            parts += (
                _EVENT_TYPE,
                varints[len(data)] if len(data) < table_size else _varint_of(len(data)),
                data,
            )
        parts.append(_timestamp_field(_EVENT_TIMESTAMP, timestamp_ms))
        head = b"".join(parts)
        parts = [head]
        for tag, text in (
            (_EVENT_LEAD_ID, lead_id),
            (_EVENT_FLOW_ID, flow_id),
            (_EVENT_ENTITY_ID, entity_id),
        ):
            data = text.encode()
            if data:
                parts += (tag, varints[len(data)] if len(data) < table_size else _varint_of(len(data)), data)
        if outcome:
            parts += (_EVENT_OUTCOME, _signed_varint(outcome))
        data = reason.encode()
        if data:
            parts += (
                _EVENT_REASON,
                varints[len(data)] if len(data) < table_size else _varint_of(len(data)),
                data,
            )
        if duration_ms:
            parts += (
                _EVENT_DURATION,
                varints[duration_ms] if duration_ms < table_size else _varint_of(duration_ms),
            )
        data = integration.encode()
        if data:
            parts += (
                _EVENT_INTEGRATION,
                varints[len(data)] if len(data) < table_size else _varint_of(len(data)),
                data,
            )
        if response_code:
            parts += (
                _EVENT_RESPONSE_CODE,
                varints[response_code] if response_code < table_size else _varint_of(response_code),
            )
        data = price.encode()
        if data:
            parts += (
                _EVENT_PRICE,
                varints[len(data)] if len(data) < table_size else _varint_of(len(data)),
                data,
            )
        if details_json:
            parts += (_EVENT_DETAILS_JSON, _varint(len(details_json)), details_json)
        if lead_json:
            parts += (_EVENT_LEAD_JSON, _varint(len(lead_json)), lead_json)
    except (AttributeError, UnicodeError):
        # A text argument that is no str (or has no UTF-8): the checks name the first one.
        _checked_event_arguments(_event_arguments(locals()))
        raise
    return b"".join(parts), len(head)


def _event_arguments(scope: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(scope[name] for name, _, _, _ in _EVENT_ARGUMENTS)


_recorded_at: tuple[int, bytes] = (0, _EVENT_RECORDED_AT + b"\x00")
"""The last recorded_at field written: a page's events mostly share their commit's time."""
_account: tuple[bytes, bytes] = (b"", b"")
"""The last account_id field written: a page's events are one account's."""


def splice_event(
    event_pb: Blob, head_len: int, recorded_at_ms: int, position: int, account_id: Blob
) -> bytes:
    """The full Event: the stored one with fields 4 (recorded_at), 5 (position) and 6 (account)
    put in at ``head_len``, where field-number order wants them."""
    global _recorded_at, _account
    if type(event_pb) is not bytes:
        event_pb = bytes(_blob("event_pb", event_pb))
    if type(head_len) is not int or not 0 <= head_len <= len(event_pb):
        _integer("head_len", head_len, 0, len(event_pb) + 1)  # raises but for a bool
    if type(recorded_at_ms) is int and recorded_at_ms == _recorded_at[0]:
        middle = _recorded_at[1]
    else:
        middle = _timestamp_field(
            _EVENT_RECORDED_AT, _integer("recorded_at_ms", recorded_at_ms, _INT64_MIN, _INT64_END)
        )
        _recorded_at = (recorded_at_ms, middle)
    if type(position) is not int or not 0 <= position < _UINT64_END:
        _integer("position", position, 0, _UINT64_END)  # raises but for a bool
    if position:
        middle += _EVENT_POSITION + (
            _VARINTS[position] if position < _VARINT_TABLE_SIZE else _varint_of(position)
        )
    if type(account_id) is not bytes:
        account_id = bytes(_blob("account_id", account_id))
    if account_id:
        if account_id == _account[0]:
            middle += _account[1]
        else:
            field = _EVENT_ACCOUNT + _varint(len(account_id)) + account_id
            _account = (account_id, field)
            middle += field
    return event_pb[:head_len] + middle + event_pb[head_len:]


# -- JSON values (google.protobuf.Value / Struct / ListValue) -------------------------------------

_KEY_FIELDS: dict[str, bytes] = {}
"""A Struct entry's key field (tag, length, UTF-8) by key: snapshots repeat the same field names."""
_KEY_FIELDS_MAX = 65536


def _key_field(key: Any) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"key {key!r} is not a string")
    data = key.encode()
    field = _ENTRY_KEY + _varint(len(data)) + data
    if type(key) is str:
        if len(_KEY_FIELDS) >= _KEY_FIELDS_MAX:
            _KEY_FIELDS.clear()
        _KEY_FIELDS[key] = field
    return field


def _value(item: Any) -> bytes:
    """A Value's encoding (its message body, without its own tag and length)."""
    kind = type(item)
    # The common kinds by exact type first; then the isinstance order of python_to_value.
    if kind is str:
        data: bytes = item.encode()
        size = len(data)
        return _STRING_VALUE + (_VARINTS[size] if size < _VARINT_TABLE_SIZE else _varint_of(size)) + data
    if kind is int or kind is float:
        return _number(item)
    if item is None:
        return _NULL_VALUE
    if kind is bool:
        return _TRUE_VALUE if item else _FALSE_VALUE
    if kind is dict:
        return _length_prefixed(_STRUCT_VALUE, _struct_body(item))
    if kind is list or kind is tuple:
        return _length_prefixed(_LIST_VALUE, _list_body(item))
    if isinstance(item, bool):
        return _TRUE_VALUE if item else _FALSE_VALUE
    if isinstance(item, int | float):
        return _number(item)
    if isinstance(item, str):
        data = item.encode()
        return _STRING_VALUE + _varint(len(data)) + data
    if isinstance(item, Mapping):
        return _length_prefixed(_STRUCT_VALUE, _struct_body(item))
    if isinstance(item, list | tuple):
        return _length_prefixed(_LIST_VALUE, _list_body(item))
    raise TypeError(f"{type(item).__name__} is not a JSON value (use str, number, bool, None, dict or list)")


_TRUE_VALUE, _FALSE_VALUE = _BOOL_VALUES[True], _BOOL_VALUES[False]


def _number(item: int | float) -> bytes:
    try:
        return _NUMBER_VALUE.pack(_NUMBER_TAG, item)
    except (OverflowError, struct.error):
        # struct takes an int as a float; one past a double's range is out of range here.
        try:
            number = float(item)
        except OverflowError:
            raise ValueError(f"int {item} is out of a double's range") from None
        return _NUMBER_VALUE.pack(_NUMBER_TAG, number)


def _length_prefixed(tag: bytes, body: bytes) -> bytes:
    size = len(body)
    return tag + (_VARINTS[size] if size < _VARINT_TABLE_SIZE else _varint_of(size)) + body


_SHORT_STRING = 2048
_STRING_ENTRY_HEADS = tuple(
    _ENTRY_VALUE + _varint_of(1 + len(_varint_of(size)) + size) + _STRING_VALUE + _varint_of(size)
    for size in range(_SHORT_STRING)
)
"""What follows a Struct entry's key when its value is a string of each short size: the value's
tag and length, then the string's tag and length."""
_NUMBER_ENTRY_HEAD = _ENTRY_VALUE + _varint_of(_NUMBER_VALUE.size)


def _struct_body(data: Mapping[Any, Any]) -> bytes:
    parts: list[bytes] = []
    varints, table_size, key_fields, heads = _VARINTS, _VARINT_TABLE_SIZE, _KEY_FIELDS, _STRING_ENTRY_HEADS
    for key, item in data.items():
        key_field = key_fields.get(key) if type(key) is str else None
        if key_field is None:
            key_field = _key_field(key)
        kind = type(item)
        # entry = 0x0a, length, (key field, 0x12, length, Value); the common values written
        # with their heads from tables.
        if kind is str:
            data_bytes = item.encode()
            size = len(data_bytes)
            if size < _SHORT_STRING:
                head = heads[size]
                entry_size = len(key_field) + len(head) + size
                parts += (
                    _STRUCT_ENTRY,
                    varints[entry_size] if entry_size < table_size else _varint_of(entry_size),
                    key_field,
                    head,
                    data_bytes,
                )
                continue
            value = _STRING_VALUE + _varint_of(size) + data_bytes
        elif kind is int or kind is float:
            entry_size = len(key_field) + 11
            parts += (
                _STRUCT_ENTRY,
                varints[entry_size] if entry_size < table_size else _varint_of(entry_size),
                key_field,
                _NUMBER_ENTRY_HEAD,
                _number(item),
            )
            continue
        else:
            value = _value(item)
        size = len(value)
        value_length = varints[size] if size < table_size else _varint_of(size)
        entry_size = len(key_field) + 1 + len(value_length) + size
        parts += (
            _STRUCT_ENTRY,
            varints[entry_size] if entry_size < table_size else _varint_of(entry_size),
            key_field,
            _ENTRY_VALUE,
            value_length,
            value,
        )
    return b"".join(parts)


def _list_body(items: Sequence[Any]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        value = _value(item)
        parts += (_LIST_ELEMENT, _varint(len(value)), value)
    return b"".join(parts)


def value_bytes(value: Any) -> bytes:
    """A ``google.protobuf.Value`` holding a JSON value, as ``python_to_value`` fills it."""
    return _value(value)


def struct_bytes(obj: Mapping[str, Any]) -> bytes:
    """A ``google.protobuf.Struct`` holding a JSON object (a Value's field 5 body)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"obj must be a mapping, not {type(obj).__name__}")
    return _struct_body(obj)


# -- timelines ------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    # JSON values: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


_ABSENT = object()


def _change(field: Any, kind: bytes, before: Any, after: Any) -> bytes:
    parts: list[bytes] = []
    name = _text("field name", field)
    if name:
        parts += (_CHANGE_FIELD, _varint(len(name)), name)
    if before is not _ABSENT:
        value = _value(before)
        parts += (_CHANGE_BEFORE, _varint(len(value)), value)
    if after is not _ABSENT:
        value = _value(after)
        parts += (_CHANGE_AFTER, _varint(len(value)), value)
    parts.append(kind)
    body = b"".join(parts)
    return _STEP_CHANGE + _varint(len(body)) + body


def field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> bytes:
    """A TimelineStep's ``changes`` (field 3 entries) from one snapshot to the next, exactly as
    ``leadtrail.server.timelines.changes`` fills them: sorted by field name."""
    if not isinstance(before, Mapping):
        raise TypeError(f"before must be a mapping, not {type(before).__name__}")
    if not isinstance(after, Mapping):
        raise TypeError(f"after must be a mapping, not {type(after).__name__}")
    # Most fields of a lead stay the same from one step to the next: find the
    # changed ones with the cheapest test that can say "same", sort only those.
    changed = [field for field in before if field not in after]
    for field, value in after.items():
        old = before.get(field, _ABSENT)
        if old is value or (type(old) is type(value) and old == value):
            continue
        if old is _ABSENT or not _same(old, value):
            changed.append(field)
    out: list[bytes] = []
    for field in sorted(changed):
        if field not in before:
            out.append(_change(field, _KIND_ADDED, _ABSENT, after[field]))
        elif field not in after:
            out.append(_change(field, _KIND_REMOVED, before[field], _ABSENT))
        elif not _same(before[field], after[field]):
            out.append(_change(field, _KIND_CHANGED, before[field], after[field]))
    return b"".join(out)


def timeline_bytes(
    lead_id: str,
    steps: Iterable[Sequence[Any]],
    total_ms: int,
    next_page_token: str,
    audit: Iterable[Blob],
) -> bytes:
    """A ``Timeline`` page from stored pieces: each step's serialized Event, its
    ``since_previous_ms`` and its serialized (already tagged) changes."""
    parts: list[Blob] = []
    append = parts.append
    lead = _text("lead_id", lead_id)
    if lead:
        append(_TIMELINE_LEAD_ID)
        append(_varint(len(lead)))
        append(lead)
    for event, since_previous_ms, changes in steps:
        if type(event) is not bytes:
            event = _blob("step event", event)
        if type(changes) is not bytes:
            changes = _blob("step changes", changes)
        if _integer("since_previous_ms", since_previous_ms, _INT64_MIN, _INT64_END):
            since = _STEP_SINCE_PREVIOUS + _signed_varint(since_previous_ms)
            size = 1 + len(_varint(len(event))) + len(event) + len(since) + len(changes)
        else:
            since = b""
            size = 1 + len(_varint(len(event))) + len(event) + len(changes)
        append(_TIMELINE_STEP)
        append(_varint(size))
        append(_STEP_EVENT)
        append(_varint(len(event)))
        append(event)
        append(since)
        append(changes)
    if _integer("total_ms", total_ms, _INT64_MIN, _INT64_END):
        append(_TIMELINE_TOTAL)
        append(_signed_varint(total_ms))
    token = _text("next_page_token", next_page_token)
    if token:
        append(_TIMELINE_TOKEN)
        append(_varint(len(token)))
        append(token)
    for event in audit:
        if type(event) is not bytes:
            event = _blob("audit event", event)
        append(_TIMELINE_AUDIT)
        append(_varint(len(event)))
        append(event)
    return b"".join(parts)


def repeated_field(field_number: int, messages: Iterable[Blob]) -> bytes:
    """Messages as the entries of a repeated message field: each tagged and length-prefixed."""
    tag = _tag(_integer("field_number", field_number, 1, _MAX_FIELD_NUMBER + 1), 2)
    parts: list[Blob] = []
    append = parts.append
    for message in messages:
        if type(message) is not bytes:
            message = _blob("message", message)
        append(tag)
        append(_varint(len(message)))
        append(message)
    return b"".join(parts)


# -- a body compressed against its base body ---------------------------------------------------------

_PREFIX_PARAMS: dict[int, zstandard.ZstdCompressionParameters] = {}
_DICT_ID_SIZES = (0, 1, 2, 4)


def _frame_content_size(frame: Blob) -> int:
    """The content size a magicless zstd frame header states (RFC 8878, 3.1.1.1)."""
    if not len(frame):
        raise ValueError("zstd frame is empty")
    descriptor = frame[0]
    single_segment = descriptor >> 5 & 1
    fcs_code = descriptor >> 6
    fcs_size = single_segment if fcs_code == 0 else 1 << fcs_code
    if fcs_size == 0 or descriptor & 0x08:
        raise ValueError("zstd frame states no content size")
    at = 1 + (0 if single_segment else 1) + _DICT_ID_SIZES[descriptor & 3]
    if at + fcs_size > len(frame):
        raise ValueError("zstd frame shorter than its header")
    value = int.from_bytes(frame[at : at + fcs_size], "little")
    return value + 256 if fcs_size == 2 else value


def prefix_compress(body: Blob, base: Blob, level: int) -> bytes:
    """A magicless zstd frame of ``body`` (content size and checksum stated, no dictionary
    id) compressed against ``base`` as raw content: what the body shares with the base
    costs a few bytes a match. The checksum is what tells a body decoded against another
    base (a stale copy of a rewritten one) from the right one."""
    level = _integer("level", level, -131072, 23)
    params = _PREFIX_PARAMS.get(level)
    if params is None:
        params = _PREFIX_PARAMS[level] = zstandard.ZstdCompressionParameters.from_level(
            level,
            format=zstandard.FORMAT_ZSTD1_MAGICLESS,
            write_content_size=True,
            write_checksum=True,
            write_dict_id=False,
        )
    body, base = _blob("body", body), _blob("base", base)
    prefix = zstandard.ZstdCompressionDict(bytes(base), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    try:
        return zstandard.ZstdCompressor(dict_data=prefix, compression_params=params).compress(body)
    except zstandard.ZstdError as e:
        raise ValueError(f"zstd: {e}") from None


def prefix_decompress(frame: Blob, base: Blob, max_size: int) -> bytes:
    """The body a ``prefix_compress`` frame holds, given the same ``base``; ValueError when
    the frame is damaged, states more than ``max_size`` bytes, or does not hold what it states."""
    max_size = _integer("max_size", max_size, 0, 1 << 63)
    frame, base = _blob("frame", frame), _blob("base", base)
    size = _frame_content_size(frame)
    if size > max_size:
        raise ValueError(f"zstd frame content size {size} is over {max_size}")
    prefix = zstandard.ZstdCompressionDict(bytes(base), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(dict_data=prefix, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    try:
        body = decompressor.decompress(frame, max_output_size=max_size, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise ValueError(f"zstd: {e}") from None
    if len(body) != size:
        raise ValueError(f"zstd frame holds {len(body)} bytes, not the {size} it states")
    return body


# -- the hash chain (FORMAT.md, "Hash chain") ----------------------------------------------------

_CHAIN_CONTENT = b"leadtrail content v1\x00"
_CHAIN_EVENT = b"leadtrail event v1\x00"
_CHAIN_TIMES = struct.Struct(">QQQ")
_CHAIN_U32 = struct.Struct(">I")
_CHAIN_OUTCOME_DURATION = struct.Struct(">BI")


def _lp(name: str, value: object) -> bytes:
    text = _text(name, value)
    return _CHAIN_U32.pack(len(text)) + text


def chain_block(
    prev: Blob,
    salt: Blob,
    position: int,
    recorded_at_ms: int,
    timestamp_ms: int,
    account_id: str,
    event_id: str,
    event_type: str,
    lead_id: str,
    flow_id: str,
    entity_id: str,
    outcome: int,
    duration_ms: int,
    integration: str,
    response_code: int,
    price: str,
    reason: str,
    details_json: Blob,
    lead_json: Blob,
) -> tuple[bytes, bytes]:
    """(the chain block, the chain hash) of a new event whose content is committed to with
    ``salt``, after the chain hash ``prev``."""
    prev, salt = bytes(prev), bytes(salt)
    if len(prev) != 32 or len(salt) != 16:
        raise ValueError(f"prev must be 32 bytes and salt 16 ({len(prev)}, {len(salt)} given)")
    details, lead = bytes(_blob("details_json", details_json)), bytes(_blob("lead_json", lead_json))
    for name, value, end in (("position", position, 1 << 64), ("recorded_at_ms", recorded_at_ms, 1 << 64)):
        _integer(name, value, 0, end)
    _integer("timestamp_ms", timestamp_ms, 0, 1 << 64)
    _integer("outcome", outcome, 0, 256)
    _integer("duration_ms", duration_ms, 0, 1 << 32)
    _integer("response_code", response_code, 0, 1 << 32)
    content = hashlib.sha256(
        b"".join(
            (
                _CHAIN_CONTENT,
                salt,
                _lp("reason", reason),
                _CHAIN_U32.pack(len(details)),
                details,
                _CHAIN_U32.pack(len(lead)),
                lead,
            )
        )
    ).digest()
    digest = hashlib.sha256(
        b"".join(
            (
                _CHAIN_EVENT,
                _CHAIN_TIMES.pack(position, recorded_at_ms, timestamp_ms),
                _lp("account_id", account_id),
                _lp("id", event_id),
                _lp("type", event_type),
                _lp("lead_id", lead_id),
                _lp("flow_id", flow_id),
                _lp("entity_id", entity_id),
                _CHAIN_OUTCOME_DURATION.pack(outcome, duration_ms),
                _lp("integration", integration),
                _CHAIN_U32.pack(response_code),
                _lp("price", price),
                content,
            )
        )
    ).digest()
    chain_hash = hashlib.sha256(prev + digest).digest()
    return b"\x01" + salt + chain_hash[:8], chain_hash
