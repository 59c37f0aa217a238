"""How events, timelines and changes look on the operator's screen and in JSON.

JSON uses the field names of the public contract (API.md) with times as
RFC 3339 UTC strings at millisecond precision and outcomes by name, so that
``append`` takes back what ``get`` and ``query`` print.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table

if TYPE_CHECKING:  # the offline commands print with this module and never load the SDK (gRPC)
    from leadtrail.client import Event, FieldChange, Timeline, TimelineStep

CHANGES_SHOWN = 8
"""Per timeline step; the first step adds the whole submitted lead, which would
otherwise push every other step off the screen."""


def iso_ms(moment: datetime | None) -> str:
    if moment is None:
        return ""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def event_json(event: Event, *, include_lead: bool = True) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": event.id,
        "position": event.position,
        "type": event.type,
        "timestamp": iso_ms(event.timestamp),
        "recorded_at": iso_ms(event.recorded_at),
        "account_id": event.account_id,
        "lead_id": event.lead_id,
        "flow_id": event.flow_id,
        "entity_id": event.entity_id,
        "outcome": event.outcome.name,
        "reason": event.reason,
        "duration_ms": event.duration_ms,
        "integration": event.integration,
        "response_code": event.response_code,
        "price": "" if event.price is None else str(event.price),
        "details": event.details,
    }
    # Without the snapshot (a query without --include-lead) an empty "lead"
    # would claim the lead had no fields.
    if include_lead:
        record["lead"] = event.lead
    return record


def _step_json(step: TimelineStep) -> dict[str, Any]:
    return {
        "event": event_json(step.event),
        "since_previous_ms": step.since_previous_ms,
        "changes": [
            {"field": c.field, "kind": c.kind.name, "before": c.before, "after": c.after}
            for c in step.changes
        ],
    }


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    return {
        "lead_id": timeline.lead_id,
        "total_ms": timeline.total_ms,
        "audit": [event_json(event) for event in timeline.audit],
        "steps": [_step_json(step) for step in timeline.steps],
    }


def timeline_json_chunks(pages: Iterable[Timeline]) -> Iterator[bytes]:
    """``timeline_json`` of the whole journey, written as its pages arrive: the steps one
    per line inside the object, so a journey of any length never sits in memory."""
    steps = 0
    for page in pages:
        if steps == 0:
            head = timeline_json(page)
            del head["steps"]
            yield dumps(head, indent=True)[:-2] + b',\n  "steps": ['
        for step in page.steps:
            yield (b"\n    " if steps == 0 else b",\n    ") + dumps(_step_json(step))
            steps += 1
    yield b"\n  ]\n}\n" if steps else b"]\n}\n"


def dumps(value: Any, *, indent: bool = False) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0, default=str)


def _value(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def describe_change(change: FieldChange) -> str:
    """``+email.valid=true``, ``~score 71→80``, ``-field``."""
    if change.kind.name == "ADDED":
        return f"+{change.field}={_value(change.after)}"
    if change.kind.name == "REMOVED":
        return f"-{change.field}"
    return f"~{change.field} {_value(change.before)}→{_value(change.after)}"


def duration(ms: int) -> str:
    """``850 ms``, ``12.4 s``, ``3 min 05 s``, ``2 d 04 h`` : the scale an operator reads at a glance."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3600:02d} h"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Columns as wide as their widest cell; ``right`` lists the right-aligned ones."""
    rows = [list(row) for row in rows]
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _outcome(event: Event) -> str:
    return "" if event.outcome.name == "UNSPECIFIED" else event.outcome.name


def timeline_table(timeline: Timeline, *, all_changes: bool = False) -> list[str]:
    """The lead's journey, one row per step, each followed by the fields the step changed."""
    return list(timeline_lines([timeline], all_changes=all_changes))


def timeline_lines(pages: Iterable[Timeline], *, all_changes: bool = False) -> Iterator[str]:
    """``timeline_table`` of a journey that arrives in pages, each printed as it comes.

    A journey of one page is counted in its first line; a longer one says so there
    and is counted at its end. The store's records about the lead (its erasure)
    come after the steps, apart: they are no step of the journey.
    """
    number = 0
    first: Timeline | None = None
    for page in pages:
        if first is None:
            first = page
            if not page.steps:
                yield f"lead {page.lead_id}: no events"
                break
            count = f"{len(page.steps)} steps" if not page.next_page_token else "more steps than a page"
            flow = page.steps[0].event.flow_id
            yield f"lead {page.lead_id}  flow {flow}  {count} over {duration(page.total_ms)}"
            yield ""
        rows, number = _step_rows(page.steps, number, all_changes=all_changes)
        yield from rows if first is page else rows[1:]  # the column header once
    if first is None:
        return
    if first.next_page_token:
        yield f"{number:,} steps"
    if first.audit:
        yield ""
        yield "recorded by the store about this lead (not steps of its journey):"
        for event in first.audit:
            yield f"  {iso_ms(event.timestamp)}  {event.type}  {event.entity_id}  {event.reason}".rstrip()


