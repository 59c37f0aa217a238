"""What ``EventLog.stats`` reports: counted by the index, measured on disk."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from .codec import Dictionaries
from .datadir import DataDirectory, file_size
from .event import Stats
from .index import Index
from .segment_list import SegmentList


def measure(
    directory: DataDirectory,
    segments: SegmentList,
    reading: Callable[[], AbstractContextManager[Index]],
    dictionaries: Dictionaries,
    fsync_policy: str,
    writable: bool,
) -> Stats:
    with reading() as index, index.env.begin() as txn:
        count, raw, index_pages = index.event_count, index.raw_bytes, index.disk_bytes()
        accounts = index.account_events(txn)
    log_bytes = sum(file_size(s.path) for s in segments.all())
    dictionary_bytes = dictionaries.disk_bytes()
    return Stats(
        event_count=count,
        last_position=segments.visible,
        segment_count=len(segments),
        disk_bytes=directory.bytes_under(),
        log_bytes=log_bytes,
        # The files as they are: the index is compacted after retention and rebuilds.
        index_bytes=directory.bytes_under(directory.index_dir),
        dictionary_bytes=dictionary_bytes,
        raw_bytes=raw,
        # The index's used pages (what it would take when compacted), not its file.
        bytes_per_event=(log_bytes + index_pages + dictionary_bytes) / count if count else 0.0,
        compression_ratio=raw / log_bytes if log_bytes and raw else 0.0,
        dictionaries=len(dictionaries.ids()),
        fsync_policy=fsync_policy,
        writable=writable,
        account_events=accounts,
    )
