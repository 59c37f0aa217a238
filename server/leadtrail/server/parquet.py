"""Events as Apache Parquet: typed columns for a data warehouse (API.md "Scheduled exports").

Columns, in this order: ``id``, ``position`` (uint64), ``type``, ``timestamp`` and
``recorded_at`` (timestamp[ms, UTC]), ``account_id``, ``lead_id``, ``flow_id``,
``entity_id``, ``outcome`` (its short name, ``SUCCESS``, as every export spells it),
``reason``, ``duration_ms`` (int64), ``integration``, ``response_code`` (int32), ``price``
(decimal128(38, 18), null when the event has none), ``price_text`` (the stored decimal
string, exactly), ``details`` and ``lead`` (JSON text), then one string column per chosen
``lead.<name>``.

``price`` is decimal128(38, 18): every amount with at most 20 integer and 18 fractional
digits, exactly (warehouses read decimal128 up to precision 38; decimal256 they mostly do
not). A stored price outside that (a price may have up to 32 characters) is null in
``price`` and kept exactly in ``price_text``: nothing is rounded, and one odd event never
fails a whole export or stalls a sink.

A ``lead.<name>`` column holds the snapshot's value: a string as it is, anything else as
its JSON text (``true``, ``42``, ``{"a": 1}``), null when the snapshot has no such key, so
that the column's type does not depend on the values of the first rows.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

# pyarrow ships no type information: ignored here (and unused once configured in pyproject).
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from leadtrail.client.wire import outcome_name
from leadtrail.storage import Event

PRICE_PRECISION = 38
PRICE_SCALE = 18
PRICE_TYPE = pa.decimal128(PRICE_PRECISION, PRICE_SCALE)
TIME_TYPE = pa.timestamp("ms", tz="UTC")
MAX_LEAD_COLUMNS = 100
"""Chosen ``lead.<name>`` columns of one export, at most."""
MAX_LEAD_NAME = 128
"""Characters of one ``<name>``, at most."""
COMPRESSION = "zstd"

FIXED_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("id", pa.string()),
    ("position", pa.uint64()),
    ("type", pa.string()),
    ("timestamp", TIME_TYPE),
    ("recorded_at", TIME_TYPE),
    ("account_id", pa.string()),
    ("lead_id", pa.string()),
    ("flow_id", pa.string()),
    ("entity_id", pa.string()),
    ("outcome", pa.string()),
    ("reason", pa.string()),
    ("duration_ms", pa.int64()),
    ("integration", pa.string()),
    ("response_code", pa.int32()),
    ("price", PRICE_TYPE),
    ("price_text", pa.string()),
    ("details", pa.string()),
    ("lead", pa.string()),
)
_NULLABLE = {"price"}
_INTEGER_DIGITS = PRICE_PRECISION - PRICE_SCALE


class LeadColumnError(ValueError):
    """A chosen column is not ``lead.<name>``; ``index`` is its place in the list (None: the list)."""

    def __init__(self, index: int | None, message: str) -> None:
        super().__init__(message)
        self.index = index


def lead_columns(fields: Sequence[str]) -> tuple[str, ...]:
    """The chosen ``lead.<name>`` columns, checked: each ``lead.<name>``, no repeats, within limits."""
    if len(fields) > MAX_LEAD_COLUMNS:
        raise LeadColumnError(None, f"{len(fields)} columns are over the limit of {MAX_LEAD_COLUMNS}")
    seen: set[str] = set()
    for i, name in enumerate(fields):
        prefix, _, rest = name.partition(".")
        if prefix != "lead" or not rest:
            raise LeadColumnError(
                i, f"{name!r} is not lead.<name>: Parquet has the Event fields as fixed columns"
            )
        if len(rest) > MAX_LEAD_NAME:
            raise LeadColumnError(i, f"the name after 'lead.' is longer than {MAX_LEAD_NAME} characters")
        if name in seen:
            raise LeadColumnError(i, f"{name!r} is chosen twice")
        seen.add(name)
    return tuple(fields)


def schema(columns: Sequence[str] = ()) -> pa.Schema:
    """The schema of an export with the chosen ``lead.<name>`` columns (checked by ``lead_columns``)."""
    fixed = [pa.field(name, kind, nullable=name in _NULLABLE) for name, kind in FIXED_COLUMNS]
    return pa.schema([*fixed, *(pa.field(name, pa.string()) for name in columns)])


def exact_price(price: str) -> Decimal | None:
    """The price as the ``price`` column holds it, or None (no price, or one that does not fit)."""
    if not price:
        return None
    try:
        value = Decimal(price)
    except InvalidOperation:
        return None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -PRICE_SCALE:
        return None
    if value and value.adjusted() >= _INTEGER_DIGITS:
        return None
    return value


def table(events: Sequence[Event], columns: Sequence[str] = ()) -> pa.Table:
    """``events`` as one Arrow table of ``schema(columns)``."""
    values: dict[str, list[Any]] = {name: [] for name, _ in FIXED_COLUMNS}
    chosen: list[list[str | None]] = [[] for _ in columns]
    keys = [name[len("lead.") :] for name in columns]
    for e in events:
        values["id"].append(e.id)
        values["position"].append(e.position)
        values["type"].append(e.type)
        values["timestamp"].append(e.timestamp_ms or 0)
        values["recorded_at"].append(e.recorded_at_ms)
        values["account_id"].append(e.account_id)
        values["lead_id"].append(e.lead_id)
        values["flow_id"].append(e.flow_id)
        values["entity_id"].append(e.entity_id)
        values["outcome"].append(outcome_name(int(e.outcome)))
        values["reason"].append(e.reason)
        values["duration_ms"].append(e.duration_ms)
        values["integration"].append(e.integration)
        values["response_code"].append(e.response_code)
        values["price"].append(exact_price(e.price))
        values["price_text"].append(e.price)
        values["details"].append(orjson.dumps(dict(e.details)).decode())
        values["lead"].append(orjson.dumps(dict(e.lead)).decode())
        for column, key in zip(chosen, keys, strict=True):
            column.append(_lead_value(e.lead, key))
    arrays = [pa.array(values[name], kind) for name, kind in FIXED_COLUMNS]
    arrays += [pa.array(column, pa.string()) for column in chosen]
    return pa.Table.from_arrays(arrays, schema=schema(columns))


def _lead_value(lead: Mapping[str, Any], key: str) -> str | None:
    if key not in lead:
        return None
    value = lead[key]
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class _Drained(io.RawIOBase):
    """Where the Parquet writer writes: bytes taken out as they come, so memory stays bounded."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._pending += view
        self._written += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data