def _step_rows(steps: Sequence[TimelineStep], before: int, *, all_changes: bool) -> tuple[list[str], int]:
    """A page's rows (column header first), numbered on from ``before``; and the last number."""
    header = ("STEP", "TIME (UTC)", "+MS", "TYPE", "ENTITY", "OUTCOME", "REASON")
    rows = [
        (
            str(n),
            iso_ms(step.event.timestamp),
            f"+{step.since_previous_ms:,}" if n > 1 else "0",
            step.event.type,
            step.event.entity_id,
            _outcome(step.event),
            step.event.reason,
        )
        for n, step in enumerate(steps, start=before + 1)
    ]
    rendered = table(header, rows, right=(0, 2))
    lines = [rendered[0]]
    indent = " " * (len(rendered[0]) - len(rendered[0].lstrip()) + 6)
    for step, row in zip(steps, rendered[1:], strict=True):
        lines.append(row)
        changes = step.changes if all_changes else step.changes[:CHANGES_SHOWN]
        lines.extend(indent + describe_change(change) for change in changes)
        hidden = len(step.changes) - len(changes)
        if hidden:
            lines.append(f"{indent}… {hidden} more (--all-changes shows them)")
    return lines, before + len(steps)


def events_table(events: Iterable[Event]) -> list[str]:
    header = ("POSITION", "TIME (UTC)", "TYPE", "LEAD", "ENTITY", "OUTCOME", "PRICE", "REASON", "ID")
    rows = (
        (
            str(e.position),
            iso_ms(e.timestamp),
            e.type,
            e.lead_id,
            e.entity_id,
            _outcome(e),
            "" if e.price is None else str(e.price),
            e.reason,
            e.id,
        )
        for e in events
    )
    return table(header, rows, right=(0, 6))


def tail_line(event: Event) -> str:
    """One live event per line, fixed columns so a scrolling terminal stays aligned."""
    price = "" if event.price is None else str(event.price)
    parts = [
        f"{event.position:>10}",
        iso_ms(event.timestamp),
        f"{event.type:<22}",
        f"{event.lead_id:<30}",
        f"{event.entity_id:<22}",
        f"{_outcome(event):<8}",
        f"{price:>8}",
        event.reason,
    ]
    return "  ".join(parts).rstrip()


def erasure_line(lead_id: str, report: Any) -> str:
    """One line for the offline and the remote ``erase`` alike."""
    return (
        f"erased lead {lead_id}: {report.events_erased} events changed, "
        f"{report.segments_rewritten} segments rewritten, {report.dictionaries_replaced} dictionaries "
        f"replaced; recorded as {report.audit_event_id} at position {report.audit_position}"
    )


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def stats_view(stats: Mapping[str, Any]) -> RenderableType:
    """The store's counts as an operator reads them: one table of the whole store and one
    of the events per account (``stats`` is the Stats of the engine or of the SDK, as a dict)."""
    store = Table.grid(padding=(0, 2))
    store.add_column(style="bold")
    store.add_column(justify="right")
    store.add_column(style="dim")
    count = int(stats["event_count"])
    store.add_row("events", f"{count:,}", f"last position {int(stats['last_position']):,}")
    store.add_row("segments", f"{int(stats['segment_count']):,}", "")
    parts = (("log", "log_bytes"), ("indexes", "index_bytes"), ("dictionaries", "dictionary_bytes"))
    store.add_row(
        "on disk",
        _bytes(int(stats["disk_bytes"])),
        ", ".join(f"{name} {_bytes(int(stats[key]))}" for name, key in parts),
    )
    store.add_row(
        "per event",
        f"{float(stats['bytes_per_event']):,.0f} B",
        f"as JSON {_bytes(int(stats['raw_bytes']))}, compressed {float(stats['compression_ratio']):.1f}x",
    )
    store.add_row("dictionaries", f"{int(stats['dictionaries']):,}", "zstd dictionaries trained")
    store.add_row("fsync", str(stats["fsync_policy"]), "")
    store.add_row("writable", "yes" if stats["writable"] else "NO", "" if stats["writable"] else "read-only")
    accounts = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    accounts.add_column("ACCOUNT")
    accounts.add_column("EVENTS", justify="right")
    per_account: Mapping[str, int] = stats.get("account_events") or {}
    for account, events in sorted(per_account.items(), key=lambda item: (-item[1], item[0])):
        accounts.add_row(account, f"{events:,}")
    return Group(store, accounts) if per_account else store


def print_stats(stats: Mapping[str, Any], *, as_json: bool) -> None:
    """``stats`` on stdout: the tables, or with ``as_json`` one JSON object for programs."""
    if as_json:
        sys.stdout.buffer.write(dumps(dict(stats), indent=True) + b"\n")
        return
    console = Console(file=sys.stdout, highlight=False)
    with console.capture() as captured:
        console.print(stats_view(stats))
    # Cells are padded to the column width; a line's trailing blanks are noise in a file.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
