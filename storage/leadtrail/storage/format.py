"""Byte layout of segments and records: the constants shared by writer and reader.

FORMAT.md (beside the package) is the specification; this module is its only
implementation. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from crc32c import crc32c

SEGMENT_MAGIC = b"LTSEGMNT"
SEGMENT_VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sB3xQ")  # magic, version, reserved, base position
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size + 4  # + crc
SEGMENT_SUFFIX = ".log"
SEGMENT_NAME_DIGITS = 20

RECORD_MAGIC = b"LT"
RECORD_VERSION = 1
RECORD_HEADER = struct.Struct("<2sBBIQ")  # magic, version, kind|flags, length, position
RECORD_HEADER_SIZE = RECORD_HEADER.size + 4  # + crc
MAX_PAYLOAD = 8 * 1024 * 1024

KIND_EVENT = 1
KIND_SEAL = 2
KIND_MASK = 0x0F
FLAG_COMMIT = 0x80
FLAG_WRITE_END = 0x40
"""The last record of one write of the writer (1.5): where recovery tells the last,
unsynced write of a segment from the durable ones before it (recovery rule 1)."""
_KNOWN_FLAGS = FLAG_COMMIT | FLAG_WRITE_END

SEAL_PAYLOAD = struct.Struct("<IQQ")  # crc of everything before, event count, last position
SEAL_RECORD_SIZE = RECORD_HEADER_SIZE + SEAL_PAYLOAD.size

# recorded_at (u48 as u32 + u16), timestamp (the same), codec, dictionary id,
# positions back to the delta base (0: full snapshot), account length
EVENT_PREFIX = struct.Struct("<IHIHBHHB")
MAX_DELTA_BACK = 0xFFFF
MAX_DICTIONARY_ID = 0xFFFF
CODEC_PLAIN = 0
CODEC_ZSTD_DICT = 1
CODEC_ZSTD = 2
# What the writer uses since format 1.1: a zstd frame without its 4-byte magic
# number and without a dictionary id (the prefix names the dictionary), 8
# bytes less per record. Codecs 1 and 2 stay readable.
CODEC_ZSTD_DICT_BARE = 3
CODEC_ZSTD_BARE = 4
# Format 1.2: the body is the event's wire form (FORMAT.md, "Wire body") rather
# than a JSON array, plain or in a bare zstd frame with or without a dictionary.
# The snapshot is always whole (delta_back 0): every record decodes on its own.
CODEC_WIRE_PLAIN = 5
CODEC_WIRE_ZSTD_DICT_BARE = 6
CODEC_WIRE_ZSTD_BARE = 7
# Format 1.3: a wire body in a bare zstd frame compressed against the raw bytes of its
# base body, the wire body of the event delta_back positions back (the same lead's
# previous event in the segment), which the reader decodes first.
CODEC_WIRE_ZSTD_PREFIX_BARE = 8
WIRE_CODECS = frozenset(
    (CODEC_WIRE_PLAIN, CODEC_WIRE_ZSTD_DICT_BARE, CODEC_WIRE_ZSTD_BARE, CODEC_WIRE_ZSTD_PREFIX_BARE)
)
ZSTD_CODECS = frozenset(
    (
        CODEC_ZSTD_DICT,
        CODEC_ZSTD,
        CODEC_ZSTD_DICT_BARE,
        CODEC_ZSTD_BARE,
        CODEC_WIRE_ZSTD_DICT_BARE,
        CODEC_WIRE_ZSTD_BARE,
    )
)
DICTIONARY_CODECS = frozenset((CODEC_ZSTD_DICT, CODEC_ZSTD_DICT_BARE, CODEC_WIRE_ZSTD_DICT_BARE))
BARE_CODECS = frozenset(
    (CODEC_ZSTD_DICT_BARE, CODEC_ZSTD_BARE, CODEC_WIRE_ZSTD_DICT_BARE, CODEC_WIRE_ZSTD_BARE)
)
# The wire body's header: lengths of the scalar-field JSON array and of the event's
# protobuf bytes; within those bytes, where fields 4-6 go, where details_json and
# lead_json start; the length of the changes and the position they are against.
WIRE_HEADER = struct.Struct("<IIHIIIQ")


DICT_MAGIC_1_0 = b"LTZDICT1"
DICT_MAGIC = b"LTZDICT2"
DICT_HEADER_1_0 = struct.Struct("<8sII")  # magic, id, crc of the dictionary
DICT_HEADER = struct.Struct("<8sII16s")  # magic, id, crc of the dictionary, store digest


class BodyField(IntEnum):
    """The places of an event's fields in its JSON body (an array, in this order)."""

    ID = 0
    TYPE = 1
    LEAD_ID = 2
    FLOW_ID = 3
    ENTITY_ID = 4
    OUTCOME = 5
    REASON = 6
    DURATION_MS = 7
    INTEGRATION = 8
    RESPONSE_CODE = 9
    PRICE = 10
    DETAILS = 11
    LEAD = 12
    """The snapshot, or its delta against an earlier one of the lead."""


