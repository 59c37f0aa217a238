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
from .timelines import timeline_message

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


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
        caller, log = Caller.current(), self.store.log
        shown = caller.shown(log.fields)

        def build() -> query_pb2.Timeline | None:
            events = [shown(e) for e in log.timeline(request.lead_id, caller.account) if caller.sees(e)]
            return timeline_message(request.lead_id, events, request.json_snapshots) if events else None

        timeline = await self.store.run(build)
        if timeline is None:
            raise not_found(f"lead {request.lead_id!r} has no events")
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

        def page() -> query_pb2.QueryEventsResponse:
            found = log.scan(
                f,
                after=request.page_token or None,
                limit=size,
                descending=request.descending,
                include_lead=request.include_lead,
            )
            response = query_pb2.QueryEventsResponse(next_page_token=found.cursor or "")
            for event in found.events:
                event_to_proto(shown(event), response.events.add(), request.json_snapshots)
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
