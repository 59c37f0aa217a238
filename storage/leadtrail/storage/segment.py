"""One segment file of the log: reading records, recovering, sealing.

Segments are immutable once sealed. The active (last) segment is appended to
only by the writer thread; readers use ``pread`` on their own descriptor and
only ever look at offsets that an index or a scan handed them.

Read descriptors come from a bounded cache (``Descriptors``, like RocksDB's table
cache): a store of a terabyte in 64 MiB segments would otherwise hold 16k of them
open for its life, far past the usual soft limit of 1024.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
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


class DescriptorSlot:
    """A segment file's place in a ``Descriptors`` cache: its descriptor while one is open,
    and the reads holding it."""

    __slots__ = ("closing", "fd", "leases", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.leases = 0
        self.closing = False
        """Close once the last lease ends (the segment was closed during a read)."""


class Descriptors:
    """Read descriptors of segment files: each opened on first use, the least recently used
    closed when more than ``limit`` are open.

    A reader leases a descriptor for the span of its preads (``acquire`` .. ``release``); a
    leased descriptor is never closed, so the cache holds more than ``limit`` while more
    than ``limit`` are leased at once. A lease is what keeps a number from being closed and
    then reused for another file between a reader taking it and its pread.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[int, DescriptorSlot] = OrderedDict()
        """Slots with a descriptor open, by id, the least recently leased first."""
        self._released: deque[DescriptorSlot] = deque()
        """Leases ended but not yet counted: see ``release``."""

    def __len__(self) -> int:
        return len(self._open)

    def acquire(self, slot: DescriptorSlot) -> int:
        with self._lock:
            if self._released:
                self._settle()
            fd = slot.fd
            if fd < 0:
                fd = slot.fd = os.open(slot.path, os.O_RDONLY | os.O_CLOEXEC)
                slot.closing = False
                self._open[id(slot)] = slot
            else:
                self._open.move_to_end(id(slot))
            slot.leases += 1
            if len(self._open) > self.limit or self._released:
                self._settle()
            return fd

    def release(self, slot: DescriptorSlot) -> None:
        # Never waits for the lock: a lease also ends when the garbage collector closes an
        # abandoned generator, which may happen on this very thread while it holds the lock
        # (any allocation in ``acquire``). Then the lease is counted by whoever holds the
        # lock next; until then the descriptor only stays open a little longer.
        if self._lock.acquire(blocking=False):
            try:
                slot.leases -= 1
                if not slot.leases and slot.closing:
                    self._close(slot)
                if len(self._open) > self.limit or self._released:
                    self._settle()
            finally:
                self._lock.release()
        else:
            self._released.append(slot)

    def close(self, slot: DescriptorSlot) -> None:
        """Close the slot's descriptor now, or when its last lease ends."""
        with self._lock:
            self._settle()
            if slot.leases:
                slot.closing = True
            elif slot.fd >= 0:
                self._close(slot)

    def replace_file(self, slot: DescriptorSlot, fresh: int) -> None:
        """Put the file open at ``fresh`` behind the slot's descriptor, if one is open."""
        with self._lock:  # no eviction closes it (and its number is reused) in between
            if slot.fd >= 0:
                # The new file takes the old one's descriptor number at once (dup2 is atomic):
                # a reader between taking ``fd`` and its pread sees the old file or the new one,
                # never a closed descriptor or another file. A record read at an old offset in
                # the new file fails its check and the read is retried.
                os.dup2(fresh, slot.fd, inheritable=False)

    def close_all(self) -> None:
        with self._lock:
            self._settle()
            for slot in list(self._open.values()):
                if slot.leases:
                    slot.closing = True
                else:
                    self._close(slot)

    def _settle(self) -> None:
        """Count the leases ended since, then close what is over the limit (lock held)."""
        released = self._released
        while released:
            slot = released.popleft()
            slot.leases -= 1
            if slot.leases == 0 and slot.closing:
                self._close(slot)
        excess = len(self._open) - self.limit
        if excess <= 0:
            return
        for slot in list(self._open.values()):
            if not slot.leases:
                self._close(slot)
                excess -= 1
                if excess <= 0:
                    return

    def _close(self, slot: DescriptorSlot) -> None:
        fd, slot.fd = slot.fd, -1
        slot.closing = False
        self._open.pop(id(slot), None)
        if fd >= 0:
            os.close(fd)


UNCACHED = Descriptors(0)
"""For a segment no list holds yet (recovery's first look): a descriptor per lease."""


