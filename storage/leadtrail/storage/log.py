"""``EventLog``: the storage engine's one entry point.

It owns a data directory: it recovers the log on open (truncating a torn
tail, refusing or quarantining damage), brings the derived LMDB index up to
the log's end, runs the group-commit writer, and serves reads from the index
and the segments. See FORMAT.md for the bytes and DESIGN.md for the rules.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import lmdb
import orjson

from . import erasure, query, retention
from .codec import (
    Dictionaries,
    EventEncoder,
    EventPrefix,
    Trainer,
    apply_delta,
    decode_event,
    encode_body,
    snapshot_part,
)
from .erasure import PERSONAL, ErasureReport
from .errors import (
    ClosedError,
    CorruptionError,
    DataDirectoryError,
    LegalHoldError,
    MetadataFileError,
    NotWritableError,
    StorageError,
)
from .event import (
    DEFAULT_ACCOUNT,
    AppendResult,
    Event,
    EventFilter,
    Page,
    Progress,
    RetentionPolicy,
    RetentionReport,
    Stats,
    VerifyReport,
)
from .fields import FieldPolicies, FieldPolicy, personal_values, quotes_of, scrub
from .format import (
    KIND_EVENT,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    BadRecord,
    encode_seal,
    encode_segment_header,
    parse_segment_name,
    segment_name,
)
from .index import Index, Located
from .options import Options
from .segment import ScanResult, Segment, scan_bytes
from .ulid import new_event_id
from .validation import validate_batch
from .writer import ActiveSegment, CommitListener, GroupCommit, SegmentHost

_SNAPSHOT_CACHE = 4096
TEMP_SUFFIXES = (".tmp", ".compact")
RECORDED_AT_FLOOR_FILE = "recorded_at.json"
RETIRED_FILE = "retired.json"


class EventLog(SegmentHost):
    """A LeadTrail store on disk. Thread-safe; one process per data directory."""

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: Options | None = None) -> EventLog:
        return cls(os.fspath(path), options or Options())

    def __init__(self, path: str, options: Options) -> None:
        self.path = path
        self.options = options
        self._files = options.files
        self.log_dir = os.path.join(path, "log")
        self.quarantine_dir = os.path.join(path, "quarantine")
        self._closed = False
        self._lock_fd = -1
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._segments_lock = threading.Lock()
        self._swap_lock = threading.RLock()
        self._snapshots: OrderedDict[int, Mapping[str, Any]] = OrderedDict()
        self._snapshots_lock = threading.Lock()
        self._generation = 0
        self._visible = 0
        self._writer: GroupCommit | None = None
        self._trainer: Trainer | None = None
        self._index: Index | None = None
        self._maintenance = threading.Lock()
        try:
            self._open()
        except OSError as e:
            self._release()
            raise DataDirectoryError(
                f"data directory {path} cannot be opened: {e.strerror or e} ({e.filename or path})"
            ) from e
        except BaseException:
            self._release()
            raise

    # -- opening and recovery ---------------------------------------------

    def _open(self) -> None:
        for directory in (self.path, self.log_dir):
            os.makedirs(directory, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise DataDirectoryError(f"data directory {self.path} is in use by another process") from e
        self.store_id = self._store_id()
        # Leftovers of an interrupted compaction, quarantine or atomic file write:
        # the file they were to replace is still whole.
        for directory in (self.log_dir, self.path, self.quarantine_dir):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if name.endswith(TEMP_SUFFIXES):
                    os.remove(os.path.join(directory, name))
        self.dictionaries = Dictionaries(
            os.path.join(self.path, "dictionaries"),
            self._files,
            self.options.compression_level,
            self.options.dictionary_bytes,
            self.store_id,
        )
        self._policies = retention.load_policies(self.path)
        self.fields = FieldPolicies(self.path, self._files)
        rewritten = self._recover_segments()
        index_dir = os.path.join(self.path, "index")
        try:
            self._index = Index(index_dir, self.options.map_size)
        except StorageError:
            # Derived state that LMDB cannot read: throw it away and rebuild.
            shutil.rmtree(index_dir, ignore_errors=True)
            self._index = Index(index_dir, self.options.map_size)
        index = self._index
        last = self.last_position_on_disk
        if (
            rewritten
            or not index.matches(self.store_id)
            or index.high_water > last
            or index.meta("maintenance") is not None
        ):
            index.reset(self.store_id)
        self._index_tail(index.high_water)
        self._visible = last
        if self.options.read_only:
            return
        active = self._open_active()
        trainer = self._trainer = Trainer(
            self.dictionaries,
            self.options.dictionary_training_samples,
            self.options.retrain_ratio_decay,
            self._training_sample,
        )
        self._writer = GroupCommit(
            directory=self.log_dir,
            active=active,
            next_position=max(self._next_position(), 1),
            last_recorded_at=self._last_recorded_at(),
            segment_bytes=self.options.segment_bytes,
            fsync=self.options.fsync,
            files=self._files,
            index=index,
            encoder=EventEncoder(self.dictionaries, trainer),
            clock_ms=self.options.clock_ms,
            host=self,
        )

    def _training_sample(self, account_id: str, body: bytes) -> bytes:
        """A body as the dictionary trainer may see it: personal values, and quotes of
        them elsewhere in the body, blanked."""
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        classify = self.fields.classifier(account_id)
        part = fields[12]
        delta = isinstance(part, dict) and set(part) == {"s", "d"}
        values: set[str] = set()
        personal_values(part["s"] if delta else part, classify, values)
        personal_values(fields[11], classify, values)
        quoted = quotes_of(values)
        if delta:
            part = {"s": scrub(part["s"], classify, PERSONAL, "", quoted), "d": part["d"]}
        else:
            part = scrub(part, classify, PERSONAL, "", quoted)
        fields[11] = scrub(fields[11], classify, PERSONAL, "", quoted)
        fields[12] = part
        fields[6] = scrub(fields[6], classify, PERSONAL, "", quoted)
        return orjson.dumps(fields)

    def _store_id(self) -> bytes:
        path = os.path.join(self.path, "STORE_ID")
        try:
            with open(path, "rb") as f:
                value = f.read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = uuid.uuid4().hex.encode()
        self._files.write_file_atomically(path, value + b"\n")
        return value

    def _segment_bases(self) -> list[int]:
        bases = []
        for name in os.listdir(self.log_dir):
            base = parse_segment_name(name)
            if base is not None:
                bases.append(base)
        return sorted(bases)

    def _recover_segments(self) -> bool:
        """Check every segment; truncate a torn tail; refuse or quarantine damage.

        Returns True when a segment was rewritten (the index must be rebuilt).
        """
        bases = self._segment_bases()
        problems: list[str] = []
        damaged: list[tuple[Segment, ScanResult, bool]] = []
        previous_last = 0
        segments: list[Segment] = []
        for i, base in enumerate(bases):
            is_last = i == len(bases) - 1
            segment = Segment(self.log_dir, base)
            segments.append(segment)
            sealed = None if is_last else segment.check_seal()
            if sealed is not None:
                segment.sealed = True
                segment.event_count, segment.last_position = sealed
            else:
                data = segment.read_all()
                scan = scan_bytes(data, base, previous_last)
                found = self._describe(segment, scan, data, is_last)
                if not scan.header_ok and is_last and not scan.records:
                    # Crash while creating the segment: nothing was ever acknowledged in it.
                    self._rewrite_header(segment)
                    scan = scan_bytes(encode_segment_header(base), base)
                    found = []
                if found:
                    problems.extend(found)
                    damaged.append((segment, scan, is_last))
                elif is_last and scan.torn_tail:
                    self._truncate(segment, scan.commit_end)
                self._count(segment, scan)
            if segment.event_count and segment.last_position <= previous_last:
                problems.append(
                    f"segment {segment.name}: positions up to {segment.last_position} "
                    f"do not follow position {previous_last} of the previous segment"
                )
            previous_last = max(previous_last, segment.last_position)
        self._set_segments(segments)
        missing = self._missing_ranges(segments, {s.base for s, _, _ in damaged})
        problems.extend(
            f"positions {first}..{last} are missing before segment {name}: a segment file was "
            "removed outside retention"
            for first, last, name in missing
        )
        if problems and not self.options.quarantine:
            raise CorruptionError(problems)
        if missing:
            self._record_quarantine(
                [{"segment": name, "missing": [first, last]} for first, last, name in missing]
            )
            self.retire([(first, last) for first, last, _ in missing])
        for segment, scan, is_last in damaged:
            self._quarantine(segment, scan, is_last)
        return bool(damaged)

    # -- retired ranges ---------------------------------------------------------

    def retired_ranges(self) -> list[tuple[int, int]]:
        """Position ranges removed on purpose (retention, quarantine), as [first, last]."""
        try:
            with open(os.path.join(self.path, RETIRED_FILE), "rb") as f:
                return [(int(a), int(b)) for a, b in json.loads(f.read())]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as e:
            raise MetadataFileError(f"{RETIRED_FILE} is unreadable: {e}") from e

    def retire(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Record, durably and before they go, positions about to be removed on purpose.

        A position gap between segments that no retired range explains is a
        segment file lost outside the engine: corruption, not retention.
        """
        ranges = [(a, b) for a, b in ranges if a <= b]
        if not ranges:
            return
        merged: list[list[int]] = []
        for first, last in sorted([*self.retired_ranges(), *ranges]):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._files.write_file_atomically(os.path.join(self.path, RETIRED_FILE), json.dumps(merged).encode())

    def _missing_ranges(self, segments: list[Segment], damaged: set[int]) -> list[tuple[int, int, str]]:
        retired = self.retired_ranges()

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

    def _describe(self, segment: Segment, scan: ScanResult, data: bytes, is_last: bool) -> list[str]:
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

    def _count(self, segment: Segment, scan: ScanResult) -> None:
        events = [r for r in scan.records if r.kind == KIND_EVENT and r.offset < scan.commit_end]
        segment.event_count = len(events)
        segment.last_position = events[-1].position if events else 0
        segment.sealed = scan.sealed
        segment.size = scan.commit_end if not scan.damage else segment.size

    def _rewrite_header(self, segment: Segment) -> None:
        fd = self._files.open_for_append(segment.path)
        try:
            self._files.truncate(fd, 0)
            self._files.write(fd, encode_segment_header(segment.base))
            self._files.fsync(fd)
        finally:
            self._files.close(fd)
        segment.reopen()

    def _truncate(self, segment: Segment, size: int) -> None:
        fd = self._files.open_for_append(segment.path)
        try:
            self._files.truncate(fd, size)
            self._files.fsync(fd)
        finally:
            self._files.close(fd)
        segment.reopen()

    def _quarantine(self, segment: Segment, scan: ScanResult, is_last: bool) -> None:
        """Move damaged byte ranges aside and rewrite the segment without them."""
        data = segment.read_all()
        os.makedirs(self.quarantine_dir, exist_ok=True)
        keep = []
        kept_positions: set[int] = set()
        for r in scan.records:
            if r.kind != KIND_EVENT:
                continue
            # A snapshot stored as a delta cannot outlive its base: if the base
            # is in a damaged range, the event goes to quarantine with it.
            payload = data[r.offset + RECORD_HEADER_SIZE : r.offset + r.size]
            base = EventPrefix(payload, r.position).base_position
            if base and base not in kept_positions:
                continue
            keep.append(r)
            kept_positions.add(r.position)
        kept_ranges = [(r.offset, r.offset + r.size) for r in keep]
        removed: list[tuple[int, int]] = []
        cursor = SEGMENT_HEADER_SIZE
        for start, end in kept_ranges:
            if start > cursor:
                removed.append((cursor, start))
            cursor = end
        tail_end = len(data)
        if cursor < tail_end:
            removed.append((cursor, tail_end))
        if not scan.header_ok:
            removed.insert(0, (0, SEGMENT_HEADER_SIZE))
        report: list[dict[str, object]] = []
        for start, end in removed:
            chunk = data[start:end]
            if scan.sealed and end == tail_end and chunk[:2] == b"LT" and len(chunk) <= 40:
                continue  # the old seal, rewritten below
            bad_path = os.path.join(self.quarantine_dir, f"{segment.name}.{start}.bad")
            self._files.write_file_atomically(bad_path, chunk)
            report.append(
                {
                    "segment": segment.name,
                    "offset": start,
                    "bytes": end - start,
                    "file": os.path.basename(bad_path),
                }
            )
        body = bytearray(encode_segment_header(segment.base))
        for start, end in kept_ranges:
            body += data[start:end]
        # Every kept record stands on its own (COMMIT or covered by the seal).
        if not is_last or scan.sealed:
            from crc32c import crc32c

            last = keep[-1].position if keep else 0
            body += encode_seal(crc32c(bytes(body)), len(keep), last)
        # The report is durable before the damaged bytes leave the segment: a
        # crash after the rename below must never leave positions missing
        # without a record saying why.
        self._record_quarantine(report)
        if not is_last:
            # A dropped tail leaves a gap before the next segment: retired, so
            # that the next open does not take it for a lost segment file.
            following = [s.base for s in self._segments if s.base > segment.base]
            if following:
                last_kept = keep[-1].position if keep else segment.base - 1
                self.retire([(last_kept + 1, following[0] - 1)])
        tmp = segment.path + ".tmp"
        fd = self._files.open_for_append(tmp)
        try:
            self._files.truncate(fd, 0)
            self._files.write(fd, bytes(body))
            self._files.fsync(fd)
        finally:
            self._files.close(fd)
        self._files.rename(tmp, segment.path)
        self._files.fsync_dir(self.log_dir)
        segment.reopen()
        segment.event_count = len(keep)
        segment.last_position = keep[-1].position if keep else 0
        segment.sealed = not is_last or scan.sealed

    def _record_quarantine(self, entries: list[dict[str, object]]) -> None:
        os.makedirs(self.quarantine_dir, exist_ok=True)
        path = os.path.join(self.quarantine_dir, "REPORT.jsonl")
        try:
            with open(path, "rb") as f:
                existing = f.read()
        except FileNotFoundError:
            existing = b""
        lines = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
        self._files.write_file_atomically(path, existing + lines)

    def quarantined(self) -> list[str]:
        path = os.path.join(self.quarantine_dir, "REPORT.jsonl")
        if not os.path.exists(path):
            return []
        out: list[str] = []
        seen: set[tuple[str, int]] = set()
        with open(path) as f:
            for line in f:
                item = json.loads(line)
                # A quarantine interrupted after its report was written runs
                # again on the next open and reports the same range again.
                if "missing" in item:
                    first, last = item["missing"]
                    out.append(
                        f"positions {first}..{last} before segment {item['segment']}: the segment "
                        "file was missing (removed outside retention); their events are lost"
                    )
                    continue
                key = (item["segment"], item["offset"])
                if key in seen:
                    continue
                seen.add(key)
                out.append(
                    f"segment {item['segment']}: {item['bytes']} damaged bytes at offset "
                    f"{item['offset']} moved to quarantine/{item['file']}"
                )
        return out

    def _open_active(self) -> ActiveSegment:
        if not self._segments:
            path = os.path.join(self.log_dir, segment_name(1))
            fd = self._files.open_for_append(path)
            header = encode_segment_header(1)
            self._files.write(fd, header)
            self._files.fsync(fd)
            self._files.fsync_dir(self.log_dir)
            self._files.close(fd)
            self._set_segments([Segment(self.log_dir, 1)])
        last = self._segments[-1]
        from crc32c import crc32c

        data = last.read_all()
        fd = self._files.open_for_append(last.path)
        return ActiveSegment(
            base=last.base,
            fd=fd,
            size=len(data),
            crc=crc32c(data),
            event_count=last.event_count,
            last_position=last.last_position,
            sealed=last.sealed,
        )

    def _next_position(self) -> int:
        return self.last_position_on_disk + 1

    @property
    def last_position_on_disk(self) -> int:
        # An empty last segment still holds its place: retention may have
        # removed every event before it, and positions are never reused.
        last = max((s.last_position for s in self._segments), default=0)
        return max(last, self._segments[-1].base - 1) if self._segments else last

    def _last_recorded_at(self) -> int:
        last = max((s.last_position for s in self._segments), default=0)
        stored = self.recorded_at_of(last) if last else 0
        return max(stored, self.recorded_at_floor())

    def recorded_at_floor(self) -> int:
        """The commit time retention last saw; see ``save_recorded_at_floor``."""
        try:
            with open(os.path.join(self.path, RECORDED_AT_FLOOR_FILE), "rb") as f:
                return int(json.loads(f.read())["recorded_at_ms"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as e:
            raise MetadataFileError(f"{RECORDED_AT_FLOOR_FILE} is unreadable: {e}") from e

    def save_recorded_at_floor(self, recorded_at_ms: int) -> None:
        # Retention may remove the newest events, and with them the only record
        # of the latest commit time: keep it so recorded_at never goes backwards.
        data = json.dumps({"recorded_at_ms": recorded_at_ms}).encode()
        self._files.write_file_atomically(os.path.join(self.path, RECORDED_AT_FLOOR_FILE), data)

    def _index_tail(self, after: int, progress: Progress | None = None) -> None:
        index = self._require_index()
        segments = list(self._segments)
        for done, segment in enumerate(segments):
            if progress is not None:
                progress(done, len(segments))
            if segment.last_position <= after:
                continue
            batch: list[Located] = []
            for item in self._segment_events(segment, include_lead=True):
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
            progress(len(segments), len(segments))

    def _segment_events(
        self,
        segment: Segment,
        include_lead: bool = True,
        end: int | None = None,
        start: int = SEGMENT_HEADER_SIZE,
    ) -> Iterator[Located]:
        """Decode a segment front to back, resolving snapshot deltas as it goes.

        Started past the segment header, a delta whose base lies before
        ``start`` finds that base through the index.
        """
        by_position: dict[int, int] = {}
        latest: dict[int, Mapping[str, Any]] = {}
        last_of_lead: dict[tuple[str, str], int] = {}

        def base_snapshot(position: int) -> Mapping[str, Any]:
            known = latest.get(position)
            if known is not None:
                return known
            offset = by_position.get(position)
            if offset is None and start > SEGMENT_HEADER_SIZE:
                with self.read_txn() as txn:
                    return self._snapshot_at(txn, segment, position)
            if offset is None:
                raise BadRecord(f"delta base {position} is not an earlier event of this segment")
            return self._snapshot_from_record(segment, offset, position, by_position.get)

        try:
            for offset, header, payload in segment.records(start=start, end=end):
                if header.kind != KIND_EVENT:
                    continue
                by_position[header.position] = offset
                event = decode_event(payload, header.position, self.dictionaries, base_snapshot, True)
                key = (event.account_id, event.lead_id)
                old = last_of_lead.get(key)
                if old is not None:
                    latest.pop(old, None)
                last_of_lead[key] = header.position
                latest[header.position] = event.lead
                raw = len(encode_body(event, event.lead))
                if not include_lead:
                    event.lead = {}  # decoded here: nobody else holds it
                yield Located(event, segment.base, offset, raw)
        except BadRecord as e:
            raise CorruptionError([f"segment {segment.name}: {e.reason}"]) from e

    def _snapshot_from_record(
        self, segment: Segment, offset: int, position: int, locate: Callable[[int], int | None]
    ) -> Mapping[str, Any]:
        header, payload = segment.read_record(offset)
        if header.position != position:
            raise BadRecord(f"record at offset {offset} holds position {header.position}, not {position}")
        base, part = snapshot_part(payload, position, self.dictionaries)
        if not base:
            return dict(part)
        base_offset = locate(base)
        if base_offset is None:
            raise BadRecord(f"delta base {base} of position {position} not found")
        return apply_delta(self._snapshot_from_record(segment, base_offset, base, locate), part)

    # -- the segment list (shared with the writer thread) --------------------

    def _set_segments(self, segments: list[Segment]) -> None:
        with self._segments_lock:
            self._segments = sorted(segments, key=lambda s: s.base)
            self._bases = [s.base for s in self._segments]

    def segment_for(self, position: int) -> Segment | None:
        bases = self._bases
        i = bisect.bisect_right(bases, position) - 1
        if i < 0:
            return None
        segments = self._segments
        return segments[i] if i < len(segments) and segments[i].base == bases[i] else None

    def segment_created(self, base: int) -> None:
        self._set_segments([*self._segments, Segment(self.log_dir, base)])

    def segment_sealed(self, base: int, size: int, event_count: int, last_position: int) -> None:
        segment = self.segment_for(base)
        if segment is not None and segment.base == base:
            segment.sealed = True
            segment.size = size
            segment.event_count = event_count
            segment.last_position = last_position

    def segment_grew(self, base: int, size: int) -> None:
        segment = self.segment_for(base)
        if segment is not None and segment.base == base:
            segment.size = size
            writer = self._writer
            if writer is not None:
                segment.event_count = writer.active.event_count
                segment.last_position = writer.active.last_position
                self._visible = writer.next_position - 1

    def remove_segment_file(self, segment: Segment) -> None:
        """Used by retention: forget and delete a whole segment."""
        self._set_segments([s for s in self._segments if s.base != segment.base])
        segment.close()
        self._files.remove(segment.path)
        self._files.fsync_dir(self.log_dir)

    # -- appends --------------------------------------------------------------

    def submit(self, events: Sequence[Event]) -> Future[list[AppendResult]]:
        """Validate and queue a batch; the future resolves once it is durable."""
        writer = self._require_writer()
        leads_json = validate_batch(events, self.options)
        prepared = [e if e.id else _named(e) for e in events]
        if not prepared:
            done: Future[list[AppendResult]] = Future()
            done.set_result([])
            return done
        return writer.submit(prepared, leads_json)

    def append(self, events: Sequence[Event]) -> list[AppendResult]:
        return self.submit(events).result()

    def add_commit_listener(self, listener: CommitListener) -> None:
        """``listener(events)`` runs on the writer thread after each durable commit."""
        self._require_writer().listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        writer = self._writer
        if writer is not None and listener in writer.listeners:
            writer.listeners.remove(listener)

    @property
    def writable(self) -> bool:
        return self._writer is not None and self._writer.failure is None and not self._closed

    @property
    def last_position(self) -> int:
        return self._visible

    # -- reads ----------------------------------------------------------------

    def read_txn(self) -> lmdb.Transaction:
        return self._require_index().env.begin()

    def get(self, event_id: str, account_id: str = DEFAULT_ACCOUNT) -> Event | None:
        from .ulid import is_valid_id

        if not isinstance(event_id, str) or not is_valid_id(event_id):
            return None
        index = self._require_index()
        with index.env.begin() as txn:
            position = index.position_of(txn, account_id, event_id)
            if position is None:
                return None
            event = self.event_at(txn, position)
        return event if event is not None and event.account_id == account_id else None

    def event_at(self, txn: lmdb.Transaction, position: int, include_lead: bool = True) -> Event | None:
        """The event at ``position`` as the index of ``txn`` knows it."""
        for attempt in range(2):
            try:
                return self._read_event(txn, position, include_lead)
            except BadRecord as e:
                if attempt:
                    segment = self.segment_for(position)
                    name = segment.name if segment else "?"
                    raise CorruptionError(
                        [f"segment {name}: record of position {position} is damaged ({e.reason})"]
                    ) from e
                # A compaction may have swapped the file under us: wait for it and look again.
                with self._swap_lock:
                    txn = self._require_index().env.begin()
        return None

    def _read_event(self, txn: lmdb.Transaction, position: int, include_lead: bool) -> Event | None:
        segment = self.segment_for(position)
        if segment is None:
            return None
        index = self._require_index()
        generation = self._generation
        offset = index.offset_of(txn, segment.base, position)
        if offset is None:
            return None
        header, payload = segment.read_record(offset)
        if header.position != position or header.kind != KIND_EVENT:
            raise BadRecord(f"offset {offset} holds position {header.position}, not {position}")

        def base_snapshot(base: int) -> Mapping[str, Any]:
            return self._snapshot_at(txn, segment, base)

        event = decode_event(payload, position, self.dictionaries, base_snapshot, include_lead)
        if include_lead:
            self._remember(position, event.lead, generation)
            event.lead = dict(event.lead)  # the remembered snapshot stays ours; the event is new
        return event

    def _snapshot_at(self, txn: lmdb.Transaction, segment: Segment, position: int) -> Mapping[str, Any]:
        with self._snapshots_lock:
            known = self._snapshots.get(position)
            if known is not None:
                self._snapshots.move_to_end(position)
                return known
        index = self._require_index()
        generation = self._generation

        def locate(p: int) -> int | None:
            return index.offset_of(txn, segment.base, p)

        offset = locate(position)
        if offset is None:
            raise BadRecord(f"delta base {position} is missing from the index")
        snapshot = self._snapshot_from_record(segment, offset, position, locate)
        self._remember(position, snapshot, generation)
        return snapshot

    def _remember(self, position: int, snapshot: Mapping[str, Any], generation: int) -> None:
        with self._snapshots_lock:
            if generation != self._generation:
                return  # read from a file rewritten since (erasure): not to be served again
            self._snapshots[position] = snapshot
            if len(self._snapshots) > _SNAPSHOT_CACHE:
                self._snapshots.popitem(last=False)

    def forget_snapshots(self) -> None:
        with self._snapshots_lock:
            self._snapshots.clear()
            self._generation += 1

    def recorded_at_of(self, position: int) -> int:
        return self.stored_event(position).recorded_at_ms

    def stored_event(self, position: int) -> Event:
        with self.read_txn() as txn:
            event = self.event_at(txn, position, include_lead=False)
        if event is None:
            raise StorageError(f"position {position} is not in the index")
        return event

    def timeline(self, lead_id: str, account_id: str = DEFAULT_ACCOUNT) -> list[Event]:
        return query.timeline(self, lead_id, account_id)

    def lead_events(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        start: tuple[int, int] | None = None,
        limit: int = 1000,
        descending: bool = False,
        include_lead: bool = True,
    ) -> list[Event]:
        """At most ``limit`` events of a lead in (timestamp, position) order (reversed when
        ``descending``), beginning at the key ``start`` = (timestamp_ms, position), inclusive."""
        return query.lead_events(self, lead_id, account_id, start, limit, descending, include_lead)

    def scan(
        self,
        filter: EventFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
        include_lead: bool = True,
    ) -> Page:
        return query.scan(self, filter or EventFilter(), after, limit, descending, include_lead)

    @property
    def rewrites(self) -> int:
        """Counts segment rewrites (erasure, retention): what was read before a change of
        this number may hold content no longer in the store."""
        return self._generation

    def read_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[Event]:
        """Every visible event with a position >= ``position``, in position order."""
        produced = 0
        while True:
            # A segment rewritten under the reader (an erasure) leaves it with bytes and
            # delta bases of the old file: it starts again, from the event it is at.
            rewrites = self._generation
            for event in self._read_from(position, None if limit is None else limit - produced):
                if self._generation != rewrites:
                    position = event.position
                    break
                yield event
                produced += 1
            else:
                return

    def _read_from(self, position: int, limit: int | None) -> Iterator[Event]:
        produced = 0
        visible = self._visible
        for segment in list(self._segments):
            if segment.last_position and segment.last_position < position:
                continue
            if segment.base > visible:
                break
            end = segment.size
            start = SEGMENT_HEADER_SIZE
            if position > segment.base:
                # Seek through the index instead of decoding the segment from its
                # start: a subscriber resuming mid-segment reads only what it needs.
                with self.read_txn() as txn:
                    found = self._require_index().offset_at_or_after(txn, segment.base, position)
                start = found if found is not None else start
            for item in self._segment_events(segment, include_lead=True, end=end, start=start):
                event = item.event
                if event.position < position:
                    continue
                if event.position > visible:
                    return
                yield event
                produced += 1
                if limit is not None and produced >= limit:
                    return

    # -- administration -------------------------------------------------------

    def stats(self) -> Stats:
        index = self._require_index()
        count = index.event_count
        log_bytes = sum(_size(s.path) for s in list(self._segments))
        index_bytes = _tree_size(os.path.join(self.path, "index"))
        dictionary_bytes = self.dictionaries.disk_bytes()
        disk = _tree_size(self.path)
        raw = index.raw_bytes
        with index.env.begin() as txn:
            accounts = index.account_events(txn)
        return Stats(
            event_count=count,
            last_position=self._visible,
            segment_count=len(self._segments),
            disk_bytes=disk,
            log_bytes=log_bytes,
            index_bytes=index_bytes,
            dictionary_bytes=dictionary_bytes,
            raw_bytes=raw,
            bytes_per_event=(log_bytes + index.disk_bytes() + dictionary_bytes) / count if count else 0.0,
            compression_ratio=raw / log_bytes if log_bytes and raw else 0.0,
            dictionaries=len(self.dictionaries.ids()),
            fsync_policy=str(self.options.fsync),
            writable=self.writable,
            account_events=accounts,
        )

    def verify(self, *, progress: Progress | None = None) -> VerifyReport:
        """Re-read every record of every segment; name each damaged range.

        ``progress(done, total)`` is called with segments checked."""
        problems: list[str] = []
        checked = 0
        previous_last = 0
        segments = list(self._segments)
        index = self._require_index()
        if progress is not None:
            progress(0, len(segments))
        for i, segment in enumerate(segments):
            if progress is not None and i:
                progress(i, len(segments))
            is_last = i == len(segments) - 1
            data = os.pread(segment.fd, segment.size, 0) if is_last else segment.read_all()
            scan = scan_bytes(data, segment.base, previous_last)
            problems.extend(self._describe(segment, scan, data, is_last))
            if scan.sealed and not is_last and segment.check_seal() is None:
                problems.append(f"segment {segment.name}: seal checksum does not match the segment bytes")
            try:
                with index.env.begin() as txn:
                    for item in self._segment_events(segment, include_lead=True, end=scan.commit_end):
                        checked += 1
                        e = item.event
                        if index.position_of(txn, e.account_id, e.id) != e.position:
                            problems.append(
                                f"index: event {e.id} at position {e.position} is not indexed (run reindex)"
                            )
                        previous_last = max(previous_last, e.position)
            except CorruptionError as e:
                problems.extend(e.problems)
        if progress is not None and segments:
            progress(len(segments), len(segments))
        return VerifyReport(records_checked=checked, problems=problems, quarantined=self.quarantined())

    def reindex(self, *, progress: Progress | None = None) -> int:
        """Rebuild every index from the log; returns the number of events indexed.

        ``progress(done, total)`` is called with segments indexed."""
        self._require_index()
        with self._maintenance:
            if self._writer is not None:
                return int(self._writer.call(lambda: self._reindex_now(progress)).result())
            return self._reindex_now(progress)

    def _reindex_now(self, progress: Progress | None = None) -> int:
        index = self._require_index()
        index.reset(self.store_id)
        self._index_tail(0, progress)
        self.forget_snapshots()
        return index.event_count

    def set_retention_policy(self, policy: RetentionPolicy) -> None:
        with self._maintenance:
            self._policies = retention.save_policy(self.path, self._files, self._policies, policy)

    def retention_policies(self) -> list[RetentionPolicy]:
        return sorted(self._policies.values(), key=lambda p: p.account_id)

    def set_field_policy(self, policy: FieldPolicy) -> FieldPolicy:
        with self._maintenance:
            return self.fields.set(policy)

    def erase_lead(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        requested_by: str = "",
        reason: str = "",
        progress: Progress | None = None,
    ) -> ErasureReport | None:
        """Erase the personal data of a lead's events recorded so far (see erasure.py) and
        record an ``audit.erased`` event; None when the account has no such lead.

        Refused with ``LegalHoldError`` while the account is under a legal hold.
        ``progress(done, total)`` is called with segments rewritten."""
        self._require_writer()
        with self._maintenance:
            held = self._policies.get(account_id)
            if held is not None and held.legal_hold:
                raise LegalHoldError(
                    f"account {account_id!r} is under a legal hold: nothing of it may be erased "
                    "until it is lifted"
                )
            return erasure.erase_lead(self, account_id, lead_id, requested_by, reason, progress)

    def apply_retention(
        self,
        now_ms: int | None = None,
        account_id: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> RetentionReport:
        """Remove what the policies expire at ``now_ms``; only ``account_id``'s events when given.

        ``progress(done, total)`` is called with segments swept."""
        with self._maintenance:
            now = self.options.clock_ms() if now_ms is None else now_ms
            policies = self._policies
            if account_id is not None:
                policies = {a: p for a, p in policies.items() if a == account_id}
            return retention.apply(self, policies, now, progress)

    @property
    def index(self) -> Index:
        return self._require_index()

    @property
    def trainer(self) -> Trainer | None:
        return self._trainer

    @property
    def writer(self) -> GroupCommit | None:
        return self._writer

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)

    @property
    def swap_lock(self) -> threading.RLock:
        return self._swap_lock

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._trainer is not None:
            # A dictionary being trained is written before the store lets go of its files.
            self._trainer.close()
        if self._index is not None:
            with contextlib.suppress(lmdb.Error):
                self._index.close()
        for segment in self._segments:
            segment.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writer(self) -> GroupCommit:
        if self._closed:
            raise ClosedError("the store is closed")
        if self._writer is None:
            raise NotWritableError("the store was opened read-only")
        return self._writer

    def _require_index(self) -> Index:
        if self._closed or self._index is None:
            raise ClosedError("the store is closed")
        return self._index


def _named(event: Event) -> Event:
    """``event`` with an id assigned by the store."""
    named = event.copy()
    named.id = new_event_id()
    return named


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _tree_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += _size(os.path.join(root, name))
    return total
