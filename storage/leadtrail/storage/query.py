"""Timelines and filtered scans over the indexes, with cursors that never skip or repeat.

A scan walks the one index that narrows the filter most (a lead beats an
entity or flow, which beat types, which beat plain time), in (timestamp,
position) order, and checks the rest of the filter on each event. Field rules
(``where``) are such a check, on the events the index walk reaches: no index
covers snapshot values (benchmarks/where_bench.py measures why none pays). Its cursor
names the last (timestamp, position) returned and the position the first page
saw as the end of the log, so later pages neither repeat nor skip, and do not
drift while appends continue.
"""

from __future__ import annotations

import base64
import heapq
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

import lmdb
from crc32c import crc32c

from .errors import InvalidArgumentError, InvalidCursorError
from .event import Event, EventFields, EventFilter, Page
from .index import KIND_ENTITY, KIND_FLOW, Index, tspos, untspos
from .ulid import is_valid_id
from .wirebody import StoredEvent

_Found = TypeVar("_Found", bound=EventFields)


class IndexedReads(Protocol):
    """What a query needs: the index, and the event at a position it names."""

    @property
    def index(self) -> Index: ...

    def reading(self) -> AbstractContextManager[Index]:
        """The index, kept open while a query's transaction is."""
        ...

    def event_at(self, txn: lmdb.Transaction, position: int, include_lead: bool = True) -> Event | None: ...

    def stored_at(self, txn: lmdb.Transaction, position: int) -> StoredEvent | None: ...


_CURSOR = struct.Struct(">BBQQQI")
_CURSOR_VERSION = 1
MAX_PAGE = 100_000
_U64_MAX = 2**64 - 1


MAX_LEAD_PAGE = 100_000


def get(reads: IndexedReads, event_id: str, account_id: str) -> Event | None:
    """The event with this id in this account, if there is one."""
    return _get(reads, event_id, account_id, lambda txn, position: reads.event_at(txn, position))


def get_stored(reads: IndexedReads, event_id: str, account_id: str) -> StoredEvent | None:
    """``get`` in the wire form."""
    return _get(reads, event_id, account_id, reads.stored_at)


def _get(
    reads: IndexedReads,
    event_id: str,
    account_id: str,
    read: Callable[[lmdb.Transaction, int], _Found | None],
) -> _Found | None:
    if not isinstance(event_id, str) or not is_valid_id(event_id):
        return None
    with reads.reading() as index, index.env.begin() as txn:
        position = index.position_of(txn, account_id, event_id)
        if position is None:
            return None
        event = read(txn, position)
    return event if event is not None and event.account_id == account_id else None


def timeline(reads: IndexedReads, lead_id: str, account_id: str) -> list[Event]:
    """Every event of one lead in (timestamp, position) order."""
    with reads.reading() as index, index.env.begin() as txn:
        return list(_lead_events(reads, txn, lead_id, account_id, None, False, reads.event_at))


def lead_events(
    reads: IndexedReads,
    lead_id: str,
    account_id: str,
    start: tuple[int, int] | None,
    limit: int,
    descending: bool,
    include_lead: bool,
) -> list[Event]:
    """At most ``limit`` events of one lead from the key ``start`` = (timestamp, position)
    on, inclusive, in (timestamp, position) order or its reverse: a page of a long journey
    costs its own events only."""

    def read(txn: lmdb.Transaction, position: int) -> Event | None:
        return reads.event_at(txn, position, include_lead=include_lead)

    return _lead_page(reads, lead_id, account_id, start, limit, descending, read)


def lead_sizes(reads: IndexedReads, leads: Sequence[tuple[str, str]]) -> list[int]:
    """``lead_size`` of each (lead_id, account_id), in one read transaction: what a caller asking
    about many leads at once (the alert evaluator, a batch at a time) pays once, not per lead."""
    with reads.reading() as index, index.env.begin() as txn:
        keys = [index.dup_key(txn, "lead", account_id, None, lead_id) for lead_id, account_id in leads]
        return index.count_dups_of(txn, "lead", keys)


