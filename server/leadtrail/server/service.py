"""The four services of ``leadtrail.v1`` over one open ``EventLog``.

Appends go through the engine's group committer (the future resolves once the
group is durable) and never wait on a thread of ours; every read that touches
disk runs on the ``reads`` thread pool so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf.json_format import MessageToDict

from leadtrail.storage import (
    AUDIT_TYPE_PREFIX,
    DEFAULT_ACCOUNT,
    ClosedError,
    Event,
    EventFilter,
    EventLog,
    FieldPolicy,
    Outcome,
    RetentionPolicy,
    StorageError,
)
from leadtrail.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

from .auth import CALLER, Gate
from .convert import (
    event_from_proto,
    event_to_json,
    event_to_proto,
    filter_from_proto,
    ms_to_timestamp,
    plain_decimal,
    python_to_value,
    timestamp_to_ms,
)
from .feed import Feed
from .keys import ApiKey, KeyStore, KeyStoreError
from .privacy import Fingerprints, masked_event, sealed_event
from .status import ServiceError, invalid, not_found, streaming, unary

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
EXPORT_CHUNK_BYTES = 64 * 1024
SCAN_PAGE = 1000
REPLAY_CHUNK = 512
CHECKPOINT_EVERY_EVENTS = 1000
CHECKPOINT_EVERY_SECONDS = 1.0
MAX_BATCH_SIZE = 1000
BATCH_BYTES = 1 << 20
"""A subscription's batch is sent once it holds this much, whatever ``batch_size`` says: well
under the 4 MiB a gRPC client accepts by default, with 64 KiB snapshots."""
APPEND_STREAM_IN_FLIGHT = 64
INLINE_EVENTS = 8

CSV_DEFAULT_FIELDS = (
    "id",
    "position",
    "timestamp",
    "recorded_at",
    "type",
    "lead_id",
    "flow_id",
    "entity_id",
    "outcome",
    "reason",
    "duration_ms",
    "integration",
    "response_code",
    "price",
)
CSV_FIELDS = (*CSV_DEFAULT_FIELDS, "account_id")


@dataclass
class Store:
    """What every servicer shares: the log, the read pool and the live feed."""

    log: EventLog
    reads: ThreadPoolExecutor
    feed: Feed
    ingest: ThreadPoolExecutor
    keys: KeyStore
    fingerprints: Fingerprints
    gate: Gate | None = None
    """Set by the server once made: streams pace their messages by a key's rate limit."""
    closing: bool = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.reads, fn, *args)

    def account(self, context: Context) -> str:
        # Open single-account mode until API keys arrive: every caller is `default`.
        key = CALLER.get()
        return key.account if key is not None else DEFAULT_ACCOUNT

    def audit(self, rpc: str, request: Any, events: int) -> None:
        """Record a read made with a key: who, which RPC, what it asked, how many events.

        Queued for the next group commit; the read does not wait for it (a crash
        can lose the records of the last reads, never anything appended).
        """
        key = CALLER.get()
        if key is None:
            return
        asked = MessageToDict(request, preserving_proto_field_name=True)
        size = len(orjson.dumps(asked))
        if size > AUDIT_REQUEST_BYTES:  # the record must fit, however big the request
            asked = {"omitted": f"{size} bytes as JSON, over the {AUDIT_REQUEST_BYTES} kept"}
        record = Event(
            type=AUDIT_READ,
            lead_id=key.key_id,  # a key's reads are its timeline
            flow_id=AUDIT_FLOW,
            entity_id=key.key_id,
            outcome=Outcome.SUCCESS,
            reason=rpc,
            details={"rpc": rpc, "role": key.role, "request": asked, "events": events},
            account_id=key.account,
        )
        try:
            self.log.submit([record])
        except StorageError as e:  # a read-only store keeps serving reads
            logging.getLogger("leadtrail.server").warning("audit record of %s not written: %s", rpc, e)

    def account_admin(self, rpc: str) -> ApiKey | None:
        """The caller's key for a call that acts on its whole account (None in open mode):
        an admin key limited to some entities or flows may not make it."""
        key = CALLER.get()
        if key is not None and (key.entities or key.flows):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{rpc}: acts on the whole account; this admin key is limited to some entities or flows",
            )
        return key

    def sees(self, event: Event) -> bool:
        """Whether the caller may see this event at all (on the loop: the caller is per task)."""
        return visible(CALLER.get(), event)

    def shown(self) -> Callable[[Event], Event]:
        """How the caller sees an event: personal fields masked unless its role may see them."""
        key = CALLER.get()
        if key is None or key.role not in MASKED_ROLES:
            return _as_is
        fields, account = self.log.fields, key.account
        # Looked up per event: a stream open for hours follows a field policy changed meanwhile.
        return lambda event: masked_event(event, fields.classifier(account))

    def filter(self, message: event_pb2.EventFilter, context: Context) -> EventFilter:
        """The request's filter within the caller's account and the key's entities and flows:
        events outside them do not exist for this caller."""
        f = filter_from_proto(message, self.account(context))
        key = CALLER.get()
        if key is not None and (key.entities or key.flows):
            f = replace(f, entity_scope=key.entities, flow_scope=key.flows)
        if key is not None and key.role != "admin":
            f = replace(f, hidden_types=(AUDIT_TYPE_PREFIX + "*",))
        return f


