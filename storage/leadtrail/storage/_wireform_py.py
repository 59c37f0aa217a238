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

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

Blob: TypeAlias = bytes | bytearray | memoryview
"""What the functions take for bytes: anything bytes-like."""

_VARINT_TABLE_SIZE = 1 << 14  # every one- and two-byte varint: the lengths of nearly all pieces
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63
_INT32_MIN, _INT32_END = -(1 << 31), 1 << 31
_UINT32_END, _UINT64_END = 1 << 32, 1 << 64
_MAX_FIELD_NUMBER = (1 << 29) - 1


def _varint_of(n: int) -> bytes:
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


def _timestamp(tag: bytes, name: str, ms: object) -> bytes:
    """A Timestamp field, always present (an empty message for the epoch)."""
    seconds, rest = divmod(_integer(name, ms, _INT64_MIN, _INT64_END), 1000)
    if seconds:
        if rest:
            body = _TIMESTAMP_SECONDS + _signed_varint(seconds) + _TIMESTAMP_NANOS + _varint(rest * 1_000_000)
        else:
            body = _TIMESTAMP_SECONDS + _signed_varint(seconds)
    elif rest:
        body = _TIMESTAMP_NANOS + _varint(rest * 1_000_000)
    else:
        body = b""
    return tag + _VARINTS[len(body)] + body


# -- events ---------------------------------------------------------------------------------------


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
    parts: list[Blob] = []
    append = parts.append
    for tag, name, text in ((_EVENT_ID, "id", id), (_EVENT_TYPE, "type", type)):
        data = _text(name, text)
        if data:
            append(tag)
            append(_varint(len(data)))
            append(data)
    append(_timestamp(_EVENT_TIMESTAMP, "timestamp_ms", timestamp_ms))
    head_len = sum(map(len, parts))
    for tag, name, text in (
        (_EVENT_LEAD_ID, "lead_id", lead_id),
        (_EVENT_FLOW_ID, "flow_id", flow_id),
        (_EVENT_ENTITY_ID, "entity_id", entity_id),
    ):
        data = _text(name, text)
        if data:
            append(tag)
            append(_varint(len(data)))
            append(data)
    if _integer("outcome", outcome, _INT32_MIN, _INT32_END):
        append(_EVENT_OUTCOME)
        append(_signed_varint(outcome))
    data = _text("reason", reason)
    if data:
        append(_EVENT_REASON)
        append(_varint(len(data)))
        append(data)
    if _integer("duration_ms", duration_ms, 0, _UINT32_END):
        append(_EVENT_DURATION)
        append(_varint(duration_ms))
    data = _text("integration", integration)
    if data:
        append(_EVENT_INTEGRATION)
        append(_varint(len(data)))
        append(data)
    if _integer("response_code", response_code, 0, _UINT32_END):
        append(_EVENT_RESPONSE_CODE)
        append(_varint(response_code))
    for tag, name, text in ((_EVENT_PRICE, "price", price),):
        data = _text(name, text)
        if data:
            append(tag)
            append(_varint(len(data)))
            append(data)
    for tag, name, blob in (
        (_EVENT_DETAILS_JSON, "details_json", details_json),
        (_EVENT_LEAD_JSON, "lead_json", lead_json),
    ):
        view = _blob(name, blob)
        if view:
            append(tag)
            append(_varint(len(view)))
            append(view)
    return b"".join(parts), head_len


def splice_event(
    event_pb: Blob, head_len: int, recorded_at_ms: int, position: int, account_id: Blob
) -> bytes:
    """The full Event: the stored one with fields 4 (recorded_at), 5 (position) and 6 (account)
    put in at ``head_len``, where field-number order wants them."""
    if type(event_pb) is not bytes:
        event_pb = _blob("event_pb", event_pb)
    _integer("head_len", head_len, 0, len(event_pb) + 1)
    middle = _timestamp(_EVENT_RECORDED_AT, "recorded_at_ms", recorded_at_ms)
    if _integer("position", position, 0, _UINT64_END):
        middle += _EVENT_POSITION + _varint(position)
    account = _blob("account_id", account_id)
    if account:
        middle += _EVENT_ACCOUNT + _varint(len(account)) + account
    return b"".join((event_pb[:head_len], middle, event_pb[head_len:]))