def lead_size(reads: IndexedReads, lead_id: str, account_id: str) -> int:
    """How many events the lead has (at least: a lead sharing its key's hash adds to it)."""
    with reads.reading() as index, index.env.begin() as txn:
        key = index.dup_key(txn, "lead", account_id, None, lead_id)
        return 0 if key is None else index.count_dups(txn, "lead", key)


def lead_stored(
    reads: IndexedReads,
    lead_id: str,
    account_id: str,
    start: tuple[int, int] | None,
    limit: int,
    descending: bool,
) -> list[StoredEvent]:
    """``lead_events`` in the wire form."""
    return _lead_page(reads, lead_id, account_id, start, limit, descending, reads.stored_at)


def _lead_page(
    reads: IndexedReads,
    lead_id: str,
    account_id: str,
    start: tuple[int, int] | None,
    limit: int,
    descending: bool,
    read: Callable[[lmdb.Transaction, int], _Found | None],
) -> list[_Found]:
    if not 1 <= limit <= MAX_LEAD_PAGE:
        raise InvalidArgumentError(f"limit {limit}: must be in 1..{MAX_LEAD_PAGE}")
    if start is not None and (
        len(start) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in start)
    ):
        raise InvalidArgumentError(f"start {start!r}: must be (timestamp_ms, position)")
    low = None if start is None else tspos(*start)
    events = []
    with reads.reading() as index, index.env.begin() as txn:
        for event in _lead_events(reads, txn, lead_id, account_id, low, descending, read):
            events.append(event)
            if len(events) >= limit:
                break
    return events


def _lead_events(
    reads: IndexedReads,
    txn: lmdb.Transaction,
    lead_id: str,
    account_id: str,
    start: bytes | None,
    descending: bool,
    read: Callable[[lmdb.Transaction, int], _Found | None],
) -> Iterator[_Found]:
    """The events of one lead from ``start`` on, in (timestamp, position) order (or reversed)."""
    index = reads.index
    key = index.dup_key(txn, "lead", account_id, None, lead_id)
    if key is None:
        return
    for value in index.iter_dups(txn, "lead", key, start, descending):
        event = read(txn, untspos(value)[1])
        # The lead key is a hash: a colliding lead shares it, so compare.
        if event is not None and event.lead_id == lead_id and event.account_id == account_id:
            yield event


def _filter_hash(f: EventFilter) -> int:
    text = repr(
        (
            f.account_id,
            sorted(set(f.types)),
            f.lead_id,
            f.flow_id,
            f.entity_id,
            sorted({int(o) for o in f.outcomes}),
            f.start_ms,
            f.end_ms,
        )
        # A key's scope, only when there is one: cursors made before scopes existed stay valid.
        + ((sorted(f.entity_scope), sorted(f.flow_scope)) if f.entity_scope or f.flow_scope else ())
        + ((sorted(f.hidden_types),) if f.hidden_types else ())
        # Field rules in their order (each is a condition; the order changes no match, but
        # rules are few and two spellings of one query are rare), only when there are some.
        + ((tuple((r.field, int(r.op), r.values) for r in f.where),) if f.where else ())
    )
    return int(crc32c(text.encode()))