AUDIT_READ = AUDIT_TYPE_PREFIX + "read"
AUDIT_FLOW = "audit"
AUDIT_REQUEST_BYTES = 8192


def visible(key: ApiKey | None, event: Event) -> bool:
    """Whether a key may see an event at all: its scope, and audit records for admins only."""
    if key is None:
        return True
    if key.role != "admin" and event.type.startswith(AUDIT_TYPE_PREFIX):
        return False
    return key.sees(event.entity_id, event.flow_id)


MASKED_ROLES = frozenset({"reader", "analyst"})
"""Roles that see personal fields masked (API.md); admins see them, writers read nothing."""


def _as_is(event: Event) -> Event:
    return event


def _results(results: Iterable[Any]) -> submission_pb2.AppendResponse:
    response = submission_pb2.AppendResponse()
    for r in results:
        out = response.results.add(id=r.id, position=r.position, duplicate=r.duplicate)
        if r.recorded_at_ms:  # 0: a duplicate the caller may not see (see _answer)
            ms_to_timestamp(r.recorded_at_ms, out.recorded_at)
    return response


class SubmissionService(submission_pb2_grpc.SubmissionServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _submit(self, request: submission_pb2.AppendRequest, account: str) -> asyncio.Future[Any]:
        """Convert, validate and queue a request; the returned future resolves once durable."""
        log = self.store.log
        for i, m in enumerate(request.events):
            if m.type.startswith(AUDIT_TYPE_PREFIX):
                raise invalid(f"events[{i}].type", f"{AUDIT_TYPE_PREFIX}* events are the server's own")
        key = CALLER.get()
        if key is not None and (key.entities or key.flows):
            for i, m in enumerate(request.events):
                if not key.sees(m.entity_id, m.flow_id):
                    scope = f"entities {list(key.entities) or 'any'}, flows {list(key.flows) or 'any'}"
                    raise ServiceError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"events[{i}]: entity_id {m.entity_id!r} / flow_id {m.flow_id!r} are outside "
                        f"this key's scope ({scope})",
                    )

        fingerprint = self.store.fingerprints.of
        classify = log.fields.classifier(account)

        def submit() -> Future[Any]:
            events = [event_from_proto(m, i, account) for i, m in enumerate(request.events)]
            for event in events:  # secrets never reach the log in clear
                sealed_event(event, fingerprint, classify)
            return log.submit(events)

        # Converting and validating costs tens of microseconds an event: a big
        # request is handled on the ingest thread so the loop keeps serving
        # reads and subscriptions; a small one is cheaper than the thread hop.
        if len(request.events) <= INLINE_EVENTS:
            return asyncio.wrap_future(submit())
        loop = asyncio.get_running_loop()
        return asyncio.wrap_future(await loop.run_in_executor(self.store.ingest, submit))

    @unary
    async def Append(
        self, request: submission_pb2.AppendRequest, context: Context
    ) -> submission_pb2.AppendResponse:
        account = self.store.account(context)
        return _results(await self._answer(await self._submit(request, account), account))

    async def _answer(self, durable: asyncio.Future[Any], account: str) -> list[Any]:
        """The results of a request once durable. A key limited to some entities or flows
        learns nothing of an event outside them: a duplicate of one answers position 0."""
        results: list[Any] = await durable
        key = CALLER.get()
        if key is None or not (key.entities or key.flows) or not any(r.duplicate for r in results):
            return results
        log = self.store.log

        def hidden(result: Any) -> bool:
            original = log.get(result.id, account)
            return original is None or not key.sees(original.entity_id, original.flow_id)

        answered = []
        for r in results:
            if r.duplicate and await self.store.run(hidden, r):
                r = replace(r, position=0, recorded_at_ms=0)
            answered.append(r)
        return answered

    @streaming
    async def AppendStream(
        self, request_iterator: AsyncIterator[submission_pb2.AppendRequest], context: Context
    ) -> AsyncIterator[submission_pb2.AppendResponse]:
        account = self.store.account(context)
        # Requests are validated and queued as they arrive; responses follow in
        # order as groups become durable. A bad request ends the stream after
        # the responses of every request before it.
        pending: asyncio.Queue[asyncio.Future[Any] | BaseException | None] = asyncio.Queue(
            APPEND_STREAM_IN_FLIGHT
        )

        key, gate = CALLER.get(), self.store.gate

        async def read() -> None:
            number = 0
            try:
                async for request in request_iterator:
                    if number and gate is not None:  # the call itself took the first message's token
                        await gate.pace(key)
                    await pending.put(await self._submit(request, account))
                    number += 1
            except Exception as e:
                await pending.put(_numbered(e, number))
                return
            await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await pending.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield _results(await self._answer(item, account))
        finally:
            reader.cancel()


