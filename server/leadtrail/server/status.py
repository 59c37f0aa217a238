"""Domain errors to gRPC status codes, in one place.

Every servicer method runs inside ``rpc_errors``: a nameable problem gets the
status API.md gives it and a message naming the field, the value's problem and
the limit; anything unexpected is INTERNAL with its description, never UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from leadtrail.storage import (
    ClosedError,
    CorruptionError,
    DataDirectoryError,
    InvalidArgumentError,
    LegalHoldError,
    LimitExceededError,
    NotFoundError,
    NotWritableError,
    StorageError,
)

log = logging.getLogger("leadtrail.server")

Context = grpc.aio.ServicerContext[Any, Any]


class ServiceError(Exception):
    """A request the server refuses for a reason of its own, with its status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


def invalid(field: str, rule: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {rule}")


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    match error:
        case ServiceError():
            return error.code, str(error)
        case LimitExceededError():
            return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
        case InvalidArgumentError():  # after LimitExceededError, one of its kind
            return grpc.StatusCode.INVALID_ARGUMENT, str(error)
        case LegalHoldError():
            return grpc.StatusCode.FAILED_PRECONDITION, str(error)
        case NotFoundError():
            return grpc.StatusCode.NOT_FOUND, str(error)
        case NotWritableError() if error.disk_full:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, f"disk full: {error}"
        case NotWritableError():
            return grpc.StatusCode.FAILED_PRECONDITION, str(error)
        case ClosedError():
            return grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
        case CorruptionError():
            return grpc.StatusCode.DATA_LOSS, str(error)
        case DataDirectoryError() | StorageError():
            return grpc.StatusCode.INTERNAL, str(error)
        case TimeoutError():
            return grpc.StatusCode.DEADLINE_EXCEEDED, str(error) or "deadline exceeded"
        case _:
            return grpc.StatusCode.INTERNAL, f"internal error: {error!r}"


def _retry_trailers(code: grpc.StatusCode, message: str, seconds: float) -> tuple[tuple[str, Any], ...]:
    """google.rpc.RetryInfo for any gRPC client, and a plain ``retry-after-ms`` for the SDK."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=[detail]))
    return (*status.trailing_metadata, ("retry-after-ms", str(max(1, round(seconds * 1000)))))


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> NoReturn:
    code, message = status_of(error)
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error", exc_info=error)
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        await context.abort(code, message, trailing_metadata=_retry_trailers(code, message, retry_after))
    await context.abort(code, message)
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


T = TypeVar("T")
R = TypeVar("R")
Unary = Callable[[Any, T, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]
Streaming = Callable[[Any, T, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[R]]


def _passes_through(error: BaseException) -> bool:
    # context.abort raises an exception of grpc's own to end the call; a
    # cancelled call raises CancelledError. Both must travel up untouched.
    return isinstance(error, asyncio.CancelledError) or type(error).__module__.startswith("grpc")


def unary(method: Unary[T, R]) -> Unary[T, R]:
    @wraps(method)
    async def wrapper(self: Any, request: T, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await method(self, request, context)
        except BaseException as e:
            if _passes_through(e) or not isinstance(e, Exception):
                raise
            await abort(context, e)

    return wrapper


def streaming(method: Streaming[T, R]) -> Streaming[T, R]:
    @wraps(method)
    async def wrapper(self: Any, request: T, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[R]:
        try:
            async for item in method(self, request, context):
                yield item
        except BaseException as e:
            if _passes_through(e) or not isinstance(e, Exception):
                raise
            await abort(context, e)

    return wrapper
