"""The hash chain's derived state: chain points kept in the index, found and caught up.

The writer puts the chain hash of every 256th position and of each group's last event
(the head) in the index as it commits (FORMAT.md, "What the chain stores"). From
those, the chain hash at any position is at most 255 digests away. When the index
lost them (a rebuild, a crash before the index caught up), ``catch_up`` recomputes
them from the log, from the head it has or from the log's first chained event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .chain import GENESIS, ChainPoint, link
from .errors import NotFoundError
from .index import CHAIN_ANCHOR_EVERY, Index
from .wirebody import StoredEvent

StoredFrom = Callable[[int], Iterator[StoredEvent]]
"""The stored events from a position on, in position order (``EventLog.read_stored_from``)."""
Boundary = Callable[[int], bytes | None]
"""The chain hash at a position whose event retention removed, as a signed retirement
record states it; None when no record does."""


def no_boundary(position: int) -> bytes | None:
    return None


def _start(index: Index, position: int, boundary: Boundary) -> ChainPoint:
    """The chain point a walk to ``position`` starts from: the nearest kept at or before
    it, else the chain's beginning."""
    with index.env.begin() as txn:
        anchor = index.chain_anchor(txn, position)
    return anchor if anchor is not None else ChainPoint(0, GENESIS, 0)


def _across(previous: ChainPoint, stored: StoredEvent, index: Index, boundary: Boundary) -> ChainPoint:
    """The chain point just before ``stored`` when positions between it and ``previous``
    are gone (removed by retention): kept by the index or stated by a signed record."""
    gap_end = stored.position - 1
    with index.env.begin() as txn:
        anchor = index.chain_anchor(txn, gap_end)
    if anchor is not None and anchor.position > previous.position:
        return anchor
    stated = boundary(gap_end)
    if stated is not None:
        return ChainPoint(gap_end, stated, 0)
    # Lost without a record (damage moved aside by quarantine): the chain goes on from the
    # hash before the gap, as a verifier does once it has reported the gap (FORMAT.md).
    return previous


def walk(
    index: Index, stored_from: StoredFrom, start: ChainPoint, boundary: Boundary, until: int | None = None
) -> Iterator[ChainPoint]:
    """The chain point of every chained event after ``start`` (up to ``until``)."""
    previous = start
    for stored in stored_from(start.position + 1):
        if until is not None and stored.position > until:
            return
        event_digest = stored.digest()
        if event_digest is None:
            continue  # written before the chain (format 1.3 and older)
        if previous.position and stored.position != previous.position + 1:
            previous = _across(previous, stored, index, boundary)
        elif not previous.position and stored.position != 1:
            # The log's first chained event: the chain begins here unless what came
            # before it was retired, whose end a signed record states.
            stated = boundary(stored.position - 1)
            if stated is not None:
                previous = ChainPoint(stored.position - 1, stated, 0)
        previous = ChainPoint(stored.position, link(previous.chain_hash, event_digest), stored.recorded_at_ms)
        yield previous


def catch_up(index: Index, stored_from: StoredFrom, boundary: Boundary = no_boundary) -> ChainPoint:
    """Bring the index's chain points up to the log's end; returns the head."""
    head = index.chain_head() or ChainPoint(0, GENESIS, 0)
    batch: list[ChainPoint] = []
    for point in walk(index, stored_from, head, boundary):
        head = point
        if point.position % CHAIN_ANCHOR_EVERY == 0:
            batch.append(point)
            if len(batch) >= 1000:
                index.put_chain(batch)
                batch = []
    if head.position and (not batch or batch[-1] is not head):
        batch.append(head)
    index.put_chain(batch)
    return head


def chain_point(
    index: Index,
    stored_at: Callable[[int], StoredEvent | None],
    stored_from: StoredFrom,
    position: int,
    boundary: Boundary = no_boundary,
) -> ChainPoint:
    """The chain hash at ``position``; NotFoundError when no chained event is there."""
    stored = stored_at(position)
    if stored is None or stored.seal is None:
        raise NotFoundError(f"position {position} holds no chained event")
    start = _start(index, position, boundary)
    if start.position == position:
        return start
    found = None
    for point in walk(index, stored_from, start, boundary, until=position):
        found = point
    if found is None or found.position != position:
        raise NotFoundError(f"position {position} holds no chained event")
    return found


__all__ = ["Boundary", "StoredFrom", "catch_up", "chain_point", "no_boundary", "walk"]