# -- JSON values (google.protobuf.Value / Struct / ListValue) -------------------------------------


def _value(item: Any, parts: list[bytes]) -> None:
    """Append a Value's encoding (the message body, without its own tag and length) to ``parts``."""
    kind = type(item)
    # The common kinds by exact type first; then the isinstance order of python_to_value.
    if kind is str:
        data = item.encode()
        parts.append(_STRING_VALUE)
        parts.append(_varint(len(data)))
        parts.append(data)
    elif kind is int or kind is float:
        parts.append(_number(item))
    elif item is None:
        parts.append(_NULL_VALUE)
    elif kind is bool:
        parts.append(_BOOL_VALUES[item])
    elif kind is dict:
        parts.append(_STRUCT_VALUE)
        _length_prefixed(_struct_body(item), parts)
    elif kind is list or kind is tuple:
        parts.append(_LIST_VALUE)
        _length_prefixed(_list_body(item), parts)
    elif isinstance(item, bool):
        parts.append(_BOOL_VALUES[bool(item)])
    elif isinstance(item, int | float):
        parts.append(_number(item))
    elif isinstance(item, str):
        data = item.encode()
        parts.append(_STRING_VALUE)
        parts.append(_varint(len(data)))
        parts.append(data)
    elif isinstance(item, Mapping):
        parts.append(_STRUCT_VALUE)
        _length_prefixed(_struct_body(item), parts)
    elif isinstance(item, list | tuple):
        parts.append(_LIST_VALUE)
        _length_prefixed(_list_body(item), parts)
    else:
        raise TypeError(
            f"{type(item).__name__} is not a JSON value (use str, number, bool, None, dict or list)"
        )


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


def _length_prefixed(body: bytes, parts: list[bytes]) -> None:
    parts.append(_varint(len(body)))
    parts.append(body)


def _struct_body(data: Mapping[Any, Any]) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    for key, item in data.items():
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"key {key!r} is not a string")
        key_bytes = key.encode()
        if type(item) is str:
            # The most common entry (a snapshot field holding a string), written in one go.
            data_bytes = item.encode()
            value = _STRING_VALUE + _varint(len(data_bytes)) + data_bytes
        else:
            value_parts: list[bytes] = []
            _value(item, value_parts)
            value = b"".join(value_parts)
        entry = b"".join(
            (_ENTRY_KEY, _varint(len(key_bytes)), key_bytes, _ENTRY_VALUE, _varint(len(value)), value)
        )
        append(_STRUCT_ENTRY)
        append(_varint(len(entry)))
        append(entry)
    return b"".join(parts)


def _list_body(items: Sequence[Any]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        value_parts: list[bytes] = []
        _value(item, value_parts)
        value = b"".join(value_parts)
        parts.append(_LIST_ELEMENT)
        parts.append(_varint(len(value)))
        parts.append(value)
    return b"".join(parts)


def value_bytes(value: Any) -> bytes:
    """A ``google.protobuf.Value`` holding a JSON value, as ``python_to_value`` fills it."""
    parts: list[bytes] = []
    _value(value, parts)
    return b"".join(parts)


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
    append = parts.append
    name = _text("field name", field)
    if name:
        append(_CHANGE_FIELD)
        append(_varint(len(name)))
        append(name)
    for tag, item in ((_CHANGE_BEFORE, before), (_CHANGE_AFTER, after)):
        if item is not _ABSENT:
            value_parts: list[bytes] = []
            _value(item, value_parts)
            value = b"".join(value_parts)
            append(tag)
            append(_varint(len(value)))
            append(value)
    append(kind)
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
