"""The wire body (format 1.2): an event stored as the bytes its answers are made of.

A read answers with ``leadtrail.v1.Event`` messages and timeline steps. So the
body of a record holds, besides a short JSON array of the event's scalar
fields (what filters, scopes and decoding look at), the event's protobuf bytes
with the snapshot as ``lead_json``, less the three fields the record prefix
already holds (``recorded_at``, ``position``, ``account_id``, spliced in at
their place), and the timeline changes against the lead's previous event,
computed once by the writer. An unmasked read then copies bytes: it builds no
Python object per field of the answer. See FORMAT.md, "Wire body".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from . import chain, wireform
from .event import Event, Outcome
from .format import WIRE_HEADER, BadRecord

LEAD_JSON_TAG = b"\x9a\x01"
"""Field 19 (``lead_json``), length-delimited: ``(19 << 3) | 2`` as a varint."""
DETAILS_JSON_TAG = b"\x92\x01"
"""Field 18 (``details_json``)."""
NO_CHANGES = 0
"""``changes_base`` of a body without changes (no event has position 0)."""


def _field_size(tag: bytes, value: bytes) -> int:
    """Bytes of a length-delimited field holding ``value`` (0 when it is empty: omitted)."""
    if not value:
        return 0
    n, size = len(value), 1
    while n > 0x7F:
        n >>= 7
        size += 1
    return len(tag) + size + len(value)


def encode(
    event: Event,
    details_json: bytes,
    lead_json: bytes,
    changes: bytes,
    changes_base: int,
    block: bytes = b"",
) -> tuple[bytes, int]:
    """(the body of ``event``, the size of the event as JSON): ``details_json`` and
    ``lead_json`` are its details and snapshot as ``orjson.dumps`` writes them (b"" when
    empty); ``changes`` are the timeline changes against the event at ``changes_base``
    (its own position: against nothing); ``block`` its chain block (format 1.4)."""
    meta = orjson.dumps(scalar_fields(event))
    event_pb, head_len = wireform.encode_event(
        event.id,
        event.type,
        event.timestamp_ms or 0,
        event.lead_id,
        event.flow_id,
        event.entity_id,
        int(event.outcome),
        event.reason,
        event.duration_ms,
        event.integration,
        event.response_code,
        event.price,
        details_json,
        lead_json,
    )
    lead_at = len(event_pb) - _field_size(LEAD_JSON_TAG, lead_json)
    json_at = lead_at - _field_size(DETAILS_JSON_TAG, details_json)
    header = WIRE_HEADER.pack(
        len(meta), len(event_pb), head_len, json_at, lead_at, len(changes), changes_base
    )
    # As a JSON array of every field (format 1.0's body): what stats count as raw bytes.
    json_size = len(meta) + len(details_json or b"{}") + len(lead_json or b"{}") + 2
    return b"".join((header, meta, event_pb, changes, block)), json_size


def scalar_fields(event: Event) -> list[Any]:
    """The event's fields but details and snapshot, in the order of both body forms
    (format 1.1's JSON array begins with them; a wire body's meta is them)."""
    return [
        event.id,
        event.type,
        event.lead_id,
        event.flow_id,
        event.entity_id,
        int(event.outcome),
        event.reason,
        event.duration_ms,
        event.integration,
        event.response_code,
        event.price,
    ]


class StoredEvent:
    """A committed event as its wire body holds it: the scalar fields for filters and
    scopes, the bytes of its answers, and a way to the decoded ``Event`` when values are
    needed (masking, exports)."""

    __slots__ = (
        "_body",
        "_changes_at",
        "_end",
        "_event_at",
        "_head_len",
        "_json_at",
        "_lead_at",
        "_meta",
        "account_id",
        "changes_base",
        "entity_id",
        "flow_id",
        "id",
        "lead_id",
        "outcome",
        "position",
        "recorded_at_ms",
        "seal",
        "timestamp_ms",
        "type",
    )

    def __init__(
        self, body: bytes, position: int, account_id: str, recorded_at_ms: int, timestamp_ms: int
    ) -> None:
        try:
            meta_len, event_len, head_len, json_at, lead_at, changes_len, base = WIRE_HEADER.unpack_from(body)
        except Exception as e:  # struct.error: shorter than its header
            raise BadRecord(f"wire body shorter than its header ({len(body)} bytes)") from e
        event_at = WIRE_HEADER.size + meta_len
        changes_at = event_at + event_len
        end = changes_at + changes_len
        if end > len(body) or not head_len <= json_at <= lead_at <= event_len:
            raise BadRecord(f"wire body lengths do not add up ({len(body)} bytes)")
        # Format 1.4: the chain block follows the changes (FORMAT.md, "Chain block").
        self.seal = chain.parse_block(body[end:]) if end < len(body) else None
        self._end = end
        try:
            meta = orjson.loads(body[WIRE_HEADER.size : event_at])
            self.id, self.type, self.lead_id, self.flow_id, self.entity_id, self.outcome = meta[:6]
        except (orjson.JSONDecodeError, ValueError, TypeError) as e:
            raise BadRecord(f"undecodable wire body fields: {e}") from e
        self._meta = meta
        self._body = body
        self._event_at = event_at
        self._changes_at = changes_at
        self._head_len = head_len
        self._json_at = json_at
        self._lead_at = lead_at
        self.changes_base = base
        self.position = position
        self.account_id = account_id
        self.recorded_at_ms = recorded_at_ms
        self.timestamp_ms = timestamp_ms

    @property
    def body(self) -> bytes:
        """The wire body as stored (decompressed): what a later body of the lead may be
        compressed against (format 1.3)."""
        return self._body

    def wire(self, include_lead: bool = True) -> bytes:
        """The serialized ``leadtrail.v1.Event`` with ``details_json``/``lead_json``."""
        start = self._event_at
        end = start + self._lead_at if not include_lead else self._changes_at
        return wireform.splice_event(
            self._body[start:end],
            self._head_len,
            self.recorded_at_ms,
            self.position,
            self.account_id.encode(),
        )

    def wire_structs(self, include_lead: bool = True) -> bytes:
        """The serialized ``leadtrail.v1.Event`` with ``details``/``lead`` as Structs."""
        start = self._event_at
        core = wireform.splice_event(
            self._body[start : start + self._json_at],
            self._head_len,
            self.recorded_at_ms,
            self.position,
            self.account_id.encode(),
        )
        details_json, lead_json = self.json_parts()
        parts = [core]
        if details_json:
            parts.append(_struct_field(b"\x82\x01", orjson.loads(details_json)))  # field 16
        if include_lead and lead_json:
            parts.append(_struct_field(b"\x8a\x01", orjson.loads(lead_json)))  # field 17
        return b"".join(parts)

    @property
    def changes(self) -> bytes:
        """The timeline changes against the event at ``changes_base`` (tagged
        ``TimelineStep.changes`` entries); ``changes_base == position``: against nothing."""
        return self._body[self._changes_at : self._end]

    @property
    def meta(self) -> list[Any]:
        """The scalar fields (``scalar_fields`` order), as stored."""
        return list(self._meta)

    def content_commitment(self) -> bytes | None:
        """The salted commitment to the content (reason, details, snapshot) the digest
        covers: computed from the salt, or the one stored once the content changed; None
        for an event written before the chain."""
        seal = self.seal
        if seal is None:
            return None
        if seal.kind == chain.COMMITTED:
            return seal.value
        details_json, lead_json = self.json_parts()
        return chain.commitment(seal.value, self._meta[6], details_json, lead_json)

    def digest(self) -> bytes | None:
        """The event's chain digest (FORMAT.md, "Digest"); None when it is not chained."""
        content = self.content_commitment()
        if content is None:
            return None
        return chain.digest(
            self.position, self.recorded_at_ms, self.timestamp_ms, self.account_id, self._meta, content
        )

    def json_parts(self) -> tuple[bytes, bytes]:
        """(details_json, lead_json), each b"" when empty."""
        start = self._event_at
        return (
            _value_of(self._body, start + self._json_at, start + self._lead_at),
            _value_of(self._body, start + self._lead_at, self._changes_at),
        )

    def lead(self) -> dict[str, Any]:
        lead_json = self.json_parts()[1]
        return orjson.loads(lead_json) if lead_json else {}

    def event(self, include_lead: bool = True) -> Event:
        """The decoded event."""
        meta = self._meta  # parsed once, when the record was read
        details_json, lead_json = self.json_parts()
        return Event(
            type=meta[1],
            lead_id=meta[2],
            flow_id=meta[3],
            id=meta[0],
            timestamp_ms=self.timestamp_ms,
            entity_id=meta[4],
            outcome=Outcome(meta[5]),
            reason=meta[6],
            duration_ms=meta[7],
            integration=meta[8],
            response_code=meta[9],
            price=meta[10],
            details=orjson.loads(details_json) if details_json else {},
            lead=orjson.loads(lead_json) if include_lead and lead_json else {},
            account_id=self.account_id,
            position=self.position,
            recorded_at_ms=self.recorded_at_ms,
            seal=self.seal,
        )


