"""QueryService: GetEvent, GetTimeline, QueryEvents, Export, Aggregate and FindLeads, each
within the caller's scope, each recorded by the read audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from leadtrail.storage import Event, StoredEvent
from leadtrail.storage.fingerprints import MAX_LEADS, MAX_VALUE_BYTES, LeadMatch
from leadtrail.storage.ingest import FIELD_NAME_MAX
from leadtrail.storage.wireform import repeated_field
from leadtrail.v1 import query_pb2

from .aggregates import aggregate, check_groups
from .caller import Caller
from .convert import event_to_proto
from .export import ExportShape, chunks
from .privacy import mask_value
from .scan import matching_pages
from .served_store import ServedStore
from .status import Context, invalid, not_found, streaming, unary
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
        as_of = request.as_of.ToMilliseconds() if request.HasField("as_of") else None

        def build() -> tuple[bytes, int] | None:
            page = read_page(log, lead_id, caller.account, caller.sees, page_size, after, as_of=as_of)
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
        field, value = request.field, request.value
        caller, log = Caller.current(), self.store.log
        if not field:
            raise invalid("field", "required: email, phone or another personal field")
        if len(field) > FIELD_NAME_MAX:
            raise invalid("field", f"{len(field)} characters, over the limit of {FIELD_NAME_MAX}")
        if not log.searchable(field, caller.account):
            raise invalid(
                "field",
                f"{field!r} is not a personal field: search by email, phone (or phone_*), or a field "
                "the account's field policy classes pii",
            )
        if not value.strip():
            raise invalid("value", "required")
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            raise invalid("value", f"{size} bytes, over the limit of {MAX_VALUE_BYTES}")
        key = caller.key
        # Admins and keyless callers see every event of a lead: counted from the index
        # alone. Other roles do not see its audit records, scoped keys only their scope.
        visible = None if key is None or (key.role == "admin" and not caller.limited) else caller.sees

        def find() -> list[LeadMatch]:
            return log.find_leads(field, value, caller.account, visible=visible, limit=MAX_LEADS)

        found = await self.store.run(find)
        response = query_pb2.FindLeadsResponse()
        for match in found:
            lead = response.leads.add(lead_id=match.lead_id, events=match.events)
            lead.first_timestamp.FromMilliseconds(match.first_timestamp_ms)
            lead.last_timestamp.FromMilliseconds(match.last_timestamp_ms)
        # The value searched is personal data: the audit keeps it masked, as a reader sees it.
        audited = query_pb2.FindLeadsRequest(field=field, value=str(mask_value(field, value)))
        self.store.audit.record(caller, "FindLeads", audited, sum(m.events for m in found))
        return response


def _event_bytes(
    record: StoredEvent, masking: Callable[[Event], Event] | None, json_snapshots: bool, include_lead: bool
) -> bytes:
    """A serialized ``Event`` as the caller sees it."""
    if masking is None:
        return record.wire(include_lead) if json_snapshots else record.wire_structs(include_lead)
    event = masking(record.event(include_lead))
    return event_to_proto(event, json_snapshots=json_snapshots).SerializeToString()
