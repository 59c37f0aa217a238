"""QueryService: GetEvent, GetTimeline, QueryEvents, Export and Aggregate, each within the
caller's scope, each recorded by the read audit."""

from __future__ import annotations

from collections.abc import AsyncIterator

from leadtrail.storage import Event
from leadtrail.v1 import event_pb2, query_pb2, query_pb2_grpc

from .aggregates import aggregate, check_groups
from .caller import Caller
from .convert import event_to_proto
from .export import ExportShape, chunks
from .scan import matching_pages
from .served_store import ServedStore
from .status import Context, invalid, not_found, streaming, unary
from .timelines import check_page_size, key_of_token, page_message, read_page

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PAGE_BYTES = 3 * 1024 * 1024
"""A page of events is cut once it holds this much: under gRPC's 4 MB default with room to spare."""


class QueryService(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, store: ServedStore) -> None:
        self.store = store

    @unary
    async def GetEvent(self, request: query_pb2.GetEventRequest, context: Context) -> event_pb2.Event:
        if not request.id:
            raise invalid("id", "required")
        caller = Caller.current()
        event = await self.store.run(self.store.log.get, request.id, caller.account)
        if event is None or not caller.sees(event):
            raise not_found(f"event {request.id!r} not found")
        self.store.audit.record(caller, "GetEvent", request, 1)
        return event_to_proto(
            caller.shown(self.store.log.fields)(event), json_snapshots=request.json_snapshots
        )

    @unary
    async def GetTimeline(
        self, request: query_pb2.GetTimelineRequest, context: Context
    ) -> query_pb2.Timeline:
        if not request.lead_id:
            raise invalid("lead_id", "required")
        if len(request.lead_id) > 128:
            raise invalid("lead_id", "longer than the 128 characters an id may have")
        page_size = check_page_size(request.page_size)
        caller, log, lead_id = Caller.current(), self.store.log, request.lead_id
        after = key_of_token(request.page_token, lead_id, caller.account) if request.page_token else None
        shown = caller.shown(log.fields)

        def build() -> query_pb2.Timeline | None:
            page = read_page(log, lead_id, caller.account, caller.sees, page_size, after)
            if not page.steps and not page.audit and after is None:
                return None
            return page_message(lead_id, caller.account, page, shown, request.json_snapshots)

        timeline = await self.store.run(build)
        if timeline is None:
            raise not_found(f"lead {lead_id!r} has no events")
        self.store.audit.record(caller, "GetTimeline", request, len(timeline.steps))
        return timeline

    @unary
    async def QueryEvents(
        self, request: query_pb2.QueryEventsRequest, context: Context
    ) -> query_pb2.QueryEventsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise invalid("page_size", f"{size} is over the limit of {MAX_PAGE_SIZE}")
        caller = Caller.current()
        f = caller.filter(request.filter)
        log, shown = self.store.log, caller.shown(self.store.log.fields)

        def page(limit: int = size) -> query_pb2.QueryEventsResponse:
            found = log.scan(
                f,
                after=request.page_token or None,
                limit=limit,
                descending=request.descending,
                include_lead=request.include_lead,
            )
            response = query_pb2.QueryEventsResponse(next_page_token=found.cursor or "")
            used = 0
            for i, event in enumerate(found.events):
                if i and used >= PAGE_BYTES:
                    # Cut by bytes: read the page again as long as what fits, for its cursor.
                    return page(i)
                message = response.events.add()
                event_to_proto(shown(event), message, request.json_snapshots)
                used += message.ByteSize() + 8
            return response

        response = await self.store.run(page)
        self.store.audit.record(caller, "QueryEvents", request, len(response.events))
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
        exported = 0

        def next_bytes() -> tuple[bytes, int] | None:
            events: list[Event] | None = next(pages, None)
            if events is None:
                return None
            return shape.encode([shown(e) for e in events]), len(events)

        try:
            if header := shape.header():
                yield query_pb2.ExportChunk(data=header)
            while (encoded := await self.store.run(next_bytes)) is not None:
                data, count = encoded
                exported += count
                for chunk in chunks(data):
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
