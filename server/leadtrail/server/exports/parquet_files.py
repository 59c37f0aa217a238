"""Parquet export files: the typed columns of ``leadtrail.server.parquet``, a row group per
page of events (memory stays bounded whatever a run's window holds).

A module of its own so that pyarrow is loaded only when a Parquet job is checked or runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from leadtrail.server.parquet import ParquetStream
from leadtrail.server.parquet_columns import LeadColumnError, lead_columns
from leadtrail.server.status import invalid
from leadtrail.storage import Event

from .encoding import Sink


def checked_columns(fields: Sequence[str]) -> tuple[str, ...]:
    """The job's ``lead.<name>`` columns, or INVALID_ARGUMENT naming the field."""
    try:
        return lead_columns(fields)
    except LeadColumnError as e:
        raise invalid("fields" if e.index is None else f"fields[{e.index}]", str(e)) from None


class ParquetEncoder:
    def __init__(self, fields: Sequence[str]) -> None:
        self._stream = ParquetStream(fields)

    def begin(self, sink: Sink) -> None:
        sink.write(self._stream.header())

    def add(self, sink: Sink, events: list[Event]) -> None:
        sink.write(self._stream.encode(events))

    def end(self, sink: Sink) -> None:
        sink.write(self._stream.footer())
