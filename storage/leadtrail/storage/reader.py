"""Reading events back: one record through the index, or a segment front to back.

A body compressed against a base (format 1.3), like a snapshot stored as a
delta (1.1), is resolved against that base (an earlier record of the same lead
in the same segment), through small caches of recent bodies and snapshots: a
timeline reads a lead's steps in order, and each one's base is the step before.
Front to back, a read keeps the latest body of each lead instead, so that a
base is never read twice. A segment rewritten in place (erasure, retention)
changes the bytes and bases behind positions: maintenance announces each
rewrite with ``rewriting_segment``, which holds readers at the swap and starts
a new *rewrite epoch*. A cache entry read in an older epoch is never stored,
and a reader that sees the epoch move under it starts again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import lmdb

from . import wirebody
from .codec import (
    MAX_DELTA_DEPTH,
    BaseBody,
    Dictionaries,
    apply_delta,
    decode_event,
    encode_body,
    snapshot_part,
    stored_event,
    stored_form,
    wire_body,
)
from .errors import CorruptionError, StorageError
from .event import Event
from .format import KIND_EVENT, SEGMENT_HEADER_SIZE, BadRecord
from .index import Index, Located
from .segment import Segment
from .segment_list import SegmentList
from .wirebody import StoredEvent

SNAPSHOT_CACHE = 4096
BODY_CACHE = 16384
"""Wire bodies kept by position (about 1.7 KB each for the simulator's events, 28 MB in all): a
timeline reads a lead's steps in order, and a scan run again over one window finds the bases
of its events here."""
LATEST_BODIES = 8192
"""Bodies a front-to-back read keeps, the two latest of each lead: an older one it needs
again (a lead quiet for that long) is read from the segment."""
_Read = TypeVar("_Read")


class _HasPosition(Protocol):
    @property
    def position(self) -> int: ...


_Positioned = TypeVar("_Positioned", bound=_HasPosition)


class Reader:
    def __init__(self, index: Callable[[], Index], segments: SegmentList, dictionaries: Dictionaries) -> None:
        self._index = index
        self._segments = segments
        self._dictionaries = dictionaries
        self._swap_lock = threading.RLock()
        self._snapshots: OrderedDict[int, Mapping[str, Any]] = OrderedDict()
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        self._snapshots_lock = threading.Lock()  # both caches
        self._epoch = 0
        # Readers of the index and a compaction that swaps it (see index_compaction.py).
        self._gate = threading.Condition()
        self._readers = 0
        self._swapping = False
        self._nesting = threading.local()

    @property
    def index(self) -> Index:
        return self._index()

    # -- the index, held while it is read ---------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Index]:
        """The index, kept open for the block: a compaction swaps it only between readers.

        Hold it only while a transaction is open, never across a ``yield`` to a caller:
        the swap runs on the writer thread, and appends wait while it waits."""
        depth = getattr(self._nesting, "depth", 0)
        with self._gate:
            while self._swapping and not depth:  # a nested reader already holds it
                self._gate.wait()
            self._readers += 1
        self._nesting.depth = depth + 1
        try:
            yield self._index()
        finally:
            self._nesting.depth = depth
            with self._gate:
                self._readers -= 1
                if not self._readers:
                    self._gate.notify_all()

    @contextmanager
    def swapping_index(self) -> Iterator[None]:
        """Exclusive use of the index: for replacing it (no reader holds the old one)."""
        with self._gate:
            self._swapping = True
            while self._readers:
                self._gate.wait()
        try:
            yield
        finally:
            with self._gate:
                self._swapping = False
                self._gate.notify_all()

    # -- the rewrite epoch --------------------------------------------------------

    @property
    def rewrite_epoch(self) -> int:
        """Counts segment rewrites (and index rebuilds): what was read before a change of
        this number may hold content no longer in the store."""
        return self._epoch

    @contextmanager
    def rewriting_segment(self) -> Iterator[None]:
        """Around the swap of a segment's file: readers of a record wait here, and once
        the new file is in, a new epoch begins."""
        with self._swap_lock:
            yield
            self.new_epoch()

    def new_epoch(self) -> None:
        """Forget every snapshot and body read so far: what lies behind positions has changed."""
        with self._snapshots_lock:
            self._snapshots.clear()
            self._bodies.clear()
            self._epoch += 1

    # -- one record ---------------------------------------------------------------------

    def event_at(self, txn: lmdb.Transaction, position: int, include_lead: bool = True) -> Event | None:
        """The event at ``position`` as the index of ``txn`` knows it."""
        return self._retrying(txn, position, lambda t: self._read_event(t, position, include_lead))

    def stored_at(self, txn: lmdb.Transaction, position: int) -> StoredEvent | None:
        """The event at ``position`` in its wire form, undecoded (a record of an older
        form is decoded and put in it, without precomputed changes)."""
        return self._retrying(txn, position, lambda t: self._read_stored(t, position))

    def _retrying(
        self, txn: lmdb.Transaction, position: int, read: Callable[[lmdb.Transaction], _Read | None]
    ) -> _Read | None:
        try:
            return read(txn)
        except BadRecord:
            pass
        # A rewrite may have swapped the file under us: look again once it is done, holding
        # the swap lock so that no later rewrite swaps it again in between (erasures come
        # back to back); failing then, the record is damaged.
        with self._swap_lock:
            try:
                return read(self._index().env.begin())
            except BadRecord as e:
                segment = self._segments.segment_for(position)
                name = segment.name if segment else "?"
                raise CorruptionError(
                    [f"segment {name}: record of position {position} is damaged ({e.reason})"]
                ) from e

    def stored_event(self, position: int) -> Event:
        """The event at ``position`` without its snapshot."""
        with self.reading() as index, index.env.begin() as txn:
            event = self.event_at(txn, position, include_lead=False)
        if event is None:
            raise StorageError(f"position {position} is not in the index")
        return event

    def _record(self, txn: lmdb.Transaction, position: int) -> tuple[Segment, bytes | memoryview] | None:
        if position > self._segments.visible:
            # Indexed but not yet visible: a follower's index may run ahead of the commit
            # notices it has applied (the segment may not even be known yet).
            return None
        segment = self._segments.segment_for(position)
        if segment is None:
            return None
        offset = self._index().offset_of(txn, segment.base, position)
        if offset is None:
            return None
        header, payload = segment.read_record(offset)
        if header.position != position or header.kind != KIND_EVENT:
            raise BadRecord(f"offset {offset} holds position {header.position}, not {position}")
        return segment, payload

    def _read_stored(self, txn: lmdb.Transaction, position: int) -> StoredEvent | None:
        epoch = self._epoch
        found = self._record(txn, position)
        if found is None:
            return None
        segment, payload = found
        stored = stored_event(payload, position, self._dictionaries, self._base_bodies(txn, segment, 0))
        if stored is not None:
            self._remember_body(position, stored.body, epoch)
            return stored

        def base_snapshot(base: int) -> Mapping[str, Any]:
            return self._snapshot_at(txn, segment, base)

        return wirebody.of_event(decode_event(payload, position, self._dictionaries, base_snapshot, True))

    def _read_event(self, txn: lmdb.Transaction, position: int, include_lead: bool) -> Event | None:
        epoch = self._epoch
        found = self._record(txn, position)
        if found is None:
            return None
        segment, payload = found

        def base_snapshot(base: int) -> Mapping[str, Any]:
            return self._snapshot_at(txn, segment, base)

        def keep_body(body: bytes) -> None:
            self._remember_body(position, body, epoch)

        bases = self._base_bodies(txn, segment, 0)
        dictionaries = self._dictionaries
        event = decode_event(payload, position, dictionaries, base_snapshot, include_lead, bases, keep_body)
        if include_lead and not stored_form(payload):
            self._remember(position, event.lead, epoch)
            event.lead = dict(event.lead)  # the remembered snapshot stays ours; the event is new
        return event

    def _base_bodies(self, txn: lmdb.Transaction, segment: Segment, depth: int) -> BaseBody:
        """Resolves the base of a body ``depth`` steps down a chain, through the index."""

        def base_body(position: int) -> bytes:
            return self._body_at(txn, segment, position, depth + 1)

        return base_body

    def _body_at(self, txn: lmdb.Transaction, segment: Segment, position: int, depth: int) -> bytes:
        """The wire body of the event at ``position``, a base ``depth`` steps up a chain."""
        with self._snapshots_lock:
            known = self._bodies.get(position)
            if known is not None:
                self._bodies.move_to_end(position)
                return known
        epoch = self._epoch
        offset = self._index().offset_of(txn, segment.base, position)
        if offset is None:
            raise BadRecord(f"base {position} is missing from the index")
        body = self._body_of_record(segment, offset, position, depth, self._base_bodies(txn, segment, depth))
        self._remember_body(position, body, epoch)
        return body

    def _body_of_record(
        self, segment: Segment, offset: int, position: int, depth: int, base_body: BaseBody
    ) -> bytes:
        if depth > MAX_DELTA_DEPTH:
            raise BadRecord(f"more than {MAX_DELTA_DEPTH} bases in a chain, at position {position}")
        try:
            header, payload = segment.read_record(offset)
            if header.position != position or header.kind != KIND_EVENT:
                raise BadRecord(f"offset {offset} holds position {header.position}, not {position}")
            body = wire_body(payload, position, self._dictionaries, base_body)
        except BadRecord as e:
            # Named, so that the damaged record is found from its dependents' errors.
            raise BadRecord(f"its base at position {position}: {e.reason}") from e
        if body is None:
            raise BadRecord(f"its base at position {position} holds no wire body")
        return body

    def _remember_body(self, position: int, body: bytes, epoch: int) -> None:
        self._keep(self._bodies, BODY_CACHE, position, body, epoch)

    def _keep(self, cache: OrderedDict[int, Any], limit: int, position: int, value: Any, epoch: int) -> None:
        """Put ``value`` read at ``epoch`` in ``cache``, the oldest out past ``limit``."""
        with self._snapshots_lock:
            if epoch != self._epoch:
                return  # read from a file rewritten since (erasure): not to be served again
            cache[position] = value
            if len(cache) > limit:
                cache.popitem(last=False)

    def _snapshot_at(self, txn: lmdb.Transaction, segment: Segment, position: int) -> Mapping[str, Any]:
        with self._snapshots_lock:
            known = self._snapshots.get(position)
            if known is not None:
                self._snapshots.move_to_end(position)
                return known
        index = self._index()
        epoch = self._epoch

        def locate(p: int) -> int | None:
            return index.offset_of(txn, segment.base, p)

        offset = locate(position)
        if offset is None:
            raise BadRecord(f"delta base {position} is missing from the index")
        bases = self._base_bodies(txn, segment, 0)
        snapshot = self._snapshot_from_record(segment, offset, position, locate, bases)
        self._remember(position, snapshot, epoch)
        return snapshot

    def _remember(self, position: int, snapshot: Mapping[str, Any], epoch: int) -> None:
        self._keep(self._snapshots, SNAPSHOT_CACHE, position, snapshot, epoch)

    def _snapshot_from_record(
        self,
        segment: Segment,
        offset: int,
        position: int,
        locate: Callable[[int], int | None],
        base_body: BaseBody,
    ) -> Mapping[str, Any]:
        header, payload = segment.read_record(offset)
        if header.position != position:
            raise BadRecord(f"record at offset {offset} holds position {header.position}, not {position}")
        base, part = snapshot_part(payload, position, self._dictionaries, base_body)
        if not base:
            return dict(part)
        base_offset = locate(base)
        if base_offset is None:
            raise BadRecord(f"delta base {base} of position {position} not found")
        return apply_delta(self._snapshot_from_record(segment, base_offset, base, locate, base_body), part)

    # -- a segment front to back -------------------------------------------------------------

    def segment_events(
        self,
        segment: Segment,
        include_lead: bool = True,
        end: int | None = None,
        start: int = SEGMENT_HEADER_SIZE,
    ) -> Iterator[Located]:
        """Decode a segment front to back, resolving snapshot deltas and bases as it goes.

        Started past the segment header, a delta or body whose base lies before
        ``start`` finds that base through the index.
        """
        by_position: dict[int, int] = {}
        latest: dict[int, Mapping[str, Any]] = {}
        bodies = _LatestBodies()
        base_body = self._front_to_back_bases(segment, start, by_position, bodies)
        kept: list[bytes] = []  # the wire body of the record being decoded

        def base_snapshot(position: int) -> Mapping[str, Any]:
            known = latest.get(position)
            if known is not None:
                return known
            offset = by_position.get(position)
            if offset is None and start > SEGMENT_HEADER_SIZE:
                with self.reading() as index, index.env.begin() as txn:
                    return self._snapshot_at(txn, segment, position)
            if offset is None:
                raise BadRecord(f"delta base {position} is not an earlier event of this segment")
            return self._snapshot_from_record(segment, offset, position, by_position.get, base_body)

        try:
            for offset, header, payload in segment.records(start=start, end=end):
                if header.kind != KIND_EVENT:
                    continue
                position = header.position
                by_position[position] = offset
                kept.clear()
                event = decode_event(
                    payload, position, self._dictionaries, base_snapshot, True, base_body, kept.append
                )
                dropped = bodies.keep(position, event.account_id, event.lead_id, kept[0] if kept else None)
                if dropped:
                    latest.pop(dropped, None)
                if not kept:
                    latest[position] = event.lead  # a 1.1 snapshot: the base of the lead's next delta
                raw = len(encode_body(event, event.lead))
                if not include_lead:
                    event.lead = {}  # decoded here: nobody else holds it
                yield Located(event, segment.base, offset, raw)
        except BadRecord as e:
            raise CorruptionError([f"segment {segment.name}: {e.reason}"]) from e

    # -- the log in position order ------------------------------------------------------------

    def read_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[Event]:
        """Every visible event with a position >= ``position``, in position order."""
        return self._restarting(position, limit, self._decoded_from)

    def read_stored_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[StoredEvent]:
        """``read_from`` in the wire form."""
        return self._restarting(position, limit, self._stored_from)

    def _restarting(
        self, position: int, limit: int | None, read: Callable[[Segment, int, int], Iterator[_Positioned]]
    ) -> Iterator[_Positioned]:
        produced = 0
        while True:
            # A segment rewritten under the reader (an erasure) leaves it with bytes and
            # delta bases of the old file: it starts again, from the event it is at. The new
            # file takes the place of the old one behind the descriptor the read holds
            # (segment.py), so a record at an old offset may fail its checks first: that
            # read starts again too, once the rewrite's epoch has begun.
            epoch = self._epoch
            try:
                for event in self._read_from(position, None if limit is None else limit - produced, read):
                    if self._epoch != epoch:
                        position = event.position
                        break
                    yield event
                    produced += 1
                    position = event.position + 1
                else:
                    return
            except CorruptionError:
                with self._swap_lock:
                    pass  # a rewrite under way ends, and its epoch begins, first
                if self._epoch == epoch:
                    raise

    def _read_from(
        self, position: int, limit: int | None, read: Callable[[Segment, int, int], Iterator[_Positioned]]
    ) -> Iterator[_Positioned]:
        produced = 0
        visible = self._segments.visible
        for segment in self._segments.all():
            if segment.last_position and segment.last_position < position:
                continue
            if segment.base > visible:
                break
            end = segment.size
            start = SEGMENT_HEADER_SIZE
            if position > segment.base:
                # Seek through the index instead of decoding the segment from its
                # start: a subscriber resuming mid-segment reads only what it needs.
                with self.reading() as index, index.env.begin() as txn:
                    found = index.offset_at_or_after(txn, segment.base, position)
                start = found if found is not None else start
            for event in read(segment, start, end):
                if event.position < position:
                    continue
                if event.position > visible:
                    return
                yield event
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def _decoded_from(self, segment: Segment, start: int, end: int) -> Iterator[Event]:
        for item in self.segment_events(segment, include_lead=True, end=end, start=start):
            yield item.event

    def _front_to_back_bases(
        self, segment: Segment, start: int, by_position: dict[int, int], bodies: _LatestBodies
    ) -> BaseBody:
        """Resolves bases for a read of ``segment`` from ``start``: the latest body of the
        lead when it is kept, else the record by its offset (read so far) or the index."""

        def resolve(position: int, depth: int) -> bytes:
            known = bodies.get(position)
            if known is not None:
                return known
            offset = by_position.get(position)
            if offset is None and start > SEGMENT_HEADER_SIZE:
                with self.reading() as index, index.env.begin() as txn:
                    return self._body_at(txn, segment, position, depth)
            if offset is None:
                raise BadRecord(f"base {position} is not an earlier event of this segment")
            return self._body_of_record(segment, offset, position, depth, lambda p: resolve(p, depth + 1))

        return lambda position: resolve(position, 1)

    def _stored_from(self, segment: Segment, start: int, end: int) -> Iterator[StoredEvent]:
        """A segment's events in the wire form, undecoded; a record of an older form is
        decoded (its delta base found through the index) and put in it."""
        by_position: dict[int, int] = {}
        bodies = _LatestBodies()
        base_body = self._front_to_back_bases(segment, start, by_position, bodies)
        try:
            for offset, header, payload in segment.records(start=start, end=end):
                if header.kind != KIND_EVENT:
                    continue
                by_position[header.position] = offset
                stored = stored_event(payload, header.position, self._dictionaries, base_body)
                if stored is not None:
                    bodies.keep(stored.position, stored.account_id, stored.lead_id, stored.body)
                else:
                    with self.reading() as index, index.env.begin() as txn:

                        def base_snapshot(base: int, txn: lmdb.Transaction = txn) -> Mapping[str, Any]:
                            return self._snapshot_at(txn, segment, base)

                        event = decode_event(
                            payload, header.position, self._dictionaries, base_snapshot, True
                        )
                    stored = wirebody.of_event(event)
                yield stored
        except BadRecord as e:
            raise CorruptionError([f"segment {segment.name}: {e.reason}"]) from e


class _LatestBodies:
    """The two latest wire bodies of each lead, by position, for a read front to back: the
    bases of a lead's next body (FORMAT.md: one of the two). At most ``LATEST_BODIES``,
    the least recently kept out first."""

    __slots__ = ("_bodies", "_last_of_lead")

    def __init__(self) -> None:
        self._bodies: OrderedDict[int, bytes] = OrderedDict()
        self._last_of_lead: dict[tuple[str, str], tuple[int, int]] = {}

    def get(self, position: int) -> bytes | None:
        return self._bodies.get(position)

    def keep(self, position: int, account_id: str, lead_id: str, body: bytes | None) -> int:
        """``position`` is its lead's latest from now on, with its wire body (None: a record
        of an older form); the lead's latest position before it (0: none)."""
        key = (account_id, lead_id)
        latest, older = self._last_of_lead.get(key, (0, 0))
        bodies = self._bodies
        if older:
            bodies.pop(older, None)
        self._last_of_lead[key] = (position, latest)
        if body is not None:
            bodies[position] = body
            if len(bodies) > LATEST_BODIES:
                bodies.popitem(last=False)
        return latest
