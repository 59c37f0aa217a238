"""StreamService: Subscribe, a subscription pump per call (see ``subscription``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from leadtrail.storage import ClosedError, Event, EventLog
from leadtrail.v1 import event_pb2, stream_pb2, stream_pb2_grpc

from .caller import Caller
from .convert import event_to_proto, timestamp_to_ms
from .served_store import ServedStore
from .status import Context, invalid, streaming
from .subscription import MAX_BATCH_SIZE, SubscriptionPump


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
    async def Subscribe(
        self, request: stream_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[stream_pb2.SubscribeResponse]:
        store, caller = self.store, Caller.current()
        f = caller.filter(request.filter)
        if request.batch_size > MAX_BATCH_SIZE:
            raise invalid("batch_size", f"{request.batch_size} is over the limit of {MAX_BATCH_SIZE}")
        shown, json_snapshots = caller.shown(store.log.fields), request.json_snapshots

        def encode(event: Event, out: event_pb2.Event) -> None:
            event_to_proto(shown(event), out, json_snapshots)

        closing: Callable[[], bool] = lambda: store.closing  # noqa: E731
        pump = SubscriptionPump(
            store.log,
            store.feed,
            store.run,
            f,
            encode,
            batch_size=request.batch_size,
            held=store.held,
            closing=closing,
        )
        position = await self._start(request)
        try:
            async for response in pump.responses(position):
                yield response
            raise ClosedError("the server is shutting down")
        finally:
            store.audit.record(caller, "Subscribe", request, pump.matched)