_U32 = struct.Struct("<I")


def segment_name(base: int) -> str:
    return f"{base:0{SEGMENT_NAME_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    stem, dot, suffix = name.partition(".")
    if dot and "." + suffix == SEGMENT_SUFFIX and len(stem) == SEGMENT_NAME_DIGITS and stem.isdigit():
        return int(stem)
    return None


def encode_segment_header(base: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, base)
    return head + _U32.pack(crc32c(head))


def decode_segment_header(data: bytes) -> int | None:
    """The base position, or None if the header is incomplete or damaged."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    head = data[: SEGMENT_HEADER.size]
    (crc,) = _U32.unpack_from(data, SEGMENT_HEADER.size)
    if crc32c(head) != crc:
        return None
    magic, version, base = SEGMENT_HEADER.unpack(head)
    if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION:
        return None
    return int(base)


def encode_record(kind_flags: int, position: int, payload: bytes | memoryview) -> bytes:
    head = RECORD_HEADER.pack(RECORD_MAGIC, RECORD_VERSION, kind_flags, len(payload), position)
    crc = crc32c(payload, crc32c(head))
    return b"".join((head, _U32.pack(crc), payload))


def mark_write_end(record: bytes) -> bytes:
    """``record`` (as ``encode_record`` made it) with FLAG_WRITE_END set and its CRC made anew."""
    head = bytearray(record[: RECORD_HEADER.size])
    head[3] |= FLAG_WRITE_END
    payload = memoryview(record)[RECORD_HEADER_SIZE:]
    crc = crc32c(payload, crc32c(head))
    return b"".join((head, _U32.pack(crc), payload))


@dataclass(frozen=True, slots=True)
class RecordHeader:
    kind: int
    commit: bool
    length: int
    position: int
    crc: int
    write_end: bool = False

    @property
    def size(self) -> int:
        return RECORD_HEADER_SIZE + self.length


class BadRecord(Exception):
    """A record fails a check; ``reason`` says which. Internal to recovery and reads."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def decode_record_header(data: bytes | memoryview, offset: int = 0) -> RecordHeader:
    """Parse and bound-check a header; the CRC is checked later with the payload."""
    if len(data) - offset < RECORD_HEADER_SIZE:
        raise BadRecord("short header")
    magic, version, kind_flags, length, position = RECORD_HEADER.unpack_from(data, offset)
    if magic != RECORD_MAGIC:
        raise BadRecord("bad magic")
    if version != RECORD_VERSION:
        raise BadRecord(f"unknown record version {version}")
    kind = kind_flags & KIND_MASK
    if kind not in (KIND_EVENT, KIND_SEAL) or kind_flags & ~(KIND_MASK | _KNOWN_FLAGS):
        raise BadRecord(f"unknown record kind 0x{kind_flags:02x}")
    if not 1 <= length <= MAX_PAYLOAD:
        raise BadRecord(f"length {length} out of bounds 1..{MAX_PAYLOAD}")
    (crc,) = _U32.unpack_from(data, offset + RECORD_HEADER.size)
    return RecordHeader(
        kind, bool(kind_flags & FLAG_COMMIT), length, position, crc, bool(kind_flags & FLAG_WRITE_END)
    )


def check_record(data: bytes | memoryview, offset: int, header: RecordHeader) -> memoryview:
    """The payload of a record whose header was decoded at ``offset``, CRC-checked."""
    start = offset + RECORD_HEADER_SIZE
    end = start + header.length
    if end > len(data):
        raise BadRecord("short payload")
    view = memoryview(data)
    crc = crc32c(view[start:end], crc32c(view[offset : offset + RECORD_HEADER.size]))
    if crc != header.crc:
        raise BadRecord("crc mismatch")
    return view[start:end]


def encode_seal(segment_bytes_crc: int, event_count: int, last_position: int) -> bytes:
    payload = SEAL_PAYLOAD.pack(segment_bytes_crc, event_count, last_position)
    return encode_record(KIND_SEAL | FLAG_COMMIT, last_position, payload)


def decode_seal(payload: bytes | memoryview) -> tuple[int, int, int]:
    if len(payload) != SEAL_PAYLOAD.size:
        raise BadRecord(f"seal payload of {len(payload)} bytes, expected {SEAL_PAYLOAD.size}")
    crc, count, last = SEAL_PAYLOAD.unpack(payload)
    return int(crc), int(count), int(last)
