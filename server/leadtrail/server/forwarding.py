"""A follower's Submission and Admin services: each call sent on to the writer process.

Requests and answers pass through as bytes, with the caller's metadata (its API
key), so that the writer admits, validates and answers exactly as it would a
client of its own: roles, rate budgets, error codes and their text stay one
thing. Many forwarded calls share one channel (HTTP/2 streams on one
connection), and the appends among them meet in the writer's group commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

Context = grpc.aio.ServicerContext[Any, Any]

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


def forwarded(channel: grpc.aio.Channel, service: ServiceDescriptor) -> grpc.GenericRpcHandler[Any, Any]:
    """Handlers for every method of ``service`` that forward it over ``channel``."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        path = f"/{service.full_name}/{method.name}"
        if method.client_streaming and method.server_streaming:
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
