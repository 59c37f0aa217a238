"""Recovery on open, and the check that ``verify`` repeats at any time.

Every segment is checked (a sealed one by its seal's checksum, the last one
record by record): a torn tail of the last segment, or a torn last write (sectors
of it lost, later ones on disk), is cut at its last COMMIT record, a segment whose
creation was interrupted gets its header back, and any other damage, or a position
gap that ``retired.json`` does not explain, refuses the open, or with quarantine is
moved aside. FORMAT.md lists the rules; ``describe_damage`` words each finding the
same way for both callers.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from .datadir import DataDirectory
from .errors import CorruptionError, StorageError
from .event import Progress, VerifyReport
from .fingerprints import LeadPrints
from .format import KIND_EVENT, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, encode_segment_header
from .fs import Files
from .index import Index, Located
from .index_compaction import remove_leftovers
from .quarantine import Quarantine
from .segment import ScanResult, Segment, scan_bytes
from .segment_list import SegmentList, segment_bases

SECTOR = 512
"""The unit a disk writes whole: a power cut keeps or loses each sector of a write."""
_RECORDED_AT = struct.Struct("<IH")
"""An event payload's first bytes (FORMAT.md, "Event payload")."""


class SegmentEvents(Protocol):
    """A segment's events front to back, up to byte ``end``."""

    def __call__(
        self, segment: Segment, include_lead: bool = True, end: int | None = None
    ) -> Iterator[Located]: ...


def recover(directory: DataDirectory, segments: SegmentList, quarantine: Quarantine | None) -> bool:
    """Check every segment; truncate a torn tail; refuse (no ``quarantine``) or quarantine
    damage. Returns True when a segment was rewritten (the index must be rebuilt)."""
    files = directory.files
    bases = segment_bases(directory.log_dir)
    problems: list[str] = []
    damaged: list[tuple[Segment, ScanResult, bool]] = []
    previous_last = 0
    found_segments: list[Segment] = []
    for i, base in enumerate(bases):
        is_last = i == len(bases) - 1
        segment = Segment(directory.log_dir, base)
        found_segments.append(segment)
        sealed = None if is_last else segment.check_seal()
        if sealed is not None:
            segment.sealed = True
            segment.event_count, segment.last_position = sealed
        else:
            data = segment.read_all()
            scan = scan_bytes(data, base, previous_last)
            cut = _torn_write(scan, data) if is_last else None
            if cut is not None:
                # Sectors of the last, unsynced write that never reached the disk: a torn
                # tail like any other, cut back to the last COMMIT record before them.
                data = data[:cut]
                scan = scan_bytes(data, base, previous_last)
                scan.torn_tail = True
            found = describe_damage(segment, scan, data, is_last)
            if not scan.header_ok and is_last and not scan.records:
                # Crash while creating the segment: nothing was ever acknowledged in it.
                _rewrite_header(files, segment)
                scan = scan_bytes(encode_segment_header(base), base)
                found = []
            if found:
                problems.extend(found)
                damaged.append((segment, scan, is_last))
            elif is_last and scan.torn_tail:
                _truncate(files, segment, scan.commit_end)
            _count(segment, scan)
        if segment.event_count and segment.last_position <= previous_last:
            problems.append(
                f"segment {segment.name}: positions up to {segment.last_position} "
                f"do not follow position {previous_last} of the previous segment"
            )
        previous_last = max(previous_last, segment.last_position)
    segments.replace(found_segments)
    missing = _missing_ranges(directory, found_segments, {s.base for s, _, _ in damaged})
    problems.extend(
        f"positions {first}..{last} are missing before segment {name}: a segment file was "
        "removed outside retention"
        for first, last, name in missing
    )
    if problems and quarantine is None:
        raise CorruptionError(problems)
    assert quarantine is not None or not (missing or damaged)
    if missing and quarantine is not None:
        quarantine.record_missing(missing)
    for segment, scan, is_last in damaged:
        assert quarantine is not None
        following = [s.base for s in found_segments if s.base > segment.base]
        quarantine.move_aside(segment, scan, is_last, following[0] if following else None)
    return bool(damaged)


def _missing_ranges(
    directory: DataDirectory, segments: list[Segment], damaged: set[int]
) -> list[tuple[int, int, str]]:
    retired = directory.retired_ranges()

    def explained(first: int, last: int) -> bool:
        for a, b in retired:
            if a <= first <= b:
                first = b + 1
                if first > last:
                    return True
        return first > last

    missing = []
    expected = 1
    after_damage = False
    for segment in segments:
        if segment.base > expected and not after_damage and not explained(expected, segment.base - 1):
            missing.append((expected, segment.base - 1, segment.name))
        expected = max(expected, segment.base, segment.last_position + 1)
        after_damage = segment.base in damaged  # its lost tail is reported as damage
    return missing


