"""A lead's timeline: its events as steps, each with the time since the previous one
and the snapshot fields that changed, a page at a time.

A page is built with bounded work, whatever the journey's length: from the page
token's key, the previous step (for the first step's ``since_previous_ms`` and
changes) and the page's steps are read from the lead's index, one more step says
whether a next page exists, and two short reads from either end give the whole
journey's ``total_ms``. A page holds at most ``page_size`` steps and about
``PAGE_BYTES``, well under the 4 MB a default gRPC client accepts.

The journey is the lead's own events: the store's records about the lead (its
``audit.*`` events, of ``AUDIT_FLOW``, such as an erasure) are no step of it.
They are shown apart in ``Timeline.audit``, on the first page: the ones at either
end of the journey (an erasure is recorded at the time it was made) and the ones
among the first page's events.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from leadtrail.storage import AUDIT_FLOW, AUDIT_TYPE_PREFIX, DEFAULT_ACCOUNT, Event
from leadtrail.v1 import query_pb2

from .convert import event_to_proto, python_to_value
from .status import invalid

MAX_TIMELINE_PAGE = 1000
"""Steps a page holds at most, and by default (``page_size`` 0)."""
PAGE_BYTES = 3 * 1024 * 1024
"""A page is cut once its steps hold this much: under gRPC's 4 MB default with room to spare."""
READ_WINDOW = 64
"""Events read at a time where the steps a caller may see are sparse (hidden ones skipped)."""


def _same(a: Any, b: Any) -> bool:
    # JSON values: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


_ABSENT = object()


def changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    out: RepeatedCompositeFieldContainer[query_pb2.FieldChange],
) -> None:
    # Most fields of a lead stay the same from one step to the next: find the
    # changed ones with the cheapest test that can say "same", sort only those.
    changed = [field for field in before if field not in after]
    for field, value in after.items():
        old = before.get(field, _ABSENT)
        if old is value or (type(old) is type(value) and old == value):
            continue
        if old is _ABSENT or not _same(old, value):
            changed.append(field)
    for field in sorted(changed):
        if field not in before:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[field], change.after)
        elif field not in after:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[field], change.before)
        elif not _same(before[field], after[field]):
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[field], change.before)
            python_to_value(after[field], change.after)


def is_audit(event: Event) -> bool:
    """Whether an event is the store's own record about a lead rather than a step of it."""
    return event.type.startswith(AUDIT_TYPE_PREFIX) or event.flow_id == AUDIT_FLOW


Key = tuple[int, int]
"""An event's place in a lead's index: (timestamp_ms, position)."""


def key_of(event: Event) -> Key:
    return (event.timestamp_ms or 0, event.position)


class LeadEvents(Protocol):
    """How a timeline reads a lead (``EventLog.lead_events``)."""

    def lead_events(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        start: Key | None = None,
        limit: int = 1000,
        descending: bool = False,
        include_lead: bool = True,
    ) -> list[Event]: ...


_TOKEN = struct.Struct(">IqQ")  # the lead's crc32, then the key of the page's last step
_TOKEN_PREFIX = "t1."


def page_token(lead_id: str, account_id: str, key: Key) -> str:
    """Opaque to callers: the key of the last step sent, bound to the lead it belongs to."""
    packed = _TOKEN.pack(_lead_crc(lead_id, account_id), *key)
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def key_of_token(token: str, lead_id: str, account_id: str) -> Key:
    """The key a page token names; INVALID_ARGUMENT for anything not issued for this lead."""
    body = token.removeprefix(_TOKEN_PREFIX)
    try:
        if body == token:
            raise ValueError("no version")
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        crc, timestamp_ms, position = _TOKEN.unpack(packed)
    except (ValueError, struct.error, TypeError):
        raise invalid("page_token", "not a GetTimeline page token (pass next_page_token as given)") from None
    if crc != _lead_crc(lead_id, account_id):
        raise invalid("page_token", f"not a page token of lead {lead_id!r}'s timeline")
    return timestamp_ms, position


def _lead_crc(lead_id: str, account_id: str) -> int:
    return zlib.crc32(f"{account_id}\x00{lead_id}".encode())