def _numbered(error: Exception, number: int) -> Exception:
    from leadtrail.storage import StorageError

    if isinstance(error, StorageError | ServiceError):
        error.args = (f"request {number}: {error}",)
    return error


# -- queries ----------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    # JSON values: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


_ABSENT = object()


def _changes(before: Mapping[str, Any], after: Mapping[str, Any], out: Any) -> None:
    # Most fields of a lead stay the same from one step to the next: find the
    # changed ones with the cheapest test that can say "same", sort only those.
    changed = [field for field in before if field not in after]
    for field, value in after.items():
        old = before.get(field, _ABSENT)
        if old is value or (type(old) is type(value) and old == value):
            continue
        if old is _ABSENT or not _same(old, value):
            changed.append(field)
    for field in sorted(changed):
        if field not in before:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[field], change.after)
        elif field not in after:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[field], change.before)
        elif not _same(before[field], after[field]):
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[field], change.before)
            python_to_value(after[field], change.after)


def timeline_message(lead_id: str, events: list[Event], json_snapshots: bool = False) -> query_pb2.Timeline:
    timeline = query_pb2.Timeline(lead_id=lead_id)
    previous: Event | None = None
    for event in events:
        step = timeline.steps.add()
        event_to_proto(event, step.event, json_snapshots)
        if previous is not None:
            step.since_previous_ms = (event.timestamp_ms or 0) - (previous.timestamp_ms or 0)
        _changes(previous.lead if previous is not None else {}, event.lead, step.changes)
        previous = event
    if events:
        timeline.total_ms = (events[-1].timestamp_ms or 0) - (events[0].timestamp_ms or 0)
    return timeline