def _torn_write(scan: ScanResult, data: bytes) -> int | None:
    """Where to cut the last segment when its damage is what a power cut during its last,
    unsynced write leaves (FORMAT.md, recovery rule 1); None when it is corruption.

    A group is one write (each request in it ending in its COMMIT record), made durable by
    one fsync before the next group is written. Sectors of one write reach the disk in any
    order, and a sector that did not reads as zeros (the file was extended over it). So
    the damage is a torn write only when every damaged range holds a sector of zeros and
    after it at most one record ends a write (FLAG_WRITE_END; COMMIT in a segment written
    before 1.5): the record that ends the file. A valid seal, or another write's end after
    the damage, means the damaged bytes were fsynced before that write: acknowledged data,
    never dropped here.
    """
    if not scan.damage or not scan.header_ok or scan.sealed:
        return None
    first = scan.damage[0][0]
    cut = SEGMENT_HEADER_SIZE
    for r in scan.records:
        if r.offset < first and r.commit:
            cut = r.offset + r.size
    # Where a write may have ended after the damage: records marked as a write's last (1.5);
    # in a segment with none (written before 1.5), every COMMIT record. The one allowed
    # ends the file, so it is its last record (a seal was refused above).
    marked = any(r.write_end for r in scan.records)
    ends = [r for r in scan.records if r.offset >= first and (r.write_end if marked else r.commit)]
    if len(ends) > 1 or (ends and ends[0].offset + ends[0].size != len(data)):
        return None
    # One write is one group, committed at one time: every event record of the write
    # around the damage (after the last write's end before it) has the same recorded_at.
    # Two times say two writes, so the damage lies in one that an fsync made durable
    # before the other was written (its end among the damaged bytes).
    start = SEGMENT_HEADER_SIZE
    for r in scan.records:
        if r.offset < first and (r.write_end if marked else r.commit):
            start = r.offset + r.size
    times = {_recorded_at(data, r.offset) for r in scan.records if r.offset >= start}
    if len(times) > 1:
        return None
    for i, (start, end) in enumerate(scan.damage):
        if not _zero_sector(data, start, end, partial=i == 0 and start == cut):
            return None
    return cut


def _recorded_at(data: bytes, offset: int) -> int:
    lo, hi = _RECORDED_AT.unpack_from(data, offset + RECORD_HEADER_SIZE)
    return int(hi) << 32 | int(lo)


def _zero_sector(data: bytes, start: int, end: int, partial: bool) -> bool:
    """Whether ``data[start:end]`` holds a whole 512-byte-aligned sector of zeros, or with
    ``partial`` (the damage starts where the last write started) zeros from ``start`` to the
    end of its sector: that sector's durable beginning stayed, its unwritten rest is zeros."""
    s = start - start % SECTOR
    if s < start and not partial:
        s += SECTOR
    while s + SECTOR <= end:
        lo = max(s, start)
        if data[lo : s + SECTOR].count(0) == s + SECTOR - lo:
            return True
        s += SECTOR
    return False


def describe_damage(segment: Segment, scan: ScanResult, data: bytes, is_last: bool) -> list[str]:
    """Each problem a scan of ``segment`` found, naming offsets and positions."""
    found = []
    if not scan.header_ok and (scan.records or len(data) > SEGMENT_HEADER_SIZE or not is_last):
        found.append(f"segment {segment.name}: damaged segment header at offset 0")
    for start, end in scan.damage:
        before = [r.position for r in scan.records if r.offset < start and r.kind == KIND_EVENT]
        after = [r.position for r in scan.records if r.offset >= end and r.kind == KIND_EVENT]
        lo = before[-1] + 1 if before else segment.base
        hi = after[0] - 1 if after else lo
        found.append(
            f"segment {segment.name}: damaged bytes at offset {start}..{end} "
            f"({end - start} bytes, positions {lo}..{hi})"
        )
    if not is_last and not scan.sealed and not scan.damage:
        found.append(
            f"segment {segment.name}: closed segment does not end in a valid seal "
            f"(bad bytes from offset {scan.valid_end})"
        )
    if scan.sealed and not is_last and scan.torn_tail:
        found.append(f"segment {segment.name}: bytes after the seal at offset {scan.valid_end}")
    return found


