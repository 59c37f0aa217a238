"""The write path's per-event work: does an event obey the contract, and what are the
index rows of a committed group.

Two twins implement them with the same answers: the compiled ``_ingest`` (C, built by
``pip install`` where a compiler exists) and the plain-Python ``_ingest_py``. The
compiled one is used when it imports, unless the environment sets ``LEADTRAIL_PURE=1``.
The checks only say yes or no; ``validation`` writes the message that names a broken
rule, and asks the pure twin again when the compiled one says no, so the compiled twin
changes how fast an event is accepted, never whether it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _ingest_py
from ._ingest_py import (
    ACCOUNT_MAX,
    ACCOUNT_PATTERN,
    CONTROL_CHARACTERS,
    FIELD_NAME_MAX,
    ID_FIELD_MAX,
    JSON_INT_MAX,
    MAX_DEPTH,
    MAX_TIMESTAMP_MS,
    PRICE_MAX,
    PRICE_PATTERN,
    REASON_MAX,
    TYPE_MAX,
    TYPE_PATTERN,
    U32_MAX,
)
from .twins import chosen

_twin = chosen(f"{__package__}._ingest", _ingest_py.__name__)

COMPILED: bool = _twin is not _ingest_py
"""Whether the compiled twin is in use."""
IMPLEMENTATION: str = "compiled" if COMPILED else "pure"
"""Which twin is in use, as reports and benchmarks name it: ``compiled`` or ``pure``."""

if TYPE_CHECKING:  # both twins have these signatures (``_ingest.pyi`` states the compiled one's)
    from ._ingest_py import id_key, index_rows, json_object_ok, plain_fields_ok
else:
    plain_fields_ok = _twin.plain_fields_ok
    json_object_ok = _twin.json_object_ok
    id_key = _twin.id_key
    index_rows = _twin.index_rows

pure_plain_fields_ok = _ingest_py.plain_fields_ok
"""The pure twin's check, the judge wherever the compiled one says no."""
pure_json_object_ok = _ingest_py.json_object_ok

__all__ = [
    "ACCOUNT_MAX",
    "ACCOUNT_PATTERN",
    "COMPILED",
    "CONTROL_CHARACTERS",
    "FIELD_NAME_MAX",
    "ID_FIELD_MAX",
    "IMPLEMENTATION",
    "JSON_INT_MAX",
    "MAX_DEPTH",
    "MAX_TIMESTAMP_MS",
    "PRICE_MAX",
    "PRICE_PATTERN",
    "REASON_MAX",
    "TYPE_MAX",
    "TYPE_PATTERN",
    "U32_MAX",
    "id_key",
    "index_rows",
    "json_object_ok",
    "plain_fields_ok",
    "pure_json_object_ok",
    "pure_plain_fields_ok",
]
