"""The console's reads: the same servicer code a gRPC call runs, called in-process.

A page never reads the store itself. It admits its visitor with the gate (``Gate.admit``:
keys, roles, rate limits, exactly as a gRPC call is admitted), sets the caller the
servicers read (``auth.CALLER``) and awaits the servicer method with a request message and
an ``InProcessContext``. Scopes, masking and the read audit then hold for a page as they
hold for a gRPC client, because it is the same code that applies them.

A refusal arrives as ``ServiceError`` with its gRPC status, whether the gate refused the
visitor or the servicer the request (its ``context.abort`` raises here).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc

from leadtrail.server.auth import CALLER, Gate
from leadtrail.server.convert import filter_from_proto
from leadtrail.server.keys import ApiKey
from leadtrail.server.status import ServiceError, status_of
from leadtrail.v1 import alerts_pb2, event_pb2, query_pb2, stream_pb2

Metadata = Sequence[tuple[str, str]]
"""What the gate reads of a call: ``authorization: Bearer <key>`` or nothing."""


class Queries(Protocol):
    """What the console calls of ``QueryService`` (answers are serialized messages or messages)."""

    def GetEvent(self, request: query_pb2.GetEventRequest, context: Any) -> Awaitable[bytes]: ...
    def GetTimeline(self, request: query_pb2.GetTimelineRequest, context: Any) -> Awaitable[bytes]: ...
    def Aggregate(
        self, request: query_pb2.AggregateRequest, context: Any
    ) -> Awaitable[query_pb2.AggregateResponse]: ...
    def FindLeads(
        self, request: query_pb2.FindLeadsRequest, context: Any
    ) -> Awaitable[query_pb2.FindLeadsResponse]: ...


class Alerts(Protocol):
    def ListAlerts(
        self, request: alerts_pb2.ListAlertsRequest, context: Any
    ) -> Awaitable[alerts_pb2.ListAlertsResponse]: ...


class Streams(Protocol):
    def Subscribe(self, request: stream_pb2.SubscribeRequest, context: Any) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class ConsoleServices:
    """The servicers of the server the console pages call (the ones its gRPC port serves)."""

    queries: Queries
    streams: Streams
    alerts: Alerts


class InProcessContext:
    """What the servicers use of a gRPC context: ``abort`` ends the call, here by raising."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise ServiceError(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class Calls:
    """Typed in-process calls, each admitted for its visitor's ``metadata`` first."""

    def __init__(self, gate: Gate, services: ConsoleServices) -> None:
        self.gate = gate
        self.services = services

    def admit(self, metadata: Metadata, rpc: str) -> ApiKey | None:
        """The visitor's key (None in open mode) if it may call ``rpc``, else ``ServiceError``."""
        return self.gate.admit(list(metadata), rpc)

    async def _unary(self, metadata: Metadata, rpc: str, call: Any, request: Any) -> Any:
        key = self.admit(metadata, rpc)
        token = CALLER.set(key)  # a keep-alive connection serves its requests in one task: reset after
        try:
            return await call(request, InProcessContext(metadata))
        finally:
            CALLER.reset(token)

    async def get_event(self, metadata: Metadata, request: query_pb2.GetEventRequest) -> event_pb2.Event:
        answer = await self._unary(metadata, "GetEvent", self.services.queries.GetEvent, request)
        return event_pb2.Event.FromString(answer) if isinstance(answer, bytes) else answer

    async def get_timeline(
        self, metadata: Metadata, request: query_pb2.GetTimelineRequest
    ) -> query_pb2.Timeline:
        answer = await self._unary(metadata, "GetTimeline", self.services.queries.GetTimeline, request)
        return query_pb2.Timeline.FromString(answer) if isinstance(answer, bytes) else answer

    async def aggregate(
        self, metadata: Metadata, request: query_pb2.AggregateRequest
    ) -> query_pb2.AggregateResponse:
        answer: query_pb2.AggregateResponse = await self._unary(
            metadata, "Aggregate", self.services.queries.Aggregate, request
        )
        return answer

    async def find_leads(
        self, metadata: Metadata, request: query_pb2.FindLeadsRequest
    ) -> query_pb2.FindLeadsResponse:
        answer: query_pb2.FindLeadsResponse = await self._unary(
            metadata, "FindLeads", self.services.queries.FindLeads, request
        )
        return answer

    async def list_alerts(
        self, metadata: Metadata, request: alerts_pb2.ListAlertsRequest
    ) -> alerts_pb2.ListAlertsResponse:
        answer: alerts_pb2.ListAlertsResponse = await self._unary(
            metadata, "ListAlerts", self.services.alerts.ListAlerts, request
        )
        return answer

    def subscribe(
        self, metadata: Metadata, request: stream_pb2.SubscribeRequest
    ) -> AsyncGenerator[stream_pb2.SubscribeResponse, None]:
        """The subscription's messages. The visitor is admitted and the filter checked here, at
        once (a refusal comes before a page starts streaming); the stream itself runs in the
        task that iterates it, whose caller it sets."""
        key = self.admit(metadata, "Subscribe")
        self.check_filter(request.filter)
        return self._subscribed(key, metadata, request)

    @staticmethod
    def check_filter(f: event_pb2.EventFilter) -> None:
        """``ServiceError`` with the status the servicers would answer for a malformed filter."""
        try:
            filter_from_proto(f)
        except Exception as e:
            raise ServiceError(*status_of(e)) from None

    async def _subscribed(
        self, key: ApiKey | None, metadata: Metadata, request: stream_pb2.SubscribeRequest
    ) -> AsyncGenerator[stream_pb2.SubscribeResponse, None]:
        CALLER.set(key)  # in the iterating task's own context: it ends with that task
        raw = self.services.streams.Subscribe(request, InProcessContext(metadata))
        parse = stream_pb2.SubscribeResponse.FromString
        try:
            async for message in raw:
                yield parse(message) if isinstance(message, bytes) else message
        finally:
            close = getattr(raw, "aclose", None)
            if close is not None:
                await close()