class ParquetStream:
    """A Parquet file written a row group at a time: ``encode`` each batch of events (one row
    group each), ``footer`` once at the end; the bytes returned, concatenated, are the file."""

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns = tuple(columns)
        self._out = _Drained()
        self._writer = pq.ParquetWriter(self._out, schema(self.columns), compression=COMPRESSION)

    def header(self) -> bytes:
        return self._out.take()

    def encode(self, events: list[Event]) -> bytes:
        return self.encode_table(table(events, self.columns)) if events else self._out.take()

    def encode_table(self, rows: pa.Table) -> bytes:
        """``rows`` (a ``table`` of this stream's columns) as one row group."""
        if rows.num_rows:
            self._writer.write_table(rows, row_group_size=rows.num_rows)
        return self._out.take()

    def footer(self) -> bytes:
        self._writer.close()
        return self._out.take()


def parquet_bytes(batches: Iterable[Sequence[Event]], columns: Sequence[str] = ()) -> bytes:
    """A whole Parquet file of ``batches`` (each one row group)."""
    stream = ParquetStream(columns)
    parts = [stream.header()]
    parts += [stream.encode(list(batch)) for batch in batches]
    parts.append(stream.footer())
    return b"".join(parts)


def file_rows(path: str) -> int:
    """The rows of a Parquet file, from its footer."""
    rows: int = pq.read_metadata(path).num_rows
    return rows
