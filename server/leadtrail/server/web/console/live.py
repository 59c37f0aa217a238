"""``GET /live/stream``: new events as they commit, as Server-Sent Events.

The events come from ``StreamService.Subscribe`` (from the log's end, or after the
``Last-Event-ID`` a reconnecting browser sends), so the visitor's scope and masking apply
as over gRPC and the subscription counts in ``leadtrail_subscribers``. Each event is one
``data:`` line of JSON (``id:`` its position); a comment line every ``HEARTBEAT_SECONDS``
keeps proxies from closing an idle stream.

Nothing piles up for a slow browser: the subscription runs in a task that hands its
messages through a queue of ``QUEUE_MESSAGES``; when the browser reads slowly, the write
waits (aiohttp's drain), the queue fills, the task waits, and the subscription's pump stops
at its send as it does for a slow gRPC client. When the browser goes (its connection
closes, seen within ``POLL_SECONDS``) the task is cancelled and the subscription ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import orjson
from aiohttp import web

from leadtrail.client.wire import outcome_name
from leadtrail.server.status import ServiceError, invalid
from leadtrail.v1 import event_pb2, stream_pb2

from .display import utc_of

HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 1.0
QUEUE_MESSAGES = 16
RETRY_MS = 3000
"""How long a browser waits before it reconnects a dropped stream."""
_END = object()
OUTCOMES = ("success", "failure", "error", "skip", "unspecified")
FILTERS = ("type", "outcome", "entity")
"""The live view's query parameters."""


def payload(event: event_pb2.Event) -> bytes:
    """One event as the live view shows it (as the visitor may see it: masked or not)."""
    record: dict[str, Any] = {
        "id": event.id,
        "position": event.position,
        "type": event.type,
        "timestamp": utc_of(event.timestamp),
        "lead_id": event.lead_id,
        "flow_id": event.flow_id,
        "entity_id": event.entity_id,
        "outcome": outcome_name(event.outcome),
        "price": event.price,
        "reason": event.reason,
        "lead": orjson.loads(event.lead_json) if event.lead_json else {},
    }
    return b"id: %d\ndata: %s\n\n" % (event.position, orjson.dumps(record))


def _events(message: stream_pb2.SubscribeResponse) -> list[event_pb2.Event]:
    kind = message.WhichOneof("message")
    if kind == "event":
        return [message.event]
    if kind == "events":
        return list(message.events.events)
    return []


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def stream(
    request: web.Request,
    messages: AsyncGenerator[stream_pb2.SubscribeResponse, None],
    headers: dict[str, str],
) -> web.StreamResponse:
    """Sends ``messages`` to the browser until it goes or the subscription ends."""
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no"}
    )
    queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_MESSAGES)

    async def subscribe() -> None:
        try:
            async for message in messages:
                await queue.put(message)
        except ServiceError as e:
            await queue.put(e)
        finally:  # also when cancelled while waiting at the queue: the subscription ends now
            await messages.aclose()
        await queue.put(_END)

    pump = asyncio.create_task(subscribe())
    getter: asyncio.Future[Any] | None = None
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        await response.write(b"retry: %d\n: connected\n\n" % RETRY_MS)
        written = loop.time()
        while not _gone(request):
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter}, timeout=POLL_SECONDS)
            if getter not in done:
                if loop.time() - written >= HEARTBEAT_SECONDS:
                    await response.write(b": heartbeat\n\n")
                    written = loop.time()
                continue
            message, getter = getter.result(), None
            if message is _END:
                break
            if isinstance(message, ServiceError):
                if message.code == grpc.StatusCode.UNAVAILABLE:
                    break  # the server is going: the browser reconnects after RETRY_MS
                refused = orjson.dumps({"error": str(message), "code": message.code.name})
                await response.write(b"event: refused\ndata: %s\n\n" % refused)
                break
            if message.WhichOneof("message") == "caught_up":
                await response.write(b"event: ready\ndata: {}\n\n")
            for event in _events(message):
                await response.write(payload(event))
            written = loop.time()
    except ConnectionError:  # the browser went while we wrote
        pass
    finally:
        if getter is not None:
            getter.cancel()
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
    return response


def live_filter(wanted: dict[str, str]) -> event_pb2.EventFilter:
    """The filter of the live view's ``type``, ``outcome`` and ``entity`` parameters."""
    f = event_pb2.EventFilter()
    if wanted["type"]:
        f.types.append(wanted["type"])
    if wanted["outcome"]:
        name = "OUTCOME_" + wanted["outcome"].upper()
        if name not in event_pb2.Outcome.keys():  # noqa: SIM118  # an EnumTypeWrapper, not a dict
            raise invalid("outcome", f"{wanted['outcome']!r} is not one of {', '.join(OUTCOMES)}")
        f.outcomes.append(event_pb2.Outcome.Value(name))
    if wanted["entity"]:
        f.entity_id = wanted["entity"]
    return f
