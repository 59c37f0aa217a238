"""One segment file of the log: reading records, recovering, sealing.

Segments are immutable once sealed. The active (last) segment is appended to
only by the writer thread; readers use ``pread`` on their own descriptor and
only ever look at offsets that an index or a scan handed them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from crc32c import crc32c

from .format import (
    KIND_EVENT,
    KIND_SEAL,
    MAX_PAYLOAD,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    RECORD_VERSION,
    SEAL_RECORD_SIZE,
    SEGMENT_HEADER_SIZE,
    BadRecord,
    RecordHeader,
    check_record,
    decode_record_header,
    decode_seal,
    decode_segment_header,
    segment_name,
)

_READ_AHEAD = 4096
_CHUNK = 4 * 1024 * 1024
_FIRST_CHUNK = 64 * 1024


@dataclass(slots=True)
class RecordRef:
    offset: int
    position: int
    kind: int
    commit: bool
    size: int
    write_end: bool = False
    """The last record of one of the writer's writes (1.5)."""


@dataclass(slots=True)
class ScanResult:
    """What a record-by-record parse of a segment found."""

    header_ok: bool
    records: list[RecordRef] = field(default_factory=list)
    valid_end: int = SEGMENT_HEADER_SIZE
    """End of the last record that parsed (committed or not)."""
    commit_end: int = SEGMENT_HEADER_SIZE
    """End of the last COMMIT record: where a torn tail is cut."""
    damage: list[tuple[int, int]] = field(default_factory=list)
    """(start, end) byte ranges that fail checks and are followed by valid records."""
    torn_tail: bool = False
    sealed: bool = False


def scan_bytes(data: bytes, base: int, start_after: int = 0) -> ScanResult:
    """Parse a whole segment held in memory, classifying every failure.

    A bad record with a later valid record (larger position) behind it is
    damage; with none behind it, it is a torn tail.
    """
    result = ScanResult(header_ok=decode_segment_header(data) == base)
    offset = SEGMENT_HEADER_SIZE
    last_position = max(start_after, base - 1)
    end = len(data)
    while offset < end:
        try:
            header = decode_record_header(data, offset)
            check_record(data, offset, header)
            if header.kind == KIND_EVENT and header.position <= last_position:
                raise BadRecord(f"position {header.position} not after {last_position}")
        except BadRecord:
            resume = _find_next_valid(data, offset + 1, last_position)
            if resume is None:
                result.torn_tail = True
                break
            result.damage.append((offset, resume))
            offset = resume
            continue
        ref = RecordRef(offset, header.position, header.kind, header.commit, header.size, header.write_end)
        result.records.append(ref)
        offset += header.size
        result.valid_end = offset
        if header.commit:
            result.commit_end = offset
        if header.kind == KIND_EVENT:
            last_position = header.position
        elif header.kind == KIND_SEAL:
            result.sealed = True
            if offset != end:
                resume = _find_next_valid(data, offset, last_position)
                if resume is None:
                    result.torn_tail = True
                else:
                    result.damage.append((offset, resume))
            break
    if result.valid_end != result.commit_end:
        result.torn_tail = True
    return result


def _find_next_valid(data: bytes, start: int, last_position: int) -> int | None:
    """The offset of the next record that fully checks out, searching by magic."""
    probe = RECORD_MAGIC + bytes([RECORD_VERSION])
    offset = start
    while True:
        offset = data.find(probe, offset)
        if offset < 0:
            return None
        try:
            header = decode_record_header(data, offset)
            check_record(data, offset, header)
            if header.position > last_position:
                return offset
        except BadRecord:
            pass
        offset += 1


class Segment:
    """A segment file, open for reading."""

    def __init__(self, directory: str, base: int) -> None:
        self.base = base
        self.path = os.path.join(directory, segment_name(base))
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size
        self.sealed = False
        self.event_count = 0
        self.last_position = 0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def reopen(self) -> None:
        """Pick up a file that was replaced by rename (compaction, quarantine)."""
        fresh = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if self.fd < 0:
            self.fd = fresh
        else:
            # The new file takes the old one's descriptor number at once (dup2 is atomic): a
            # reader between reading ``fd`` and its pread sees the old file or the new one,
            # never a closed descriptor or, once the number is reused, another file. A record
            # read at an old offset in the new file fails its check and the read is retried.
            os.dup2(fresh, self.fd, inheritable=False)
            os.close(fresh)
        self.size = os.fstat(self.fd).st_size

    def read_all(self) -> bytes:
        return os.pread(self.fd, os.fstat(self.fd).st_size, 0)

    def read_record(self, offset: int) -> tuple[RecordHeader, memoryview]:
        """Read and check one record; raises BadRecord when it does not check out."""
        data = os.pread(self.fd, _READ_AHEAD, offset)
        header = decode_record_header(data)
        if header.size > len(data):
            if header.length > MAX_PAYLOAD:
                raise BadRecord("length out of bounds")
            data = os.pread(self.fd, header.size, offset)
        return header, check_record(data, 0, header)

    def records(
        self, start: int = SEGMENT_HEADER_SIZE, end: int | None = None
    ) -> Iterator[tuple[int, RecordHeader, memoryview]]:
        """Every record from ``start`` to ``end`` in order, read in large chunks."""
        stop = self.size if end is None else end
        offset = start
        buffer = b""
        buffer_start = offset
        # A reader that stops early (a page of a subscription, a scan's few records) should
        # not pay for megabytes it never looks at: chunks start small and double.
        chunk = _FIRST_CHUNK
        while offset < stop:
            rel = offset - buffer_start
            if len(buffer) - rel < RECORD_HEADER_SIZE:
                buffer = os.pread(self.fd, max(min(chunk, stop - offset), RECORD_HEADER_SIZE), offset)
                buffer_start, rel, chunk = offset, 0, min(chunk * 2, _CHUNK)
            header = decode_record_header(buffer, rel)
            if len(buffer) - rel < header.size:
                buffer = os.pread(self.fd, max(min(chunk, stop - offset), header.size), offset)
                buffer_start, rel, chunk = offset, 0, min(chunk * 2, _CHUNK)
            payload = check_record(buffer, rel, header)
            yield offset, header, payload
            offset += header.size

    def check_seal(self) -> tuple[int, int] | None:
        """(event count, last position) if the segment ends in a seal matching its bytes."""
        size = os.fstat(self.fd).st_size
        if size < SEGMENT_HEADER_SIZE + SEAL_RECORD_SIZE:
            return None
        tail_offset = size - SEAL_RECORD_SIZE
        try:
            header, payload = self.read_record(tail_offset)
            if header.kind != KIND_SEAL:
                return None
            crc, count, last = decode_seal(payload)
        except BadRecord:
            return None
        running = 0
        offset = 0
        while offset < tail_offset:
            chunk = os.pread(self.fd, min(_CHUNK, tail_offset - offset), offset)
            if not chunk:
                return None
            running = crc32c(chunk, running)
            offset += len(chunk)
        if running != crc:
            return None
        return count, last


def whole_file_crc(data: bytes | memoryview) -> int:
    return crc32c(data)