def check_page_size(page_size: int) -> int:
    """The steps a page may hold: 0 means the maximum; over it is INVALID_ARGUMENT."""
    if page_size > MAX_TIMELINE_PAGE:
        raise invalid("page_size", f"{page_size} is over the limit of {MAX_TIMELINE_PAGE}")
    return page_size or MAX_TIMELINE_PAGE


@dataclass
class TimelinePage:
    """What a page is built from: the steps' events, the one before them, the audit records."""

    steps: list[Event]
    previous: Event | None
    audit: list[Event] = dataclasses.field(default_factory=list)
    more: bool = False
    """Whether the journey goes on after the last of ``steps``."""
    total_ms: int = 0


def _events_from(
    log: LeadEvents, lead_id: str, account_id: str, start: Key | None, window: int, descending: bool = False
) -> Iterator[Event]:
    """The lead's events from ``start`` (inclusive) on, read ``window`` at a time."""
    while True:
        read = log.lead_events(lead_id, account_id, start=start, limit=window, descending=descending)
        yield from read
        if len(read) < window:
            return
        ts, position = key_of(read[-1])
        # The next window starts just past the last event read (keys are unique by position).
        if descending:
            if position == 0:
                return
            start = (ts, position - 1)
        else:
            start = (ts, position + 1)


def read_page(
    log: LeadEvents,
    lead_id: str,
    account_id: str,
    sees: Callable[[Event], bool],
    page_size: int,
    after: Key | None,
) -> TimelinePage:
    """At most ``page_size`` steps of the lead's journey from just after ``after`` (None:
    the first page). Work is bounded by the page: page_size + 2 events from the token's
    key (the step before, the page, one more to know whether the journey goes on), plus
    the events the caller may not see among them."""
    first_page = after is None
    page = TimelinePage(steps=[], previous=None)
    for event in _events_from(log, lead_id, account_id, after, page_size + 2):
        if not sees(event):
            continue
        if is_audit(event):
            if first_page:
                page.audit.append(event)
            continue
        if after is not None and page.previous is None and not page.steps and key_of(event) == after:
            page.previous = event  # the last step of the previous page
            continue
        if len(page.steps) == page_size:
            page.more = True
            break
        page.steps.append(event)
    if page.steps:
        page.total_ms = _journey_span(log, lead_id, account_id, sees, page.audit if first_page else None)
    return page


END_WINDOW = 4
"""Events read at a time from either end of a journey for its span (usually one suffices)."""


def _journey_span(
    log: LeadEvents, lead_id: str, account_id: str, sees: Callable[[Event], bool], audit: list[Event] | None
) -> int:
    """The whole journey's duration, from its first step to its last; records about the
    lead met at either end are added to ``audit`` (when given) unless already there."""
    ends: list[Event] = []
    for descending in (False, True):
        for event in _events_from(log, lead_id, account_id, None, END_WINDOW, descending):
            if not sees(event):
                continue
            if is_audit(event):
                if audit is not None and all(e.position != event.position for e in audit):
                    audit.append(event)
                continue
            ends.append(event)
            break
    if len(ends) < 2:
        return 0
    return (ends[1].timestamp_ms or 0) - (ends[0].timestamp_ms or 0)


def page_message(
    lead_id: str,
    account_id: str,
    page: TimelinePage,
    shown: Callable[[Event], Event],
    json_snapshots: bool,
) -> query_pb2.Timeline:
    """The page on the wire; cut short (with a next page token) once it holds PAGE_BYTES."""
    timeline = query_pb2.Timeline(lead_id=lead_id, total_ms=page.total_ms)
    for record in sorted(page.audit, key=key_of):
        event_to_proto(shown(record), timeline.audit.add(), json_snapshots)
    used = timeline.ByteSize()
    previous = shown(page.previous) if page.previous is not None else None
    last: Event | None = None
    for raw in page.steps:
        if last is not None and used >= PAGE_BYTES:
            break
        event = shown(raw)
        step = timeline.steps.add()
        event_to_proto(event, step.event, json_snapshots)
        if previous is not None:
            step.since_previous_ms = (event.timestamp_ms or 0) - (previous.timestamp_ms or 0)
        changes(previous.lead if previous is not None else {}, event.lead, step.changes)
        used += step.ByteSize() + 8  # the step's tag and length
        previous, last = event, raw
    if last is not None and (page.more or last is not page.steps[-1]):
        timeline.next_page_token = page_token(lead_id, account_id, key_of(last))
    return timeline
