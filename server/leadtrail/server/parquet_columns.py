"""The chosen ``lead.<name>`` columns of a Parquet export or sink, checked without pyarrow.

Apart from ``parquet`` (which imports pyarrow, slow to load) so that validating a request or
a sink costs nothing at server start; pyarrow is loaded when a Parquet file is written.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LEAD_COLUMNS = 100
"""Chosen ``lead.<name>`` columns of one export, at most."""
MAX_LEAD_NAME = 128
"""Characters of one ``<name>``, at most."""


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
