"""Every event a filter matches, a page at a time (exports and aggregates read them all)."""

from __future__ import annotations

from collections.abc import Iterator

from leadtrail.storage import Event, EventFilter, EventLog

SCAN_PAGE = 1000


def matching_pages(log: EventLog, f: EventFilter, include_lead: bool) -> Iterator[list[Event]]:
    cursor: str | None = None
    while True:
        page = log.scan(f, after=cursor, limit=SCAN_PAGE, include_lead=include_lead)
        yield page.events
        if page.cursor is None:
            return
        cursor = page.cursor
