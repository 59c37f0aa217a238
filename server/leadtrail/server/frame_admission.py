"""The writer's side of batched forwarding: each item of a frame answered as a direct call.

An item (frames.py) runs through the very handler a client of the writer's own
reaches (app.py's handlers: admission by the item's API key, its role and rate
budget, parsing, validation), with a context that hands it the item's metadata
and keeps what it aborted with. So a forwarded call's status code, details and
trailing metadata (a rate limit's retry delay, a field violation) are those of
the direct call. The items of one frame are all started in one loop turn: their
appends reach the log together and meet in one group commit. Answers go back in
frames too, each holding whatever became ready while the previous one was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple, NoReturn

import grpc

from .frames import Answer, Item, Metadata, answer_bytes, items

Context = grpc.aio.ServicerContext[Any, Any]


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: Metadata


class ItemContext:
    """What a handler asks of its call, for one forwarded item."""

    def __init__(self, metadata: Metadata, timeout: float | None) -> None:
        self._metadata = metadata
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.trailing: Metadata = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def cancelled(self) -> bool:
        return False

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailing = tuple(metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, Any]] = ()
    ) -> NoReturn:
        self.code, self.details = code, details
        if trailing_metadata:
            self.trailing = tuple(trailing_metadata)
        # The error grpc's own context raises to end a call: handlers let it pass untouched.
        raise grpc.aio.AbortError()


def _refusal(tag: int, code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> Answer:
    return Answer(tag, code.value[0], details.encode("utf-8"), trailing)


class FrameService:
    """Answers the items of frames with ``handlers`` (the writer's own, for its clients)."""

    def __init__(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._handlers = handlers
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}
        self._running: set[asyncio.Task[None]] = set()
        """Items still being answered; kept here so that none is collected mid-way."""

    def _method(self, name: str) -> grpc.RpcMethodHandler[Any, Any] | None:
        if name not in self._methods:
            found = None
            for generic in self._handlers:
                found = generic.service(_CallDetails(name, ()))  # type: ignore[arg-type]
                if found is not None:
                    break
            self._methods[name] = found
        return self._methods[name]

    async def answer(self, item: Item) -> Answer:
        method = self._method(item.method)
        if method is None or method.unary_unary is None:
            return _refusal(item.tag, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        context = ItemContext(item.metadata, item.timeout)
        try:
            response = await method.unary_unary(item.request, context)  # type: ignore[arg-type]
        except grpc.aio.AbortError:
            return _refusal(item.tag, context.code, context.details, context.trailing)
        except Exception as e:  # as grpc answers a handler's uncaught error
            return _refusal(item.tag, grpc.StatusCode.UNKNOWN, f"Unexpected {type(e)}: {e}")
        serialize = method.response_serializer
        body = response if serialize is None else serialize(response)
        return Answer(item.tag, 0, body)

    async def serve(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        """One follower's stream: frames of items in, frames of answers out."""
        ready: list[bytes] = []
        wake = asyncio.Event()
        open_items = 0
        reading_done = False

        async def one(item: Item) -> None:
            nonlocal open_items
            try:
                ready.append(answer_bytes(await self.answer(item)))
            finally:
                open_items -= 1
                wake.set()

        async def read() -> None:
            nonlocal open_items, reading_done
            try:
                async for frame in requests:
                    for item in items(frame):
                        open_items += 1
                        task = asyncio.create_task(one(item))
                        self._running.add(task)
                        task.add_done_callback(self._running.discard)
            finally:
                reading_done = True
                wake.set()

        reading = asyncio.create_task(read())
        try:
            while True:
                if ready:
                    frame = b"".join(ready)
                    ready.clear()
                    yield frame
                    continue
                if reading_done and not open_items:
                    break
                wake.clear()
                await wake.wait()
            await reading  # a malformed frame ends the stream with its error
        finally:
            # The items already started finish (their appends may be durable): only
            # their answers, with nobody left to take them, are dropped.
            reading.cancel()

    def handler(self, service: str, method: str) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            service, {method: grpc.stream_stream_rpc_method_handler(self.serve)}
        )
