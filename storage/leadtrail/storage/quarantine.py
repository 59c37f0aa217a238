"""Quarantine: damaged byte ranges moved aside so that a store with mid-log damage opens.

Only with ``Options(quarantine=True)``. Each damaged range of a segment goes
to ``quarantine/<segment>.<offset>.bad``, a line per range to
``quarantine/REPORT.jsonl`` (durable *before* the segment changes), and the
segment is rewritten, sealed, without them. ``verify`` lists the ranges from
then on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

from crc32c import crc32c

from .codec import EventPrefix
from .format import (
    KIND_EVENT,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    SEAL_RECORD_SIZE,
    SEGMENT_HEADER_SIZE,
    encode_seal,
    encode_segment_header,
)
from .fs import Files
from .segment import ScanResult, Segment

REPORT_FILE = "REPORT.jsonl"

Retire = Callable[[Sequence[tuple[int, int]]], None]


class Quarantine:
    def __init__(self, directory: str, files: Files, retire: Retire) -> None:
        self.directory = directory
        self._files = files
        self._retire = retire

    def record(self, entries: list[dict[str, object]]) -> None:
        """Append lines to the report, durably."""
        if not os.path.isdir(self.directory):
            # Its entry made durable before the report and the bytes moved aside go in it.
            self._files.make_directory(self.directory)
        path = os.path.join(self.directory, REPORT_FILE)
        try:
            with open(path, "rb") as f:
                existing = f.read()
        except FileNotFoundError:
            existing = b""
        lines = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
        self._files.write_file_atomically(path, existing + lines)

    def record_missing(self, missing: Sequence[tuple[int, int, str]]) -> None:
        """Segment files lost outside retention: reported, and their positions retired."""
        self.record([{"segment": name, "missing": [first, last]} for first, last, name in missing])
        self._retire([(first, last) for first, last, _ in missing])

    def report(self) -> list[str]:
        """Every range moved aside so far, in words."""
        path = os.path.join(self.directory, REPORT_FILE)
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

    def move_aside(self, segment: Segment, scan: ScanResult, is_last: bool, next_base: int | None) -> None:
        """Move damaged byte ranges aside and rewrite the segment without them."""
        data = segment.read_all()
        if not os.path.isdir(self.directory):
            # Its entry made durable before the report and the bytes moved aside go in it.
            self._files.make_directory(self.directory)
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
            if (
                scan.sealed
                and end == tail_end
                and chunk[: len(RECORD_MAGIC)] == RECORD_MAGIC
                and len(chunk) <= SEAL_RECORD_SIZE
            ):
                continue  # the old seal, rewritten below
            bad_path = os.path.join(self.directory, f"{segment.name}.{start}.bad")
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
            last = keep[-1].position if keep else 0
            body += encode_seal(crc32c(bytes(body)), len(keep), last)
        # The report is durable before the damaged bytes leave the segment: a
        # crash after the rename below must never leave positions missing
        # without a record saying why.
        self.record(report)
        if not is_last and next_base is not None:
            # A dropped tail leaves a gap before the next segment: retired, so
            # that the next open does not take it for a lost segment file.
            last_kept = keep[-1].position if keep else segment.base - 1
            self._retire([(last_kept + 1, next_base - 1)])
        self._files.write_file_atomically(segment.path, bytes(body))
        segment.reopen()
        segment.event_count = len(keep)
        segment.last_position = keep[-1].position if keep else 0
        segment.sealed = not is_last or scan.sealed
