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

A timeline ``as_of`` a moment is the journey cut there: the steps with a timestamp at
or before it, so the last step's snapshot is the lead as it was then, and
``total_ms`` is that of those steps. The store's records about the lead are shown
whatever their time: an erasure made later still explains the erased values the
steps show. A page token carries the moment its timeline was cut at, and a request
with another one is refused: its pages would not join up. A lead with no step at or
before the moment is NOT_FOUND, saying when its journey begins.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from leadtrail.storage import AUDIT_FLOW, AUDIT_TYPE_PREFIX, DEFAULT_ACCOUNT, Event, EventFields, StoredEvent
from leadtrail.storage.wireform import field_changes, timeline_bytes

from .convert import event_to_proto
from .status import invalid, not_found

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

LAST_POSITION = 2**48 - 1
"""Past any position the index holds: (as_of, LAST_POSITION) is the last key at a moment."""


class PageKey(tuple[int, int]):
    """The key a page token names, with the ``as_of`` (UTC ms, or None) its timeline was
    cut at: a plain ``Key`` to the index, checked against the request by ``read_page``."""

    as_of: int | None

    def __new__(cls, timestamp_ms: int, position: int, as_of: int | None) -> PageKey:
        key = super().__new__(cls, (timestamp_ms, position))
        key.as_of = as_of
        return key


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
_TOKEN_AS_OF = struct.Struct(">IqQq")  # the same, then the as_of the timeline was cut at
_TOKEN_AS_OF_PREFIX = "t2."


def page_token(lead_id: str, account_id: str, key: Key, as_of: int | None = None) -> str:
    """Opaque to callers: the key of the last step sent, bound to the lead it belongs to
    (and to the moment the timeline was cut at, if it was: a token of the whole journey
    stays as it always was)."""
    crc = _lead_crc(lead_id, account_id)
    if as_of is None:
        prefix, packed = _TOKEN_PREFIX, _TOKEN.pack(crc, *key)
    else:
        prefix, packed = _TOKEN_AS_OF_PREFIX, _TOKEN_AS_OF.pack(crc, *key, as_of)
    return prefix + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def key_of_token(token: str, lead_id: str, account_id: str) -> PageKey:
    """The key a page token names; INVALID_ARGUMENT for anything not issued for this lead."""
    as_of: int | None = None
    try:
        if token.startswith(_TOKEN_PREFIX):
            crc, timestamp_ms, position = _TOKEN.unpack(_unpadded(token.removeprefix(_TOKEN_PREFIX)))
        elif token.startswith(_TOKEN_AS_OF_PREFIX):
            body = _unpadded(token.removeprefix(_TOKEN_AS_OF_PREFIX))
            crc, timestamp_ms, position, as_of = _TOKEN_AS_OF.unpack(body)
        else:
            raise ValueError("no version")
    except (ValueError, struct.error, TypeError):
        raise invalid("page_token", "not a GetTimeline page token (pass next_page_token as given)") from None
    if crc != _lead_crc(lead_id, account_id):
        raise invalid("page_token", f"not a page token of lead {lead_id!r}'s timeline")
    return PageKey(timestamp_ms, position, as_of)


