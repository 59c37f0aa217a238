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
(``pending_from``) and kept in memory, so that a failed write is retried with all of them
(``rotate_events`` bounds that memory). On ``open`` the target learns from the names in
the directory the last position its files hold and drops every event handed again up to
it: a redelivery after a restart never puts an event in two files.

The contents are those of an export of the same format (``export.ExportShape``): JSON lines,
CSV with a header row (``fields`` chooses columns), or Parquet (``parquet.py``: typed
columns, ``fields`` adds ``lead.<name>`` columns), written in slices of ``SLICE_EVENTS``
(a Parquet row group each).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Sequence

from leadtrail.server.export import ExportShape
from leadtrail.server.status import ServiceError
from leadtrail.storage import Event
from leadtrail.storage.fs import OS_FILES, Files
from leadtrail.v1 import query_pb2

from .model import FilesSpec
from .target import TargetError

PREFIX = "events-"
TMP_SUFFIX = ".tmp"
SLICE_EVENTS = 10_000
"""Events encoded at a time while a file is written: one Parquet row group."""
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
    ) -> None:
        self.spec = spec
        self.directory = directory
        self._files = files
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._shape: ExportShape | None = None
        self._held = 0
        """The last position held in a complete file (learned from the directory on open)."""
        self._open: list[Event] = []
        """The open file's events: handed on, not yet in a complete file."""
        self._opened_at_ms = 0
        """When the open file's first event was handed on (``rotate_seconds`` runs from then)."""

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
        self._open = []

    async def deliver(self, events: Sequence[Event]) -> None:
        last = self._open[-1].position if self._open else self._held
        fresh = [e for e in events if e.position > last]
        if fresh and not self._open:
            self._opened_at_ms = self._clock_ms()
        self._open.extend(fresh)
        while len(self._open) >= self.spec.rotate_events:
            await self._complete(self.spec.rotate_events)

    def pending_from(self) -> int | None:
        return self._open[0].position if self._open else None

    async def flush(self, now_ms: int) -> None:
        if self._open and now_ms - self._opened_at_ms >= self.spec.rotate_seconds * 1000:
            await self._complete(len(self._open))

    async def close(self) -> None:
        # The open file's events are before the sink's saved position: handed over again.
        self._open = []

    # -- files -----------------------------------------------------------------------------------

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

    async def _complete(self, count: int) -> None:
        """Write the open file's first ``count`` events as one complete file."""
        events = self._open[:count]
        try:
            await asyncio.to_thread(self._write, events)
        except OSError as e:
            raise TargetError(self._error("cannot write a file", e)) from None
        self._held = events[-1].position
        del self._open[:count]
        if self._open:
            self._opened_at_ms = self._clock_ms()

    def _write(self, events: list[Event]) -> None:
        assert self._shape is not None
        name = file_name(events[0].position, events[-1].position, self.spec.format.suffix)
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f".{name}{TMP_SUFFIX}")
        files = self._files
        encoder = self._shape.encoder()
        fd = files.open_for_append(tmp)
        try:
            files.truncate(fd, 0)  # a leftover of an earlier attempt at the same file
            files.write(fd, encoder.header())
            for start in range(0, len(events), SLICE_EVENTS):
                files.write(fd, encoder.encode(events[start : start + SLICE_EVENTS]))
            files.write(fd, encoder.footer())
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