def _count(segment: Segment, scan: ScanResult) -> None:
    events = [r for r in scan.records if r.kind == KIND_EVENT and r.offset < scan.commit_end]
    segment.event_count = len(events)
    segment.last_position = events[-1].position if events else 0
    segment.sealed = scan.sealed
    segment.size = scan.commit_end if not scan.damage else segment.size


def _rewrite_header(files: Files, segment: Segment) -> None:
    fd = files.open_for_append(segment.path)
    try:
        files.truncate(fd, 0)
        files.write(fd, encode_segment_header(segment.base))
        files.fsync(fd)
    finally:
        files.close(fd)
    segment.reopen()


def _truncate(files: Files, segment: Segment, size: int) -> None:
    fd = files.open_for_append(segment.path)
    try:
        files.truncate(fd, size)
        files.fsync(fd)
    finally:
        files.close(fd)
    segment.reopen()


def open_index(
    index_dir: str,
    map_size: int,
    store_id: bytes,
    rewritten: bool,
    segments: SegmentList,
    prints: LeadPrints | None = None,
) -> Index:
    """The index as it can be trusted: emptied (to be rebuilt from the log) when it is
    another store's, another version's, past the log's end, caught mid-maintenance, or
    when recovery rewrote a segment; thrown away when LMDB cannot read it."""
    remove_leftovers(index_dir)
    try:
        index = Index(index_dir, map_size, prints=prints)
    except StorageError:
        shutil.rmtree(index_dir, ignore_errors=True)
        index = Index(index_dir, map_size, prints=prints)
    if (
        rewritten
        or not index.matches(store_id)
        or index.high_water > segments.last_position_on_disk
        or index.meta("maintenance") is not None
        or (prints is not None and index.meta("prints") != prints.key_id)
    ):
        index.reset(store_id)
    return index


def index_tail(
    index: Index, segments: SegmentList, events: SegmentEvents, after: int, progress: Progress | None = None
) -> None:
    """Bring the index up to the log's end from position ``after`` on."""
    found = segments.all()
    for done, segment in enumerate(found):
        if progress is not None:
            progress(done, len(found))
        if segment.last_position <= after:
            continue
        batch: list[Located] = []
        for item in events(segment, True):
            if item.event.position <= after:
                continue
            batch.append(item)
            if len(batch) >= 5000:
                index.add(batch, batch[-1].event.position)
                batch = []
        if batch:
            index.add(batch, batch[-1].event.position)
    index.sync()
    if progress is not None:
        progress(len(found), len(found))


def rebuild_index(
    path: str,
    *,
    map_size: int,
    store_id: bytes,
    segments: SegmentList,
    events: SegmentEvents,
    progress: Progress | None = None,
    prints: LeadPrints | None = None,
) -> None:
    """A whole new index of the log, written at ``path`` (its lead search too, with ``prints``)."""
    fresh = Index(path, map_size, prints=prints)
    try:
        fresh.reset(store_id)
        index_tail(fresh, segments, events, 0, progress)
    finally:
        fresh.close()


def verify(
    segments: SegmentList,
    reading: Callable[[], AbstractContextManager[Index]],
    events: SegmentEvents,
    quarantine: Quarantine,
    progress: Progress | None = None,
) -> VerifyReport:
    """Re-read every record of every segment; name each damaged range."""
    problems: list[str] = []
    checked = 0
    previous_last = 0
    found = segments.all()
    if progress is not None:
        progress(0, len(found))
    for i, segment in enumerate(found):
        if progress is not None and i:
            progress(i, len(found))
        is_last = i == len(found) - 1
        data = segment.read_all(segment.size if is_last else None)
        scan = scan_bytes(data, segment.base, previous_last)
        problems.extend(describe_damage(segment, scan, data, is_last))
        if scan.sealed and not is_last and segment.check_seal() is None:
            problems.append(f"segment {segment.name}: seal checksum does not match the segment bytes")
        try:
            with reading() as index, index.env.begin() as txn:
                for item in events(segment, True, scan.commit_end):
                    checked += 1
                    e = item.event
                    if index.position_of(txn, e.account_id, e.id) != e.position:
                        problems.append(
                            f"index: event {e.id} at position {e.position} is not indexed (run reindex)"
                        )
                    previous_last = max(previous_last, e.position)
        except CorruptionError as e:
            problems.extend(e.problems)
    if progress is not None and found:
        progress(len(found), len(found))
    return VerifyReport(records_checked=checked, problems=problems, quarantined=quarantine.report())