class Segment:
    """A segment file, read through a descriptor leased from a ``Descriptors`` cache."""

    def __init__(self, directory: str, base: int, descriptors: Descriptors = UNCACHED) -> None:
        self.base = base
        self.path = os.path.join(directory, segment_name(base))
        self.size = os.stat(self.path).st_size
        self.sealed = False
        self.event_count = 0
        self.last_position = 0
        self._descriptors = descriptors
        self.slot = DescriptorSlot(self.path)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def fd(self) -> int:
        """The descriptor open now (-1: none); reads lease one through ``descriptor()``."""
        return self.slot.fd

    def use(self, descriptors: Descriptors) -> None:
        """Take descriptors from ``descriptors`` from now on (a list adopting the segment)."""
        if descriptors is self._descriptors:
            return
        self._descriptors.close(self.slot)  # now, unless a read holds it
        if self.slot.leases:
            return  # that read releases it to the cache it came from: the segment stays there
        self._descriptors = descriptors

    @contextmanager
    def descriptor(self) -> Iterator[int]:
        """A descriptor of the file, open (and of this file) until the block ends."""
        descriptors = self._descriptors
        fd = descriptors.acquire(self.slot)
        try:
            yield fd
        finally:
            descriptors.release(self.slot)

    def close(self) -> None:
        self._descriptors.close(self.slot)

    def reopen(self) -> None:
        """Pick up a file that was replaced by rename (compaction, quarantine): once this
        returns, no read uses the old file."""
        fresh = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._descriptors.replace_file(self.slot, fresh)
            self.size = os.fstat(fresh).st_size
        finally:
            os.close(fresh)

    def file_size(self) -> int:
        """The size of the file as it is now (``size`` is what readers may read)."""
        with self.descriptor() as fd:
            return os.fstat(fd).st_size

    def read_all(self, size: int | None = None) -> bytes:
        """The first ``size`` bytes of the file (all of them: None)."""
        with self.descriptor() as fd:
            return os.pread(fd, os.fstat(fd).st_size if size is None else size, 0)

    def read_record(self, offset: int) -> tuple[RecordHeader, memoryview]:
        """Read and check one record; raises BadRecord when it does not check out."""
        descriptors = self._descriptors
        fd = descriptors.acquire(self.slot)
        try:
            data = os.pread(fd, _READ_AHEAD, offset)
            header = decode_record_header(data)
            if header.size > len(data):
                if header.length > MAX_PAYLOAD:
                    raise BadRecord("length out of bounds")
                data = os.pread(fd, header.size, offset)
        finally:
            descriptors.release(self.slot)
        return header, check_record(data, 0, header)

    def records(
        self, start: int = SEGMENT_HEADER_SIZE, end: int | None = None
    ) -> Iterator[tuple[int, RecordHeader, memoryview]]:
        """Every record from ``start`` to ``end`` in order, read in large chunks.

        The descriptor stays leased while the generator is suspended; closing the
        generator (or its collection, when it is dropped unfinished) ends the lease."""
        stop = self.size if end is None else end
        offset = start
        buffer = b""
        buffer_start = offset
        # A reader that stops early (a page of a subscription, a scan's few records) should
        # not pay for megabytes it never looks at: chunks start small and double.
        chunk = _FIRST_CHUNK
        if offset >= stop:
            return
        descriptors = self._descriptors
        fd = descriptors.acquire(self.slot)
        try:
            while offset < stop:
                rel = offset - buffer_start
                if len(buffer) - rel < RECORD_HEADER_SIZE:
                    buffer = os.pread(fd, max(min(chunk, stop - offset), RECORD_HEADER_SIZE), offset)
                    buffer_start, rel, chunk = offset, 0, min(chunk * 2, _CHUNK)
                header = decode_record_header(buffer, rel)
                if len(buffer) - rel < header.size:
                    buffer = os.pread(fd, max(min(chunk, stop - offset), header.size), offset)
                    buffer_start, rel, chunk = offset, 0, min(chunk * 2, _CHUNK)
                payload = check_record(buffer, rel, header)
                yield offset, header, payload
                offset += header.size
        finally:
            descriptors.release(self.slot)

    def check_seal(self) -> tuple[int, int] | None:
        """(event count, last position) if the segment ends in a seal matching its bytes."""
        with self.descriptor() as fd:
            size = os.fstat(fd).st_size
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
                chunk = os.pread(fd, min(_CHUNK, tail_offset - offset), offset)
                if not chunk:
                    return None
                running = crc32c(chunk, running)
                offset += len(chunk)
            if running != crc:
                return None
            return count, last


def whole_file_crc(data: bytes | memoryview) -> int:
    return crc32c(data)