def of_event(event: Event) -> StoredEvent:
    """A decoded event (of a record in an older form) in the wire form, without changes:
    a timeline computes them on the read."""
    details_json = orjson.dumps(event.details) if event.details else b""
    lead_json = orjson.dumps(event.lead) if event.lead else b""
    body, _ = encode(event, details_json, lead_json, b"", NO_CHANGES)
    return StoredEvent(body, event.position, event.account_id, event.recorded_at_ms, event.timestamp_ms or 0)


def _value_of(body: bytes, start: int, end: int) -> bytes:
    """The value of the one length-delimited field (2-byte tag) in ``body[start:end]``."""
    if start == end:
        return b""
    at = start + 2
    size = shift = 0
    while True:
        byte = body[at]
        at += 1
        size |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if at + size != end:
        raise BadRecord("wire body JSON field lengths do not add up")
    return body[at:end]


def _struct_field(tag: bytes, data: Mapping[str, Any]) -> bytes:
    encoded = wireform.struct_bytes(data)
    n, size = len(encoded), bytearray()
    while n > 0x7F:
        size.append((n & 0x7F) | 0x80)
        n >>= 7
    size.append(n)
    return tag + bytes(size) + encoded


__all__ = ["NO_CHANGES", "StoredEvent", "encode", "of_event", "scalar_fields"]
