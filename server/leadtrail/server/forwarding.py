"""A follower's Submission and Admin services: each call sent on to the writer process.

Requests and answers pass through as bytes, with the caller's metadata (its API
key), so that the writer admits, validates and answers exactly as it would a
client of its own: roles, rate budgets, error codes and their text stay one
thing.

Unary calls of the batched methods (appends) travel on one long-lived stream
(``FrameLink``): whatever calls arrived while the previous frame was being
written go to the writer as one frame (frames.py), and their answers come back
by tag. A gRPC call of its own per append cost the follower and the writer more
than the append itself; in frames, the writer admits a frame's items together
and they meet in one group commit. If the stream breaks (the writer restarts),
the calls in flight on it fail UNAVAILABLE (the SDK retries an idempotent
append) and the next call opens a new stream. Streaming calls and the rest keep
a gRPC call each, on the same channel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Collection
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from .frames import Answer, answers, item_bytes

Context = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger("leadtrail.server")

FRAMES_SERVICE = "leadtrail.worker.Forwarded"
FRAMES_METHOD = "Frames"
FRAMES = f"/{FRAMES_SERVICE}/{FRAMES_METHOD}"

_NOT_FORWARDED = ("user-agent", "content-type", "te", "grpc-")


def _metadata(context: Context) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith(":") and not key.startswith(_NOT_FORWARDED)
    )


def _timeout(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


async def _relay_error(context: Context, error: grpc.aio.AioRpcError) -> None:
    code = error.code()
    if code == grpc.StatusCode.CANCELLED and context.cancelled():
        return
    # Kept: the rich status (a rate limit's retry delay, a field violation) and any of ours.
    received: Any = error.trailing_metadata() or ()
    trailing = tuple(
        (key, value)
        for key, value in received
        if not key.startswith("grpc-") or key == "grpc-status-details-bin"
    )
    await context.abort(code, error.details() or "", trailing)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _unavailable(tag: int, why: str) -> Answer:
    details = f"the writer worker is unavailable ({why})"
    return Answer(tag, grpc.StatusCode.UNAVAILABLE.value[0], details.encode())


class FrameLink:
    """The follower's end of the frames stream: calls in, each call's answer out."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._open = channel.stream_stream(FRAMES, None, None)
        self._queued: list[tuple[int, bytes]] = []
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._tags = itertools.count(1)
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def call(self, path: str, metadata: Any, timeout: float | None, request: bytes) -> Answer:
        """The writer's answer to one call (UNAVAILABLE when the stream broke under it)."""
        tag = next(self._tags)
        if self._closed:
            return _unavailable(tag, "the server is shutting down")
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[tag] = answer
        self._queued.append((tag, item_bytes(tag, path, metadata, request, timeout)))
        self._wake.set()
        try:
            return await answer
        finally:
            self._waiting.pop(tag, None)

    def _resolve(self, answer: Answer) -> None:
        waiting = self._waiting.get(answer.tag)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)

    async def _send(self) -> None:
        """Opens a stream when there is something to send; writes what piled up as one frame
        while the last write was under way; when the stream ends, fails what it carried."""
        while not self._closed:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            call = self._open(None)  # written to with call.write
            sent: set[int] = set()
            receiving = asyncio.create_task(self._receive(call, sent))
            why = "the stream to it ended"
            try:
                while not receiving.done() and not self._closed:
                    if not self._queued:
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    # One loop turn more: the calls grpc hands over in this turn join the frame.
                    await asyncio.sleep(0)
                    batch, self._queued = self._queued, []
                    sent.update(tag for tag, _ in batch)
                    await call.write(b"".join(raw for _, raw in batch))
            except grpc.aio.AioRpcError as e:
                why = f"{e.code().name}: {e.details()}"
            except (grpc.aio.UsageError, asyncio.InvalidStateError) as e:
                why = str(e) or type(e).__name__
            finally:
                call.cancel()
                receiving.cancel()
                for tag in sent:
                    self._resolve(_unavailable(tag, why))

    async def _receive(self, call: Any, sent: set[int]) -> None:
        try:
            while True:
                frame = await call.read()
                if not isinstance(frame, bytes):  # grpc.aio.EOF: the writer is stopping
                    return
                for answer in answers(frame):
                    sent.discard(answer.tag)
                    self._resolve(answer)
        except grpc.aio.AioRpcError as e:
            if not self._closed:
                log.info("frames stream to the writer lost (%s)", e.code())
        finally:
            self._wake.set()  # the sender ends this stream

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._sender is not None:
            self._sender.cancel()
        for tag in list(self._waiting):
            self._resolve(_unavailable(tag, "the server is shutting down"))


async def _relay_answer(context: Context, answer: Answer) -> None:
    trailing = tuple(
        (key, value)
        for key, value in answer.metadata
        if not key.startswith("grpc-") or key == "grpc-status-details-bin"
    )
    await context.abort(_CODES.get(answer.code, grpc.StatusCode.UNKNOWN), answer.details, trailing)


def forwarded(
    channel: grpc.aio.Channel,
    service: ServiceDescriptor,
    frames: FrameLink | None = None,
    batched: Collection[str] = (),
) -> grpc.GenericRpcHandler[Any, Any]:
    """Handlers for every method of ``service`` that forward it over ``channel``; the unary
    methods named in ``batched`` travel in the frames of ``frames``."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        if frames is not None and method.name in batched:
            if method.client_streaming or method.server_streaming:
                raise ValueError(f"{path}: only unary methods travel in frames")

            async def framed(
                raw: bytes, context: Context, path: str = path, frames: FrameLink = frames
            ) -> Any:
                answer = await frames.call(path, _metadata(context), _timeout(context), raw)
                if answer.code:
                    await _relay_answer(context, answer)
                return answer.body

            handlers[method.name] = grpc.unary_unary_rpc_method_handler(framed)
        elif method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path, None, None)

            async def bidi(requests: AsyncIterator[bytes], context: Context, stream: Any = stream) -> Any:
                call = stream(requests, metadata=_metadata(context), timeout=_timeout(context))
                try:
                    async for response in call:
                        yield response
                except grpc.aio.AioRpcError as e:
                    await _relay_error(context, e)
                finally:
                    call.cancel()

            handlers[method.name] = grpc.stream_stream_rpc_method_handler(bidi)
        elif method.server_streaming:
            unary_stream = channel.unary_stream(path, None, None)

            async def fan_out(raw: bytes, context: Context, stream: Any = unary_stream) -> Any:
                call = stream(raw, metadata=_metadata(context), timeout=_timeout(context))
                try:
                    async for response in call:
                        yield response
                except grpc.aio.AioRpcError as e:
                    await _relay_error(context, e)
                finally:
                    call.cancel()

            handlers[method.name] = grpc.unary_stream_rpc_method_handler(fan_out)
        elif not method.client_streaming:
            unary = channel.unary_unary(path, None, None)

            async def single(raw: bytes, context: Context, unary: Any = unary) -> Any:
                try:
                    return await unary(raw, metadata=_metadata(context), timeout=_timeout(context))
                except grpc.aio.AioRpcError as e:
                    await _relay_error(context, e)

            handlers[method.name] = grpc.unary_unary_rpc_method_handler(single)
        else:  # pragma: no cover - leadtrail.v1 has no client-streaming-only method
            raise NotImplementedError(f"{path}: client streaming is not forwarded")
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
