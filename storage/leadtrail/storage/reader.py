"""Reading events back: one record through the index, or a segment front to back.

A snapshot stored as a delta is resolved against its base (an earlier record
of the same lead in the same segment), through a small cache of recent
snapshots. A segment rewritten in place (erasure, retention) changes the
bytes and delta bases behind positions: maintenance announces each rewrite
with ``rewriting_segment``, which holds readers at the swap and starts a new
*rewrite epoch*. A cache entry read in an older epoch is never stored, and a
reader that sees the epoch move under it starts again.
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
    Dictionaries,
    apply_delta,
    decode_event,
    encode_body,
    snapshot_part,
    stored_event,
    stored_form,
)
from .errors import CorruptionError, StorageError
from .event import Event
from .format import KIND_EVENT, SEGMENT_HEADER_SIZE, BadRecord
from .index import Index, Located
from .segment import Segment
from .segment_list import SegmentList
from .wirebody import StoredEvent

SNAPSHOT_CACHE = 4096
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
        self._snapshots_lock = threading.Lock()
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
        """Forget every snapshot read so far: what lies behind positions has changed."""
        with self._snapshots_lock:
            self._snapshots.clear()
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
        for attempt in range(2):
            try:
                return read(txn)
            except BadRecord as e:
                if attempt:
                    segment = self._segments.segment_for(position)
                    name = segment.name if segment else "?"
                    raise CorruptionError(
                        [f"segment {name}: record of position {position} is damaged ({e.reason})"]
                    ) from e
                # A compaction may have swapped the file under us: wait for it and look again.
                with self._swap_lock:
                    txn = self._index().env.begin()
        return None

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
        found = self._record(txn, position)
        if found is None:
            return None
        segment, payload = found
        stored = stored_event(payload, position, self._dictionaries)
        if stored is not None:
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

        event = decode_event(payload, position, self._dictionaries, base_snapshot, include_lead)
        if include_lead and not stored_form(payload):
            self._remember(position, event.lead, epoch)
            event.lead = dict(event.lead)  # the remembered snapshot stays ours; the event is new
        return event

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
        snapshot = self._snapshot_from_record(segment, offset, position, locate)
        self._remember(position, snapshot, epoch)
        return snapshot

    def _remember(self, position: int, snapshot: Mapping[str, Any], epoch: int) -> None:
        with self._snapshots_lock:
            if epoch != self._epoch:
                return  # read from a file rewritten since (erasure): not to be served again
            self._snapshots[position] = snapshot
            if len(self._snapshots) > SNAPSHOT_CACHE:
                self._snapshots.popitem(last=False)

    def _snapshot_from_record(
        self, segment: Segment, offset: int, position: int, locate: Callable[[int], int | None]
    ) -> Mapping[str, Any]:
        header, payload = segment.read_record(offset)
        if header.position != position:
            raise BadRecord(f"record at offset {offset} holds position {header.position}, not {position}")
        base, part = snapshot_part(payload, position, self._dictionaries)
        if not base:
            return dict(part)
        base_offset = locate(base)
        if base_offset is None:
            raise BadRecord(f"delta base {base} of position {position} not found")
        return apply_delta(self._snapshot_from_record(segment, base_offset, base, locate), part)

    # -- a segment front to back -------------------------------------------------------------

    def segment_events(
        self,
        segment: Segment,
        include_lead: bool = True,
        end: int | None = None,
        start: int = SEGMENT_HEADER_SIZE,
    ) -> Iterator[Located]:
        """Decode a segment front to back, resolving snapshot deltas as it goes.

        Started past the segment header, a delta whose base lies before
        ``start`` finds that base through the index.
        """
        by_position: dict[int, int] = {}
        latest: dict[int, Mapping[str, Any]] = {}
        last_of_lead: dict[tuple[str, str], int] = {}

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
            return self._snapshot_from_record(segment, offset, position, by_position.get)

        try:
            for offset, header, payload in segment.records(start=start, end=end):
                if header.kind != KIND_EVENT:
                    continue
                by_position[header.position] = offset
                event = decode_event(payload, header.position, self._dictionaries, base_snapshot, True)
                key = (event.account_id, event.lead_id)
                old = last_of_lead.get(key)
                if old is not None:
                    latest.pop(old, None)
                last_of_lead[key] = header.position
                latest[header.position] = event.lead
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
            # delta bases of the old file: it starts again, from the event it is at.
            epoch = self._epoch
            for event in self._read_from(position, None if limit is None else limit - produced, read):
                if self._epoch != epoch:
                    position = event.position
                    break
                yield event
                produced += 1
            else:
                return

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

    def _stored_from(self, segment: Segment, start: int, end: int) -> Iterator[StoredEvent]:
        """A segment's events in the wire form, undecoded; a record of an older form is
        decoded (its delta base found through the index) and put in it."""
        try:
            for _, header, payload in segment.records(start=start, end=end):
                if header.kind != KIND_EVENT:
                    continue
                stored = stored_event(payload, header.position, self._dictionaries)
                if stored is None:
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