def _group_key(event: Event, group: int) -> str:
    ts = event.timestamp_ms or 0
    match group:
        case query_pb2.GROUP_BY_TYPE:
            return event.type
        case query_pb2.GROUP_BY_OUTCOME:
            return event_pb2.Outcome.Name(int(event.outcome))  # type: ignore[arg-type]
        case query_pb2.GROUP_BY_FLOW:
            return event.flow_id
        case query_pb2.GROUP_BY_ENTITY:
            return event.entity_id
        case query_pb2.GROUP_BY_HOUR:
            return datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%dT%H:00:00Z")
        case _:
            return datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%d")


def _scan_all(log: EventLog, f: EventFilter, include_lead: bool) -> Iterable[list[Event]]:
    cursor: str | None = None
    while True:
        page = log.scan(f, after=cursor, limit=SCAN_PAGE, include_lead=include_lead)
        yield page.events
        if page.cursor is None:
            return
        cursor = page.cursor


def aggregate(log: EventLog, f: EventFilter, groups: list[int]) -> query_pb2.AggregateResponse:
    counts: dict[tuple[str, ...], int] = {}
    sums: dict[tuple[str, ...], Decimal] = {}
    for events in _scan_all(log, f, include_lead=False):
        for event in events:
            key = tuple(_group_key(event, g) for g in groups)
            counts[key] = counts.get(key, 0) + 1
            if event.price:
                sums[key] = sums.get(key, Decimal(0)) + Decimal(event.price)
    response = query_pb2.AggregateResponse()
    for key in sorted(counts):
        response.rows.add(keys=key, count=counts[key], price_sum=plain_decimal(sums.get(key, Decimal(0))))
    return response


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


