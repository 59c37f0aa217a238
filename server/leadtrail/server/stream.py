"""StreamService: Subscribe, a subscription pump per call (see ``subscription``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable

from leadtrail.storage import ClosedError, Event, EventLog, StoredEvent
from leadtrail.v1 import stream_pb2, stream_pb2_grpc

from .caller import MASKED_ROLES, Caller, FieldClasses
from .convert import event_to_proto, timestamp_to_ms
from .served_store import ServedStore
from .status import Context, invalid, streaming
from .subscription import MAX_BATCH_SIZE, SubscriptionPump, event_field
from .web.meters import meters_of


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


def form_of(caller: Caller, fields: FieldClasses, json_snapshots: bool) -> Callable[[Event], Hashable]:
    """The form an event is sent to ``caller`` in: subscribers of equal forms share one
    encoding of each live event. Unmasked, every subscriber sees the stored content and
    only the snapshot form differs (an event reaches only its own account's subscribers).
    Masked, the encoding depends on the account's field policy as it stands when the event
    is encoded (its classifier, looked up per event as ``Caller.shown`` does) and is never
    shared with another account or role."""
    key = caller.key
    if key is None or key.role not in MASKED_ROLES:
        as_stored = ("as stored", json_snapshots)
        return lambda event: as_stored
    role, account = key.role, key.account
    return lambda event: ("masked", role, account, fields.classifier(account), json_snapshots)


class StreamService(stream_pb2_grpc.StreamServiceServicer):
    def __init__(self, store: ServedStore) -> None:
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
    async def Subscribe(  # type: ignore[override]  # answers serialized messages (see app._serializer)
        self, request: stream_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[bytes]:
        store, caller = self.store, Caller.current()
        f = caller.filter(request.filter, self.store.log.fields)
        if request.batch_size > MAX_BATCH_SIZE:
            raise invalid("batch_size", f"{request.batch_size} is over the limit of {MAX_BATCH_SIZE}")
        fields, json_snapshots = store.log.fields, request.json_snapshots
        shown, form, feed = caller.shown(fields), form_of(caller, fields, json_snapshots), store.feed

        def encode(event: Event) -> bytes:
            return event_field(event_to_proto(shown(event), None, json_snapshots).SerializeToString())

        def serialized(event: Event) -> bytes:
            return feed.encoded(event, form(event), encode)

        masking = caller.masking(fields)
        stored: Callable[[StoredEvent], bytes]
        # Replayed from disk: spliced from the stored bytes, or decoded for the one masking pass
        # when the caller's role masks personal fields.
        if masking is None:
            stored = StoredEvent.wire if json_snapshots else StoredEvent.wire_structs
        else:
            shown_masked = masking

            def stored(record: StoredEvent) -> bytes:
                return event_to_proto(shown_masked(record.event()), None, json_snapshots).SerializeToString()

        closing: Callable[[], bool] = lambda: store.closing  # noqa: E731
        pump = SubscriptionPump(
            store.log,
            feed,
            store.run,
            f,
            serialized=serialized,
            stored=stored,
            batch_size=request.batch_size,
            held=store.held,
            closing=closing,
        )
        position = await self._start(request)
        try:
            with meters_of(store.log).subscriptions.live(caller.account, pump):
                async for response in pump.wire_responses(position):
                    yield response
            raise ClosedError("the server is shutting down")
        finally:
            store.audit.record(caller, "Subscribe", request, pump.matched)
