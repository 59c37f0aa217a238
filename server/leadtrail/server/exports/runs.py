"""One run of a job: the matching events of its window written into one complete file.

The file is written under a temporary name (``<name>.partial``), a page of events at
a time (memory stays bounded whatever the window holds), fsynced, renamed to its
final name and the directory fsynced, every step through the storage ``Files``
seam. Until the job book lists it, a file does not exist for anyone: a crash at any
step leaves a file the book does not list, which the next start removes.

Blocking: runs on the read pool.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from leadtrail.server.crashpoints import crash_point
from leadtrail.server.export import ExportShape
from leadtrail.server.scan import matching_pages
from leadtrail.storage import Event, EventFilter, EventLog, Files
from leadtrail.v1 import query_pb2

from .encoding import FileEncoder, Sink
from .model import ExportJob, Format

PARTIAL_SUFFIX = ".partial"
CRASH_WRITING = "export.writing"
"""Crash point: the first page of a run is written, the file is not yet complete."""


class RunStopped(Exception):
    """The server is stopping: the run ended between two pages, its file unwritten."""


@dataclass(frozen=True)
class Written:
    rows: int
    bytes: int
    sha256: str


class _Lines:
    """JSONL and CSV: the Export RPC's encoding (``ExportShape``)."""

    def __init__(self, shape: ExportShape) -> None:
        self.shape = shape

    def begin(self, sink: Sink) -> None:
        if header := self.shape.header():
            sink.write(header)

    def add(self, sink: Sink, events: list[Event]) -> None:
        sink.write(self.shape.encode(events))

    def end(self, sink: Sink) -> None:
        pass


def encoder(job: ExportJob) -> tuple[FileEncoder, bool]:
    """The job's encoder, and whether it needs the lead snapshots."""
    if job.format is Format.PARQUET:
        from .parquet_files import ParquetEncoder  # pyarrow loads only for Parquet jobs

        return ParquetEncoder(job.fields), True
    shape = ExportShape.of(query_pb2.ExportRequest(format=int(job.format), fields=job.fields))  # type: ignore[arg-type]
    return _Lines(shape), shape.include_lead


def file_name(job: ExportJob, created_at_ms: int) -> str:
    """``<job>-<UTC time to the millisecond>.<format>``, e.g. ``daily-20261203T120000123Z.jsonl``."""
    at = datetime.fromtimestamp(created_at_ms / 1000, UTC)
    return f"{job.name}-{at:%Y%m%dT%H%M%S}{created_at_ms % 1000:03d}Z.{job.format.label}"


def window_filter(job: ExportJob, from_ms: int, to_ms: int) -> EventFilter:
    """The job's filter within the run's window ``[from_ms, to_ms)`` on ``timestamp``."""
    f = job.filter
    start = from_ms if f.start_ms is None else max(f.start_ms, from_ms)
    end = to_ms if f.end_ms is None else min(f.end_ms, to_ms)
    return replace(f, start_ms=start, end_ms=max(start, end))


class _HashingFile:
    """The temporary file, written through the seam, its bytes counted and hashed."""

    def __init__(self, files: Files, fd: int) -> None:
        self.files = files
        self.fd = fd
        self.size = 0
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> None:
        if data:
            self.files.write(self.fd, data)
            self.size += len(data)
            self.digest.update(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass


def write_run(
    log: EventLog,
    job: ExportJob,
    path: str,
    from_ms: int,
    to_ms: int,
    shown: Callable[[Event], Event],
    files: Files,
    stopping: Callable[[], bool] = lambda: False,
) -> Written:
    """Write the run's file at ``path`` (complete, or absent under that name); ``stopping`` is
    asked between pages (``RunStopped``)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode, include_lead = encoder(job)
    tmp = path + PARTIAL_SUFFIX
    fd = files.open_for_append(tmp)
    rows = 0
    try:
        files.truncate(fd, 0)  # a leftover of an earlier attempt
        out = _HashingFile(files, fd)
        encode.begin(out)
        for page in matching_pages(log, window_filter(job, from_ms, to_ms), include_lead):
            if stopping():
                raise RunStopped()
            if page:
                encode.add(out, [shown(e) for e in page])
                rows += len(page)
                crash_point(CRASH_WRITING)
        encode.end(out)
        files.fsync(fd)
    except BaseException:
        files.close(fd)
        _remove_quietly(files, tmp)
        raise
    files.close(fd)
    files.rename(tmp, path)
    files.fsync_dir(os.path.dirname(path))
    return Written(rows=rows, bytes=out.size, sha256=out.digest.hexdigest())


def _remove_quietly(files: Files, path: str) -> None:
    try:
        files.remove(path)
    except OSError:
        pass  # the next start removes what the book does not list