class QueryService(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @unary
    async def GetEvent(self, request: query_pb2.GetEventRequest, context: Context) -> event_pb2.Event:
        if not request.id:
            raise invalid("id", "required")
        event = await self.store.run(self.store.log.get, request.id, self.store.account(context))
        if event is None or not self.store.sees(event):
            raise not_found(f"event {request.id!r} not found")
        self.store.audit("GetEvent", request, 1)
        return event_to_proto(self.store.shown()(event), json_snapshots=request.json_snapshots)

    @unary
    async def GetTimeline(
        self, request: query_pb2.GetTimelineRequest, context: Context
    ) -> query_pb2.Timeline:
        if not request.lead_id:
            raise invalid("lead_id", "required")
        if len(request.lead_id) > 128:
            raise invalid("lead_id", "longer than the 128 characters an id may have")
        log, account, key = self.store.log, self.store.account(context), CALLER.get()
        shown = self.store.shown()

        def build() -> query_pb2.Timeline | None:  # on a read thread: the key is passed in
            events = [shown(e) for e in log.timeline(request.lead_id, account) if visible(key, e)]
            return timeline_message(request.lead_id, events, request.json_snapshots) if events else None

        timeline = await self.store.run(build)
        if timeline is None:
            raise not_found(f"lead {request.lead_id!r} has no events")
        self.store.audit("GetTimeline", request, len(timeline.steps))
        return timeline

    @unary
    async def QueryEvents(
        self, request: query_pb2.QueryEventsRequest, context: Context
    ) -> query_pb2.QueryEventsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise invalid("page_size", f"{size} is over the limit of {MAX_PAGE_SIZE}")
        f = self.store.filter(request.filter, context)
        log, shown = self.store.log, self.store.shown()

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
        self.store.audit("QueryEvents", request, len(response.events))
        return response

    @streaming
    async def Export(
        self, request: query_pb2.ExportRequest, context: Context
    ) -> AsyncIterator[query_pb2.ExportChunk]:
        f = self.store.filter(request.filter, context)
        if request.format == query_pb2.EXPORT_FORMAT_CSV:
            fields = list(request.fields) or list(CSV_DEFAULT_FIELDS)
            for i, name in enumerate(fields):
                prefix, _, rest = name.partition(".")
                if name not in CSV_FIELDS and not (prefix in ("lead", "details") and rest):
                    raise invalid(
                        f"fields[{i}]",
                        f"{name!r} is not an Event field ({', '.join(CSV_FIELDS)}) nor lead.<name> "
                        "or details.<name>",
                    )
            include_lead = any(name.startswith("lead.") for name in fields)
        elif request.format == query_pb2.EXPORT_FORMAT_JSONL:
            if request.fields:
                raise invalid("fields", "chooses CSV columns; JSONL exports whole events")
            fields, include_lead = [], True
        else:
            raise invalid("format", "EXPORT_FORMAT_JSONL or EXPORT_FORMAT_CSV is required")
        pages = iter(_scan_all(self.store.log, f, include_lead))
        shown = self.store.shown()
        exported = [0]

        def encode(events: list[Event]) -> bytes:
            events = [shown(e) for e in events]
            exported[0] += len(events)
            if not fields:
                return b"".join(orjson.dumps(event_to_json(e)) + b"\n" for e in events)
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            for e in events:
                record = event_to_json(e, include_lead=False)
                row = []
                for name in fields:
                    prefix, _, rest = name.partition(".")
                    if prefix == "lead" and rest:
                        row.append(_csv_value(e.lead.get(rest)))
                    elif prefix == "details" and rest:
                        row.append(_csv_value(e.details.get(rest)))
                    else:
                        row.append(_csv_value(record[name]))
                writer.writerow(row)
            return text.getvalue().encode()

        def next_bytes() -> bytes | None:
            events = next(pages, None)
            return None if events is None else encode(events)

        try:
            if fields:
                header = io.StringIO()
                csv.writer(header, lineterminator="\n").writerow(fields)
                yield query_pb2.ExportChunk(data=header.getvalue().encode())
            while (data := await self.store.run(next_bytes)) is not None:
                for start in range(0, len(data), EXPORT_CHUNK_BYTES):
                    yield query_pb2.ExportChunk(data=data[start : start + EXPORT_CHUNK_BYTES])
        finally:  # also when the client stops reading: what was read is recorded
            self.store.audit("Export", request, exported[0])

    @unary
    async def Aggregate(
        self, request: query_pb2.AggregateRequest, context: Context
    ) -> query_pb2.AggregateResponse:
        groups = list(request.group_by)
        for i, g in enumerate(groups):
            if g not in query_pb2.GroupBy.values() or g == query_pb2.GROUP_BY_UNSPECIFIED:
                raise invalid(f"group_by[{i}]", f"{g} is not a GroupBy value (GROUP_BY_TYPE..GROUP_BY_DAY)")
        f = self.store.filter(request.filter, context)
        response = await self.store.run(aggregate, self.store.log, f, groups)
        self.store.audit("Aggregate", request, sum(row.count for row in response.rows))
        return response


# -- subscriptions --------------------------------------------------------------------


def first_position_recorded_at_or_after(log: EventLog, ms: int) -> int:
    """The position to replay from for ``from_recorded_at`` (recorded_at never decreases)."""
    firsts: list[tuple[int, int]] = []
    for segment in log.segments:
        first = next(iter(log.read_from(segment.base, limit=1)), None)
        if first is not None:
            firsts.append((first.recorded_at_ms, first.position))
    candidate = 1
    for recorded, position in firsts:
        if recorded >= ms:
            break
        candidate = position
    for event in log.read_from(candidate):
        if event.recorded_at_ms >= ms:
            return event.position
    return log.last_position + 1


class StreamService(stream_pb2_grpc.StreamServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _start(self, request: stream_pb2.SubscribeRequest) -> int:
        """The last position before the replay begins."""
        start = request.WhichOneof("start")
        if start == "after_position":
            return request.after_position
        if start == "from_start":
            return 0
        if start == "from_recorded_at":
            ms = timestamp_to_ms(request.from_recorded_at)
            return await self.store.run(first_position_recorded_at_or_after, self.store.log, ms) - 1
        return self.store.log.last_position

    @streaming
    async def Subscribe(
        self, request: stream_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[stream_pb2.SubscribeResponse]:
        store = self.store
        f = store.filter(request.filter, context)
        batch_size = request.batch_size
        if batch_size > MAX_BATCH_SIZE:
            raise invalid("batch_size", f"{batch_size} is over the limit of {MAX_BATCH_SIZE}")
        json_snapshots = request.json_snapshots
        shown = store.shown()
        position = await self._start(request)  # everything up to here is scanned
        reported = position  # the last position the client has heard of
        reported_at = time.monotonic()
        caught_up = False
        reader: Any = None  # a disk iterator, kept while it is useful

        def read_disk(after: int) -> tuple[list[Event], int]:
            nonlocal reader
            visible = store.log.last_position
            if reader is None or reader[0] != after:
                reader = (after, iter(store.log.read_from(after + 1)))
            events = []
            for event in reader[1]:
                events.append(event)
                if len(events) == REPLAY_CHUNK:
                    break
            else:
                reader = None
            if events:
                if reader is not None:
                    reader = (events[-1].position, reader[1])
                return events, events[-1].position
            return events, max(after, visible)

        matched = 0  # events handed to the stream, for the audit record
        try:
            while not store.closing:
                recent = store.feed.after(position, REPLAY_CHUNK)
                rewrites = store.log.rewrites
                from_disk = recent is None or (not recent and position < store.log.last_position)
                if from_disk:
                    events, scanned = await store.run(read_disk, position)
                else:
                    events, reader = recent or [], None
                    scanned = events[-1].position if events else position

                def stale(from_disk: bool = from_disk, rewrites: int = rewrites) -> bool:
                    # Read from a file an erasure has rewritten since: never sent once it
                    # has returned; read again instead.
                    return from_disk and store.log.rewrites != rewrites

                batch: stream_pb2.SubscribeResponse | None = None  # matching events not yet sent
                batch_bytes = 0
                sent_through = position  # every event up to here was sent or passed over
                abandoned = False
                for event in events:
                    if f.matches(event):
                        matched += 1
                        if not batch_size:
                            response = stream_pb2.SubscribeResponse()
                            event_to_proto(shown(event), response.event, json_snapshots)
                            if stale():
                                abandoned = True
                                break
                            yield response
                            sent_through = event.position
                        else:
                            if batch is None:
                                batch, batch_bytes = stream_pb2.SubscribeResponse(), 0
                            message = batch.events.events.add()
                            event_to_proto(shown(event), message, json_snapshots)
                            batch_bytes += message.ByteSize()
                            if len(batch.events.events) >= batch_size or batch_bytes >= BATCH_BYTES:
                                if stale():
                                    abandoned = True
                                    break
                                yield batch
                                batch = None
                                sent_through = event.position
                        reported, reported_at = event.position, time.monotonic()
                    elif event.position - reported >= CHECKPOINT_EVERY_EVENTS:
                        if batch is not None:  # order: the events before the checkpoint go first
                            if stale():
                                abandoned = True
                                break
                            yield batch
                            batch = None
                        checkpoint = stream_pb2.Checkpoint(position=event.position)
                        yield stream_pb2.SubscribeResponse(checkpoint=checkpoint)
                        reported, reported_at = event.position, time.monotonic()
                        sent_through = event.position
                    elif batch is None:
                        sent_through = event.position
                if batch is not None and not abandoned:
                    if stale():
                        abandoned = True
                    else:
                        yield batch
                if abandoned:
                    position, reader = sent_through, None
                    reported = min(reported, sent_through)
                    continue
                position = max(position, scanned)
                if events or position < store.log.last_position:
                    continue
                if not caught_up:
                    yield stream_pb2.SubscribeResponse(caught_up=stream_pb2.CaughtUp(position=position))
                    caught_up = True
                    reported, reported_at = max(reported, position), time.monotonic()
                if position > reported and time.monotonic() - reported_at >= CHECKPOINT_EVERY_SECONDS:
                    yield stream_pb2.SubscribeResponse(checkpoint=stream_pb2.Checkpoint(position=position))
                    reported, reported_at = position, time.monotonic()
                await store.feed.wait(CHECKPOINT_EVERY_SECONDS)
            raise ClosedError("the server is shutting down")
        finally:
            store.audit("Subscribe", request, matched)


# -- administration -----------------------------------------------------------------


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @unary
    async def GetStats(self, request: admin_pb2.GetStatsRequest, context: Context) -> admin_pb2.Stats:
        # Figures of the whole store (its health is every account's concern), for an
        # admin of a whole account: a key limited to some entities sees no totals.
        self.store.account_admin("GetStats")
        return admin_pb2.Stats(**asdict(await self.store.run(self.store.log.stats)))

    @unary
    async def SetRetentionPolicy(
        self, request: admin_pb2.RetentionPolicy, context: Context
    ) -> admin_pb2.SetRetentionPolicyResponse:
        self.store.account_admin("SetRetentionPolicy")
        account = request.account_id or self.store.account(context)
        if CALLER.get() is not None and account != self.store.account(context):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"account_id {account!r}: a key may set the policy of its own account only",
            )
        if len(account) > 128:
            raise invalid("account_id", "longer than 128 characters")
        if request.max_age_days > 365 * 100:
            raise invalid("max_age_days", f"{request.max_age_days} is over the limit of {365 * 100} days")
        for name in ("pii_max_age_days", "secret_max_age_days"):
            if getattr(request, name) > 365 * 100:
                raise invalid(name, f"{getattr(request, name)} is over the limit of {365 * 100} days")
        policy = RetentionPolicy(
            account,
            request.max_age_days,
            request.legal_hold,
            request.pii_max_age_days,
            request.secret_max_age_days,
        )
        await self.store.run(self.store.log.set_retention_policy, policy)
        return admin_pb2.SetRetentionPolicyResponse(policy=admin_pb2.RetentionPolicy(**asdict(policy)))

    @unary
    async def ApplyRetention(
        self, request: admin_pb2.ApplyRetentionRequest, context: Context
    ) -> admin_pb2.ApplyRetentionResponse:
        key = self.store.account_admin("ApplyRetention")
        if key is not None and request.HasField("now"):
            # Ages are measured on the server's clock: a client's `now` could expire anything.
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "now: only in open mode (no API keys)")
        now = timestamp_to_ms(request.now) if request.HasField("now") else None
        account = key.account if key is not None else None
        report = await self.store.run(self.store.log.apply_retention, now, account)
        if report.events_scrubbed:
            self.store.feed.clear()  # memory held the values just erased: subscribers read disk
        # The engine's reports and the messages share their field names.
        return admin_pb2.ApplyRetentionResponse(**asdict(report))

    @unary
    async def Verify(self, request: admin_pb2.VerifyRequest, context: Context) -> admin_pb2.VerifyReport:
        self.store.account_admin("Verify")
        return admin_pb2.VerifyReport(**asdict(await self.store.run(self.store.log.verify)))

    @unary
    async def CreateKey(
        self, request: admin_pb2.CreateKeyRequest, context: Context
    ) -> admin_pb2.CreateKeyResponse:
        maker = self.store.account_admin("CreateKey")
        account = self.store.account(context)
        if (
            maker is not None
            and maker.rate_per_second
            and not (0 < request.rate_per_second <= maker.rate_per_second)
        ):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"rate_per_second: {request.rate_per_second}; a key made by a key limited to "
                f"{maker.rate_per_second} calls a second must be limited to as many or fewer",
            )
        try:
            secret, key = await self.store.run(
                lambda: self.store.keys.create(
                    account,
                    request.role,
                    _now_ms(),
                    list(request.entity_ids),
                    list(request.flow_ids),
                    request.rate_per_second,
                )
            )
        except KeyStoreError as e:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        return admin_pb2.CreateKeyResponse(key=secret, info=key_to_proto(key))

    @unary
    async def ListKeys(
        self, request: admin_pb2.ListKeysRequest, context: Context
    ) -> admin_pb2.ListKeysResponse:
        self.store.account_admin("ListKeys")
        keys = await self.store.run(self.store.keys.list_keys, self.store.account(context))
        return admin_pb2.ListKeysResponse(keys=[key_to_proto(k) for k in keys])

    @unary
    async def RevokeKey(self, request: admin_pb2.RevokeKeyRequest, context: Context) -> admin_pb2.ApiKey:
        if not request.key_id:
            raise invalid("key_id", "required")
        self.store.account_admin("RevokeKey")
        account = self.store.account(context)
        try:
            key = await self.store.run(self.store.keys.revoke, request.key_id, _now_ms(), account)
        except KeyStoreError:
            raise not_found(f"key {request.key_id!r} not found") from None
        return key_to_proto(key)

    @unary
    async def EraseLead(
        self, request: admin_pb2.EraseLeadRequest, context: Context
    ) -> admin_pb2.EraseLeadResponse:
        if not request.lead_id:
            raise invalid("lead_id", "required")
        if len(request.lead_id) > 128:
            raise invalid("lead_id", f"{len(request.lead_id)} characters, over the limit of 128")
        if len(request.reason) > 1024:
            raise invalid("reason", f"{len(request.reason)} characters, over the limit of 1024")
        key = self.store.account_admin("EraseLead")
        account = self.store.account(context)
        log = self.store.log
        held = [p for p in log.retention_policies() if p.account_id == account and p.legal_hold]
        if held:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"account {account!r} is under a legal hold: nothing of it may be erased until it is lifted",
            )
        requested_by = key.key_id if key is not None else "open-mode"
        report = await self.store.run(
            lambda: log.erase_lead(request.lead_id, account, requested_by=requested_by, reason=request.reason)
        )
        if report is None:
            raise not_found(f"lead {request.lead_id!r} has no events")
        erased = await self.store.run(log.timeline, request.lead_id, account)
        self.store.feed.replace(erased)  # the live feed's copies lose the values too
        return admin_pb2.EraseLeadResponse(**asdict(report))

    @unary
    async def SetFieldPolicy(self, request: admin_pb2.FieldPolicy, context: Context) -> admin_pb2.FieldPolicy:
        self.store.account_admin("SetFieldPolicy")
        account = self.store.account(context)
        if request.account_id and request.account_id != account:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"account_id {request.account_id!r}: a key may set the policy of its own account only",
            )
        policy = FieldPolicy(
            account, tuple(request.secret_fields), tuple(request.pii_fields), tuple(request.plain_fields)
        )
        try:
            stored = await self.store.run(self.store.log.set_field_policy, policy)
        except StorageError as e:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"field policy: {e}") from None
        return field_policy_to_proto(stored)

    @unary
    async def GetFieldPolicy(
        self, request: admin_pb2.GetFieldPolicyRequest, context: Context
    ) -> admin_pb2.FieldPolicy:
        return field_policy_to_proto(self.store.log.fields.get(self.store.account(context)))


def field_policy_to_proto(policy: FieldPolicy) -> admin_pb2.FieldPolicy:
    return admin_pb2.FieldPolicy(
        account_id=policy.account_id,
        secret_fields=policy.secret,
        pii_fields=policy.pii,
        plain_fields=policy.plain,
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def key_to_proto(key: ApiKey) -> admin_pb2.ApiKey:
    message = admin_pb2.ApiKey(
        key_id=key.key_id,
        account_id=key.account,
        role=key.role,
        entity_ids=key.entities,
        flow_ids=key.flows,
        rate_per_second=key.rate_per_second,
    )
    ms_to_timestamp(key.created_at_ms, message.created_at)
    if key.revoked:
        ms_to_timestamp(key.revoked_at_ms, message.revoked_at)
    return message
