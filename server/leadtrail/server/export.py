"""Export: every matching event as JSONL (whole events), CSV (chosen columns) or Parquet
(typed columns, ``parquet.py``).

JSONL and CSV spell times in RFC 3339 and outcomes by their short names (``SUCCESS``), as
every other human and JSON output does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from leadtrail.storage import Event
from leadtrail.v1 import query_pb2

from .convert import event_to_json
from .parquet import LeadColumnError, ParquetStream, lead_columns
from .status import invalid

EXPORT_CHUNK_BYTES = 64 * 1024

CSV_DEFAULT_FIELDS = (
    "id",
    "position",
    "timestamp",
    "recorded_at",
    "type",
    "lead_id",
    "flow_id",
    "entity_id",
    "outcome",
    "reason",
    "duration_ms",
    "integration",
    "response_code",
    "price",
)
CSV_FIELDS = (*CSV_DEFAULT_FIELDS, "account_id")


class ExportEncoder(Protocol):
    """Writes one export: ``header``, then ``encode`` per page of events, then ``footer``;
    the bytes returned, concatenated in that order, are the export."""

    def header(self) -> bytes: ...

    def encode(self, events: list[Event]) -> bytes: ...

    def footer(self) -> bytes: ...


@dataclass(frozen=True)
class ExportShape:
    """What an export writes: CSV columns (empty: JSONL), and whether it needs snapshots;
    ``parquet``: a Parquet file, ``columns`` then being the chosen ``lead.<name>`` columns."""

    columns: tuple[str, ...]
    include_lead: bool
    parquet: bool = False

    @classmethod
    def of(cls, request: query_pb2.ExportRequest) -> ExportShape:
        if request.format == query_pb2.EXPORT_FORMAT_CSV:
            columns = tuple(request.fields) or CSV_DEFAULT_FIELDS
            for i, name in enumerate(columns):
                prefix, _, rest = name.partition(".")
                if name not in CSV_FIELDS and not (prefix in ("lead", "details") and rest):
                    raise invalid(
                        f"fields[{i}]",
                        f"{name!r} is not an Event field ({', '.join(CSV_FIELDS)}) nor lead.<name> "
                        "or details.<name>",
                    )
            return cls(columns, any(name.startswith("lead.") for name in columns))
        if request.format == query_pb2.EXPORT_FORMAT_JSONL:
            if request.fields:
                raise invalid("fields", "chooses CSV columns; JSONL exports whole events")
            return cls((), True)
        if request.format == query_pb2.EXPORT_FORMAT_PARQUET:
            try:
                return cls(lead_columns(request.fields), True, parquet=True)
            except LeadColumnError as e:
                raise invalid("fields" if e.index is None else f"fields[{e.index}]", str(e)) from None
        raise invalid("format", "EXPORT_FORMAT_JSONL, EXPORT_FORMAT_CSV or EXPORT_FORMAT_PARQUET is required")

    def encoder(self) -> ExportEncoder:
        """A new writer of one export of this shape (Parquet keeps state between pages)."""
        return ParquetStream(self.columns) if self.parquet else self

    def footer(self) -> bytes:
        """What comes after the last event (nothing, for JSONL and CSV)."""
        return b""

    def header(self) -> bytes:
        """What comes before the first event (the CSV header row)."""
        if not self.columns:
            return b""
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(self.columns)
        return text.getvalue().encode()

    def encode(self, events: list[Event]) -> bytes:
        if not self.columns:
            return b"".join(orjson.dumps(event_to_json(e)) + b"\n" for e in events)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for e in events:
            writer.writerow(self._row(e))
        return text.getvalue().encode()

    def _row(self, event: Event) -> list[str]:
        record = event_to_json(event, include_lead=False)
        row = []
        for name in self.columns:
            prefix, _, rest = name.partition(".")
            value: Callable[[str], Any] | None = None
            if prefix == "lead" and rest:
                value = event.lead.get
            elif prefix == "details" and rest:
                value = event.details.get
            row.append(_csv_value(value(rest) if value is not None else record[name]))
        return row


def chunks(data: bytes) -> list[bytes]:
    """``data`` in pieces of at most EXPORT_CHUNK_BYTES, one ExportChunk each."""
    return [data[start : start + EXPORT_CHUNK_BYTES] for start in range(0, len(data), EXPORT_CHUNK_BYTES)]


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()
