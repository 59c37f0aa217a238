"""What ``leadtrail alerts``, ``sinks`` and ``exports`` print of the named things a server keeps
for an account: a filter as JSON and as words, and a listing as JSON or a table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from leadtrail.client import EventFilter

from .cli_output import dumps, iso_ms, table

T = TypeVar("T")


def filter_json(f: EventFilter) -> dict[str, Any]:
    """A filter as JSON, API.md field names."""
    return {
        "types": list(f.types),
        "lead_id": f.lead_id,
        "flow_id": f.flow_id,
        "entity_id": f.entity_id,
        "outcomes": [o.name for o in f.outcomes],
        "start": iso_ms(f.start),
        "end": iso_ms(f.end),
        "where": [str(rule) for rule in f.where],
    }


def filter_text(
    f: EventFilter,
    *,
    order: Sequence[str] = ("lead", "flow", "entity"),
    joiner: str = " + ",
    everything: str = "every event",
) -> str:
    """A filter in words: its types joined by ``joiner`` (``everything`` when none), then ``of
    <lead|flow|entity> <id>`` in ``order``, then its outcomes."""
    ids = {"lead": f.lead_id, "flow": f.flow_id, "entity": f.entity_id}
    parts = [joiner.join(f.types) if f.types else everything]
    parts += [f"of {label} {ids[label]}" for label in order if ids[label]]
    if f.outcomes:
        parts.append("(" + "/".join(o.name for o in f.outcomes) + ")")
    if f.where:
        parts.append("where " + " and ".join(str(rule) for rule in f.where))
    return " ".join(parts)


def print_listing(
    output_format: str,
    items: Sequence[T],
    as_json: Callable[[T], Any],
    nothing: str,
    header: Sequence[str],
    row: Callable[[T], Sequence[str]],
    *,
    right: Sequence[int] = (),
) -> bool:
    """``items`` as a JSON array (``--format json``) or a table on stdout; ``nothing`` on stderr
    when there are none to tabulate. True when a table was printed."""
    if output_format == "json":
        sys.stdout.buffer.write(dumps([as_json(item) for item in items], indent=True) + b"\n")
        return False
    if not items:
        print(nothing, file=sys.stderr)
        return False
    print("\n".join(table(header, [row(item) for item in items], right=right)))
    return True
