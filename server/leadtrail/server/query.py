"""QueryService: GetEvent, GetTimeline, QueryEvents, Export and Aggregate, each within the
caller's scope, each recorded by the read audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from leadtrail.storage import Event, StoredEvent
from leadtrail.storage.wireform import repeated_field
from leadtrail.v1 import query_pb2

from .aggregates import aggregate, check_groups
from .caller import Caller
from .convert import event_to_proto
from .export import ExportShape, chunks
from .scan import matching_pages
from .served_store import ServedStore
from .status import Context, ServiceError, invalid, not_found, streaming, unary
from .timelines import check_page_size, key_of_token, page_message, read_page

INLINE_EVENTS = 64
"""Reads of at most this many events run on the event loop: a hop to the thread pool
and back costs more than reading them."""
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PAGE_BYTES = 3 * 1024 * 1024
"""A page of events is cut once it holds this much: under gRPC's 4 MB default with room to spare."""


class QueryService:
    """Answers are spliced from the events' stored wire form (``StoredEvent``); a caller
    whose role masks personal fields gets each event decoded, masked and encoded."""

    def __init__(self, store: ServedStore) -> None:
        self.store = store

    @unary
    async def GetEvent(self, request: query_pb2.GetEventRequest, context: Context) -> bytes:
        if not request.id:
            raise invalid("id", "required")
        caller = Caller.current()
        masking = caller.masking(self.store.log.fields)
        log = self.store.log

        def read() -> bytes | None:
            record = log.get_stored(request.id, caller.account)
            if record is None or not caller.sees(record):
                return None
            return _event_bytes(record, masking, request.json_snapshots, True)

        # One event: read on the loop, a thread-pool hop would cost more than the read.
        answer = read()
        if answer is None:
            raise not_found(f"event {request.id!r} not found")
        self.store.audit.record(caller, "GetEvent", request, 1)
        return answer

    @unary
    async def GetTimeline(self, request: query_pb2.GetTimelineRequest, context: Context) -> bytes:
        if not request.lead_id:
            raise invalid("lead_id", "required")
        if len(request.lead_id) > 128:
            raise invalid("lead_id", "longer than the 128 characters an id may have")
        page_size = check_page_size(request.page_size)
        caller, log, lead_id = Caller.current(), self.store.log, request.lead_id
        after = key_of_token(request.page_token, lead_id, caller.account) if request.page_token else None
        masking = caller.masking(log.fields)

        def build() -> tuple[bytes, int] | None:
            page = read_page(log, lead_id, caller.account, caller.sees, page_size, after)
            if not page.steps and not page.audit and after is None:
                return None
            return page_message(lead_id, caller.account, page, masking, request.json_snapshots)

        # A usual journey (a few steps) is read on the loop; a long one in the pool.
        inline = min(page_size, log.lead_size(lead_id, caller.account)) <= INLINE_EVENTS
        built = build() if inline else await self.store.run(build)
        if built is None:
            raise not_found(f"lead {lead_id!r} has no events")
        timeline, steps = built
        self.store.audit.record(caller, "GetTimeline", request, steps)
        return timeline

    @unary
    async def QueryEvents(self, request: query_pb2.QueryEventsRequest, context: Context) -> bytes:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise invalid("page_size", f"{size} is over the limit of {MAX_PAGE_SIZE}")
        caller = Caller.current()
        f = caller.filter(request.filter)
        log = self.store.log
        masking = caller.masking(log.fields)

        def page(limit: int = size) -> tuple[bytes, int]:
            records, cursor = log.scan_stored(
                f, after=request.page_token or None, limit=limit, descending=request.descending
            )
            messages = []
            used = 0
            for i, record in enumerate(records):
                if i and used >= PAGE_BYTES:
                    # Cut by bytes: read the page again as long as what fits, for its cursor.
                    return page(i)
                message = _event_bytes(record, masking, request.json_snapshots, request.include_lead)
                messages.append(message)
                used += len(message) + 8
            response = repeated_field(1, messages)
            if cursor:
                response += repeated_field(2, [cursor.encode()])
            return response, len(messages)

        response, count = await self.store.run(page)
        self.store.audit.record(caller, "QueryEvents", request, count)
        return response

    @streaming
    async def Export(
        self, request: query_pb2.ExportRequest, context: Context
    ) -> AsyncIterator[query_pb2.ExportChunk]:
        caller = Caller.current()
        f = caller.filter(request.filter)
        shape = ExportShape.of(request)
        pages = matching_pages(self.store.log, f, shape.include_lead)
        shown = caller.shown(self.store.log.fields)
        encoder = shape.encoder()
        exported = 0

        def next_bytes() -> tuple[bytes, int] | None:
            events: list[Event] | None = next(pages, None)
            if events is None:
                return None
            # One page is one Parquet row group: memory stays bounded by the page.
            return encoder.encode([shown(e) for e in events]), len(events)

        try:
            if header := encoder.header():
                yield query_pb2.ExportChunk(data=header)
            while (encoded := await self.store.run(next_bytes)) is not None:
                data, count = encoded
                exported += count
                for chunk in chunks(data):
                    yield query_pb2.ExportChunk(data=chunk)
            for chunk in chunks(encoder.footer()):
                yield query_pb2.ExportChunk(data=chunk)
        finally:  # also when the client stops reading: what was read is recorded
            self.store.audit.record(caller, "Export", request, exported)

    @unary
    async def Aggregate(
        self, request: query_pb2.AggregateRequest, context: Context
    ) -> query_pb2.AggregateResponse:
        groups = list(request.group_by)
        check_groups(groups)
        caller = Caller.current()
        f = caller.filter(request.filter)
        response = await self.store.run(aggregate, self.store.log, f, groups)
        self.store.audit.record(caller, "Aggregate", request, sum(row.count for row in response.rows))
        return response

    @unary
    async def FindLeads(
        self, request: query_pb2.FindLeadsRequest, context: Context
    ) -> query_pb2.FindLeadsResponse:
        raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "FindLeads: the fingerprint index is being built")


def _event_bytes(
    record: StoredEvent, masking: Callable[[Event], Event] | None, json_snapshots: bool, include_lead: bool
) -> bytes:
    """A serialized ``Event`` as the caller sees it."""
    if masking is None:
        return record.wire(include_lead) if json_snapshots else record.wire_structs(include_lead)
    event = masking(record.event(include_lead))
    return event_to_proto(event, json_snapshots=json_snapshots).SerializeToString()