def _unpadded(body: str) -> bytes:
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _check_as_of(after: Key, as_of: int | None) -> None:
    """A page token goes on the timeline it was issued for: cut at the same moment, or not cut."""
    issued = after.as_of if isinstance(after, PageKey) else None
    if issued == as_of:
        return
    if issued is None:
        raise invalid("as_of", "the page token is of the whole journey: page on without as_of")
    raise invalid(
        "as_of",
        f"the page token is of the timeline as of {_iso(issued)}: page on with that as_of "
        "(or start again without a page token)",
    )


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


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
    """Whether the journey goes on after the last of ``steps`` (up to ``as_of``)."""
    total_ms: int = 0
    as_of: int | None = None
    """The moment (UTC ms) the journey is cut at; None: the whole journey."""


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
    *,
    as_of: int | None = None,
) -> TimelinePage:
    """At most ``page_size`` steps of the lead's journey from just after ``after`` (None:
    the first page), up to ``as_of`` (UTC ms, inclusive; None: the whole journey). Work
    is bounded by the page: page_size + 2 events from the token's key (the step before,
    the page, one more to know whether the journey goes on), plus the events the caller
    may not see among them, plus short reads at the journey's ends."""
    if after is not None:
        _check_as_of(after, as_of)
    first_page = after is None
    page = TimelinePage(steps=[], previous=None, as_of=as_of)
    for event in _events_from(log, lead_id, account_id, after, page_size + 2):
        if as_of is not None and (event.timestamp_ms or 0) > as_of:
            break  # the index is in time order: the journey as of then ends here
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
    if first_page and as_of is not None:
        # Records about the lead made after the moment (an erasure) still describe the
        # steps shown; the page's read stopped at the moment, so read them at the end.
        _records_at_end(log, lead_id, account_id, sees, page.audit)
    if page.steps and first_page and not page.more:
        # The page read the whole journey (up to as_of): its ends, and the records about
        # the lead at them, are in hand.
        page.total_ms = (page.steps[-1].timestamp_ms or 0) - (page.steps[0].timestamp_ms or 0)
    elif page.steps:
        page.total_ms = _journey_span(
            log, lead_id, account_id, sees, page.audit if first_page else None, as_of
        )
    elif first_page and as_of is not None:
        _refuse_before_first_step(log, lead_id, account_id, sees, as_of)
    return page


END_WINDOW = 4
"""Events read at a time from either end of a journey for its span (usually one suffices)."""


def _journey_span(
    log: LeadEvents,
    lead_id: str,
    account_id: str,
    sees: Callable[[EventFields], bool],
    audit: list[StoredEvent] | None,
    as_of: int | None = None,
) -> int:
    """The journey's duration, from its first step to its last (at or before ``as_of``);
    records about the lead met at either end are added to ``audit`` (when given) unless
    already there."""
    last = None if as_of is None else (as_of, LAST_POSITION)
    first_step = _end_step(log, lead_id, account_id, sees, audit, None, descending=False)
    last_step = _end_step(log, lead_id, account_id, sees, audit, last, descending=True)
    if first_step is None or last_step is None:
        return 0
    return (last_step.timestamp_ms or 0) - (first_step.timestamp_ms or 0)


def _end_step(
    log: LeadEvents,
    lead_id: str,
    account_id: str,
    sees: Callable[[EventFields], bool],
    audit: list[StoredEvent] | None,
    start: Key | None,
    *,
    descending: bool,
) -> StoredEvent | None:
    """The first step the caller sees from ``start`` on (either way); the records about the
    lead read on the way are added to ``audit`` (when given) unless already there."""
    for event in _events_from(log, lead_id, account_id, start, END_WINDOW, descending):
        if not sees(event):
            continue
        if is_audit(event):
            if audit is not None and all(e.position != event.position for e in audit):
                audit.append(event)
            continue
        return event
    return None


def _records_at_end(
    log: LeadEvents,
    lead_id: str,
    account_id: str,
    sees: Callable[[EventFields], bool],
    audit: list[StoredEvent],
) -> None:
    """The records about the lead after its last step, added to ``audit`` unless already there."""
    _end_step(log, lead_id, account_id, sees, audit, None, descending=True)


def _refuse_before_first_step(
    log: LeadEvents, lead_id: str, account_id: str, sees: Callable[[EventFields], bool], as_of: int
) -> None:
    """NOT_FOUND for a lead whose journey began after ``as_of``: the lead did not exist then.
    A lead with no step at all is left to the caller's own NOT_FOUND."""
    first = _end_step(log, lead_id, account_id, sees, None, None, descending=False)
    if first is not None:
        raise not_found(
            f"lead {lead_id!r} has no events at or before as_of {_iso(as_of)}: "
            f"its journey begins at {_iso(first.timestamp_ms or 0)}"
        )


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
        token = page_token(lead_id, account_id, key_of(last), page.as_of)
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