def encode_cursor(descending: bool, snapshot: int, timestamp: int, position: int, f: EventFilter) -> str:
    raw = _CURSOR.pack(_CURSOR_VERSION, int(descending), snapshot, timestamp, position, _filter_hash(f))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, descending: bool, f: EventFilter) -> tuple[int, int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, desc, snapshot, timestamp, position, digest = _CURSOR.unpack(raw)
    except (ValueError, struct.error) as e:
        raise InvalidCursorError(f"page token {token[:40]!r} is not a page token of this store") from e
    if version != _CURSOR_VERSION:
        raise InvalidCursorError(f"page token version {version} is not supported")
    if bool(desc) != descending or digest != _filter_hash(f):
        raise InvalidCursorError("page token belongs to a query with another filter or order")
    return int(snapshot), int(timestamp), int(position)


def _plan(reads: IndexedReads, txn: lmdb.Transaction, f: EventFilter) -> tuple[str, list[bytes]] | None:
    """The index and keys to walk, or None when the filter cannot match anything."""
    index = reads.index
    account = index.account_key(txn, f.account_id)
    if account is None:
        return None
    if f.lead_id:
        key = index.dup_key(txn, "lead", f.account_id, None, f.lead_id)
        return ("lead", [key]) if key is not None else None
    options: list[tuple[int, str, list[bytes]]] = []
    for db, kind, name in (("flow", KIND_FLOW, f.flow_id), ("entity", KIND_ENTITY, f.entity_id)):
        if name:
            key = index.dup_key(txn, db, f.account_id, kind, name)
            if key is None:
                return None
            options.append((index.count_dups(txn, db, key), db, [key]))
    if f.types:
        keys = index.type_keys(txn, account, f.types)
        if not keys:
            return None
        options.append((sum(index.count_dups(txn, "type", k) for k in keys), "type", keys))
    if not options:
        return "time", [account]
    options.sort(key=lambda o: o[0])
    return options[0][1], options[0][2]


def scan(
    reads: IndexedReads,
    f: EventFilter,
    after: str | None,
    limit: int,
    descending: bool,
    include_lead: bool,
) -> Page:
    # A rule on the snapshot needs it read to match; an answer without snapshots drops it after.
    read_lead = include_lead or f.reads_lead

    def read(txn: lmdb.Transaction, position: int) -> Event | None:
        return reads.event_at(txn, position, include_lead=read_lead)

    events, cursor = _scan(reads, f, after, limit, descending, read)
    if read_lead and not include_lead:
        for event in events:  # decoded for this answer alone: not shared yet
            event.lead = {}
    return Page(events, cursor)


def scan_stored(
    reads: IndexedReads, f: EventFilter, after: str | None, limit: int, descending: bool
) -> tuple[list[StoredEvent], str | None]:
    """``scan`` in the wire form: (events, cursor of the next page or None)."""
    return _scan(reads, f, after, limit, descending, reads.stored_at)


def _scan(
    reads: IndexedReads,
    f: EventFilter,
    after: str | None,
    limit: int,
    descending: bool,
    read: Callable[[lmdb.Transaction, int], _Found | None],
) -> tuple[list[_Found], str | None]:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit {limit}: must be in 1..{MAX_PAGE}")
    if f.start_ms is not None and f.end_ms is not None and f.end_ms <= f.start_ms:
        return [], None
    with reads.reading() as index, index.env.begin() as txn:
        if after:
            snapshot, last_ts, last_pos = decode_cursor(after, descending, f)
            if descending:
                start = (
                    tspos(last_ts, last_pos - 1)
                    if last_pos
                    else tspos(last_ts - 1, _U64_MAX)
                    if last_ts
                    else None
                )
                if start is None:
                    return [], None
            else:
                start = tspos(last_ts, last_pos + 1)
        else:
            snapshot = index.high_water
            if descending:
                start = tspos(f.end_ms - 1, _U64_MAX) if f.end_ms else None
            else:
                start = tspos(f.start_ms or 0, 0)
        plan = _plan(reads, txn, f)
        if plan is None:
            return [], None
        db, keys = plan
        merged: Iterator[bytes]
        streams = [index.iter_dups(txn, db, key, start, descending) for key in keys]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, reverse=descending)
        events: list[_Found] = []
        for value in merged:
            ts, position = untspos(value)
            if descending:
                if f.start_ms is not None and ts < f.start_ms:
                    break
            elif f.end_ms is not None and ts >= f.end_ms:
                break
            if position > snapshot:
                continue
            event = read(txn, position)
            if event is None or not f.matches(event):
                continue
            if len(events) == limit:
                last = events[-1]
                cursor = encode_cursor(descending, snapshot, last.timestamp_ms or 0, last.position, f)
                return events, cursor
            events.append(event)
    return events, None
