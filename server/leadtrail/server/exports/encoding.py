"""What a run's file format is to the run: pages of events in, the file's bytes out, in order.

JSONL and CSV (``runs.py``) and Parquet (``parquet_files.py``) each implement
``FileEncoder``; the run hands each one the ``Sink`` that writes, counts and hashes.
"""

from __future__ import annotations

from typing import Protocol

from leadtrail.storage import Event


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


class FileEncoder(Protocol):
    """How a format turns pages of events into a file's bytes."""

    def begin(self, sink: Sink) -> None: ...
    def add(self, sink: Sink, events: list[Event]) -> None: ...
    def end(self, sink: Sink) -> None: ...
