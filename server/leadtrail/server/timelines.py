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

from leadtrail.storage import AUDIT_FLOW, AUDIT_TYPE_PREFIX, DEFAULT_ACCOUNT, Event, EventFields, StoredEvent
from leadtrail.storage.wireform import field_changes, timeline_bytes

from .convert import event_to_proto
from .status import invalid

MAX_TIMELINE_PAGE = 1000
"""Steps a page holds at most, and by default (``page_size`` 0)."""
PAGE_BYTES = 3 * 1024 * 1024
"""A page is cut once its steps hold this much: under gRPC's 4 MB default with room to spare."""
READ_WINDOW = 64
"""Events read at a time where the steps a caller may see are sparse (hidden ones skipped)."""


def is_audit(event: EventFields) -> bool:
    """Whether an event is the store's own record about a lead rather than a step of it."""
    return event.type.startswith(AUDIT_TYPE_PREFIX) or event.flow_id == AUDIT_FLOW


Key = tuple[int, int]
"""An event's place in a lead's index: (timestamp_ms, position)."""


def key_of(event: EventFields) -> Key:
    return (event.timestamp_ms or 0, event.position)


class LeadEvents(Protocol):
    """How a timeline reads a lead (``EventLog.lead_stored``)."""

    def lead_stored(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        start: Key | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[StoredEvent]: ...


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

    steps: list[StoredEvent]
    previous: StoredEvent | None
    audit: list[StoredEvent] = dataclasses.field(default_factory=list)
    more: bool = False
    """Whether the journey goes on after the last of ``steps``."""
    total_ms: int = 0


def _events_from(
    log: LeadEvents, lead_id: str, account_id: str, start: Key | None, window: int, descending: bool = False
) -> Iterator[StoredEvent]:
    """The lead's events from ``start`` (inclusive) on, read ``window`` at a time."""
    while True:
        read = log.lead_stored(lead_id, account_id, start=start, limit=window, descending=descending)
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
    sees: Callable[[EventFields], bool],
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
    if page.steps and first_page and not page.more:
        # The page read the whole journey: its ends, and the records about the lead at
        # them, are in hand.
        page.total_ms = (page.steps[-1].timestamp_ms or 0) - (page.steps[0].timestamp_ms or 0)
    elif page.steps:
        page.total_ms = _journey_span(log, lead_id, account_id, sees, page.audit if first_page else None)
    return page


END_WINDOW = 4
"""Events read at a time from either end of a journey for its span (usually one suffices)."""


def _journey_span(
    log: LeadEvents,
    lead_id: str,
    account_id: str,
    sees: Callable[[EventFields], bool],
    audit: list[StoredEvent] | None,
) -> int:
    """The whole journey's duration, from its first step to its last; records about the
    lead met at either end are added to ``audit`` (when given) unless already there."""
    ends: list[StoredEvent] = []
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
    masking: Callable[[Event], Event] | None,
    json_snapshots: bool,
) -> tuple[bytes, int]:
    """(the page on the wire as a serialized ``Timeline``, the steps it holds); cut short
    (with a next page token) once it holds PAGE_BYTES.

    Unmasked, a step is the stored bytes: the event spliced, and the changes the writer
    computed when they are against the step shown before it (a lead's first step, or an
    event appended out of order or after hidden ones, has its changes computed here).
    Masked (``masking``), each event is decoded and masked once, and its changes are
    computed between masked snapshots: a masked value never shows as changed."""
    shown = _Shown(masking, json_snapshots)
    audit = [shown.wire(record) for record in sorted(page.audit, key=key_of)]
    used = len(lead_id) + sum(len(a) + 8 for a in audit) + 32
    steps: list[tuple[bytes, int, bytes]] = []
    previous = page.previous
    last: StoredEvent | None = None
    for record in page.steps:
        if last is not None and used >= PAGE_BYTES:
            break
        event = shown.wire(record)
        since = (record.timestamp_ms or 0) - (previous.timestamp_ms or 0) if previous is not None else 0
        if masking is None and previous is not None and record.changes_base == previous.position:
            changes = record.changes
        else:
            changes = field_changes(shown.lead(previous) if previous is not None else {}, shown.lead(record))
        steps.append((event, since, changes))
        used += len(event) + len(changes) + 16  # the step's tags and lengths
        previous, last = record, record
    token = ""
    if last is not None and (page.more or last is not page.steps[-1]):
        token = page_token(lead_id, account_id, key_of(last))
    return timeline_bytes(lead_id, steps, page.total_ms, token, audit), len(steps)


class _Shown:
    """How the caller sees the page's events, each decoded (and masked) at most once."""

    def __init__(self, masking: Callable[[Event], Event] | None, json_snapshots: bool) -> None:
        self._masking = masking
        self._json = json_snapshots
        self._decoded: dict[int, Event] = {}
        self._leads: dict[int, Mapping[str, Any]] = {}

    def wire(self, record: StoredEvent) -> bytes:
        if self._masking is None:
            return record.wire() if self._json else record.wire_structs()
        return event_to_proto(self._event(record), json_snapshots=self._json).SerializeToString()

    def lead(self, record: StoredEvent) -> Mapping[str, Any]:
        if self._masking is not None:
            return self._event(record).lead
        lead = self._leads.get(record.position)
        if lead is None:
            lead = self._leads[record.position] = record.lead()
        return lead

    def _event(self, record: StoredEvent) -> Event:
        assert self._masking is not None
        event = self._decoded.get(record.position)
        if event is None:
            event = self._decoded[record.position] = self._masking(record.event())
        return event
