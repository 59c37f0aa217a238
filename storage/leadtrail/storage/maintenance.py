"""What retention, erasure and segment rewrites may touch of a store: one narrow interface.

``Maintenance`` is the Protocol those modules are written against (they never
see ``EventLog``); ``StoreMaintenance`` is the one implementation, built by
the façade from the store's parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from . import query
from .chain import ChainPoint
from .codec import Dictionaries, Trainer
from .datadir import DataDirectory
from .errors import ClosedError, NotWritableError
from .event import AppendResult, Event
from .fields import FieldPolicies
from .fs import Files
from .index import Index, Located
from .reader import Reader
from .segment import Segment
from .segment_list import SegmentList
from .wirebody import StoredEvent
from .writer import GroupCommit


class ChainAccess(Protocol):
    """The store's records and hash chain, as a rewrite reads them."""

    def stored_at(self, position: int) -> StoredEvent | None: ...

    def chain_point(self, position: int) -> ChainPoint: ...

    def chain_head(self) -> ChainPoint: ...


class Maintenance(Protocol):
    @property
    def index(self) -> Index: ...

    @property
    def dictionaries(self) -> Dictionaries: ...

    @property
    def fields(self) -> FieldPolicies: ...

    @property
    def trainer(self) -> Trainer | None: ...

    @property
    def files(self) -> Files: ...

    @property
    def last_position(self) -> int: ...

    def writer(self) -> GroupCommit:
        """The writer, or ``ClosedError``/``NotWritableError`` when there is none."""
        ...

    def writer_if_writable(self) -> GroupCommit | None: ...

    def segments(self) -> list[Segment]: ...

    def segment_for(self, position: int) -> Segment | None: ...

    def segment_events(self, segment: Segment, include_lead: bool = True) -> Iterator[Located]: ...

    def timeline(self, lead_id: str, account_id: str) -> list[Event]: ...

    def append(self, events: Sequence[Event]) -> list[AppendResult]: ...

    def retire(self, ranges: Sequence[tuple[int, int]]) -> None: ...

    def delete_segment(self, segment: Segment) -> None: ...

    def recorded_at_floor(self) -> int: ...

    def save_recorded_at_floor(self, recorded_at_ms: int) -> None: ...

    def rewriting_segment(self) -> AbstractContextManager[None]:
        """Around the swap of a segment's file (readers wait; a new rewrite epoch)."""
        ...

    def stored_at(self, position: int) -> StoredEvent | None:
        """The record at ``position`` undecoded (its content's commitment, for a rewrite)."""
        ...

    def chain_point(self, position: int) -> ChainPoint:
        """The chain hash at ``position`` (NotFoundError: no chained event there)."""
        ...

    def chain_head(self) -> ChainPoint: ...

    # -- verify: (methods retention needs for signed boundaries) ----------------

    # -- sign: (methods retention needs to sign records) ------------------------


class StoreMaintenance:
    """``Maintenance`` over the parts of one open store."""

    def __init__(
        self,
        *,
        directory: DataDirectory,
        segments: SegmentList,
        reader: Reader,
        dictionaries: Dictionaries,
        fields: FieldPolicies,
        trainer: Callable[[], Trainer | None],
        writer: Callable[[], GroupCommit | None],
        closed: Callable[[], bool],
        append: Callable[[Sequence[Event]], list[AppendResult]],
        chain: ChainAccess,
    ) -> None:
        self._directory = directory
        self._segments = segments
        self._reader = reader
        self._dictionaries = dictionaries
        self._fields = fields
        self._trainer = trainer
        self._writer = writer
        self._closed = closed
        self._append = append
        self._chain = chain

    @property
    def index(self) -> Index:
        return self._reader.index

    @property
    def dictionaries(self) -> Dictionaries:
        return self._dictionaries

    @property
    def fields(self) -> FieldPolicies:
        return self._fields

    @property
    def trainer(self) -> Trainer | None:
        return self._trainer()

    @property
    def files(self) -> Files:
        return self._directory.files

    @property
    def last_position(self) -> int:
        return self._segments.visible

    def writer(self) -> GroupCommit:
        if self._closed():
            raise ClosedError("the store is closed")
        writer = self._writer()
        if writer is None:
            raise NotWritableError("the store was opened read-only")
        return writer

    def writer_if_writable(self) -> GroupCommit | None:
        return self._writer()

    def segments(self) -> list[Segment]:
        return self._segments.all()

    def segment_for(self, position: int) -> Segment | None:
        return self._segments.segment_for(position)

    def segment_events(self, segment: Segment, include_lead: bool = True) -> Iterator[Located]:
        return self._reader.segment_events(segment, include_lead=include_lead)

    def timeline(self, lead_id: str, account_id: str) -> list[Event]:
        return query.timeline(self._reader, lead_id, account_id)

    def append(self, events: Sequence[Event]) -> list[AppendResult]:
        return self._append(events)

    def retire(self, ranges: Sequence[tuple[int, int]]) -> None:
        self._directory.retire(ranges)

    def delete_segment(self, segment: Segment) -> None:
        self._segments.delete(segment)

    def recorded_at_floor(self) -> int:
        return self._directory.recorded_at_floor()

    def save_recorded_at_floor(self, recorded_at_ms: int) -> None:
        self._directory.save_recorded_at_floor(recorded_at_ms)

    def rewriting_segment(self) -> AbstractContextManager[None]:
        return self._reader.rewriting_segment()

    def stored_at(self, position: int) -> StoredEvent | None:
        return self._chain.stored_at(position)

    def chain_point(self, position: int) -> ChainPoint:
        return self._chain.chain_point(position)

    def chain_head(self) -> ChainPoint:
        return self._chain.chain_head()

    # -- verify: ---------------------------------------------------------------

    # -- sign: -----------------------------------------------------------------
