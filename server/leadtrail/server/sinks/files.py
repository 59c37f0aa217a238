"""The files target: rolling JSONL, CSV or Parquet files in a directory (a data warehouse's
landing zone).

A file holds consecutive handed-on events and is named by the first and last position it
holds: ``events-<first:020d>-<last:020d>.<jsonl|csv|parquet>``, so that names sort in
position order. A file is complete or absent: it is written under a hidden temporary name
(``.events-….tmp``), fsynced, renamed, and the directory fsynced, all through the storage
``Files`` seam; a crash leaves at most a temporary file, which the next ``open`` removes and
which a loader listing ``events-*`` never sees.

A file is completed once it holds ``rotate_events`` events, or (``flush``) once its first
event was handed on ``rotate_seconds`` ago; until then its events are pending
(``pending_from``) and kept in memory, so that a failed write is retried with all of them.
They are kept compact: every ``SLICE_EVENTS`` of them are encoded at once (JSONL or CSV
bytes, or an Arrow table that becomes one Parquet row group), a few hundred bytes an event
instead of the event objects (``rotate_events`` bounds the rest). On ``open`` the target
learns from the names in the directory the last position its files hold and drops every
event handed again up to it: a redelivery after a restart never puts an event in two files.

The contents are those of an export of the same format (``export.ExportShape``): JSON lines,
CSV with a header row (``fields`` chooses columns), or Parquet (``parquet.py``: typed
columns, ``fields`` adds ``lead.<name>`` columns).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from leadtrail.server.export import ExportShape
from leadtrail.server.parquet import ParquetStream, table
from leadtrail.server.status import ServiceError
from leadtrail.storage import Event
from leadtrail.storage.fs import OS_FILES, Files
from leadtrail.v1 import query_pb2

from .model import FilesSpec
from .target import TargetError

PREFIX = "events-"
TMP_SUFFIX = ".tmp"
SLICE_EVENTS = 10_000
"""Events of the open file encoded at a time: one Parquet row group."""
COMPLETE_NAME = re.compile(r"^events-(\d{20})-(\d{20})\.(jsonl|csv|parquet)$")
TEMPORARY_NAME = re.compile(r"^\.events-.*\.tmp$")
ERROR_MAX = 300


def file_name(first: int, last: int, suffix: str) -> str:
    return f"{PREFIX}{first:020d}-{last:020d}.{suffix}"


def held_range(name: str) -> tuple[int, int] | None:
    """The first and last position a complete file of this name holds (None: not such a file)."""
    match = COMPLETE_NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


class FilesTarget:
    def __init__(
        self,
        spec: FilesSpec,
        directory: str,
        files: Files = OS_FILES,
        clock_ms: Callable[[], int] | None = None,
        slice_events: int = SLICE_EVENTS,
    ) -> None:
        self.spec = spec
        self.directory = directory
        self._files = files
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._slice_events = slice_events
        self._shape: ExportShape | None = None
        self._held = 0
        """The last position held in a complete file (learned from the directory on open)."""
        # The open file: handed on, not yet in a complete file.
        self._count = 0
        self._first = self._last = 0
        """Its first and last position (when ``_count``)."""
        self._opened_at_ms = 0
        """When its first event was handed on (``rotate_seconds`` runs from then)."""
        self._slices: list[Any] = []
        """Its earlier events, encoded: bytes (JSONL, CSV) or Arrow tables (Parquet)."""
        self._loose: list[Event] = []
        """Its latest events, fewer than a slice."""

    # -- Target ----------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            file_format = query_pb2.ExportFormat.ValueType(self.spec.format)
            request = query_pb2.ExportRequest(format=file_format, fields=self.spec.fields)
            self._shape = ExportShape.of(request)
        except ServiceError as e:
            raise TargetError(f"files target: {e}") from None
        try:
            self._held = await asyncio.to_thread(self._prepare_directory)
        except OSError as e:
            raise TargetError(self._error("cannot prepare the directory", e)) from None
        self._drop_open()

    async def deliver(self, events: Sequence[Event]) -> None:
        fresh = [e for e in events if e.position > (self._last if self._count else self._held)]
        while True:
            # A full file first: after a failed write the sink calls again with the same events.
            if self._count >= self.spec.rotate_events:
                await self._complete()
            if not fresh:
                return
            room = self.spec.rotate_events - self._count
            taken, fresh = fresh[:room], fresh[room:]
            if not self._count:
                self._first = taken[0].position
                self._opened_at_ms = self._clock_ms()
            self._loose.extend(taken)
            self._count += len(taken)
            self._last = taken[-1].position
            while len(self._loose) >= self._slice_events:
                part = self._loose[: self._slice_events]
                self._slices.append(await asyncio.to_thread(self._encode_slice, part))
                del self._loose[: len(part)]

    def pending_from(self) -> int | None:
        return self._first if self._count else None

    async def flush(self, now_ms: int) -> None:
        if self._count and now_ms - self._opened_at_ms >= self.spec.rotate_seconds * 1000:
            await self._complete()

    async def close(self) -> None:
        # The open file's events are after the sink's saved position: handed over again.
        self._drop_open()

    # -- files -----------------------------------------------------------------------------------

    def _drop_open(self) -> None:
        self._count = 0
        self._slices = []
        self._loose = []

    def _prepare_directory(self) -> int:
        """Create the directory, remove what a crash left half-written; the last position held."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        held = 0
        removed = False
        for name in os.listdir(self.directory):
            if TEMPORARY_NAME.match(name):
                self._files.remove(os.path.join(self.directory, name))
                removed = True
            elif (span := held_range(name)) is not None:
                held = max(held, span[1])
        if removed:
            self._files.fsync_dir(self.directory)
        return held

    def _encode_slice(self, events: list[Event]) -> Any:
        assert self._shape is not None
        if self._shape.parquet:
            return table(events, self._shape.columns)
        return self._shape.encode(events)

    async def _complete(self) -> None:
        """Write the open file as a complete file."""
        try:
            await asyncio.to_thread(self._write)
        except OSError as e:
            raise TargetError(self._error("cannot write a file", e)) from None
        self._held = self._last
        self._drop_open()

    def _write(self) -> None:
        shape = self._shape
        assert shape is not None
        name = file_name(self._first, self._last, self.spec.format.suffix)
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f".{name}{TMP_SUFFIX}")
        files = self._files
        parquet = ParquetStream(shape.columns) if shape.parquet else None
        fd = files.open_for_append(tmp)
        try:
            files.truncate(fd, 0)  # a leftover of an earlier attempt at the same file
            files.write(fd, shape.header() if parquet is None else parquet.header())
            for part in self._slices:
                files.write(fd, part if parquet is None else parquet.encode_table(part))
            if self._loose:
                files.write(fd, shape.encode(self._loose) if parquet is None else parquet.encode(self._loose))
            if parquet is not None:
                files.write(fd, parquet.footer())
            files.fsync(fd)
        except BaseException:
            files.close(fd)
            _remove_quietly(files, tmp)
            raise
        files.close(fd)
        files.rename(tmp, path)
        files.fsync_dir(self.directory)

    def _error(self, what: str, e: OSError) -> str:
        reason = e.strerror or str(e)
        return f"files target {self.spec.directory!r}: {what} ({reason})"[:ERROR_MAX]


def _remove_quietly(files: Files, path: str) -> None:
    try:
        files.remove(path)
    except OSError:
        pass  # the next open removes it
