"""SinkService: an account's sinks (admin keys) and where each one is (reader keys and up).

Sinks are checked by ``rules.sink_from_message``, kept by the ``SinkBook`` (its file is
written on the read pool) and run by ``Sinks`` (the writer process; followers forward
the service to it). Another account's sinks do not exist for a caller.
"""

from __future__ import annotations

import time
from dataclasses import replace

import grpc

from leadtrail.server.caller import Caller
from leadtrail.server.convert import ms_to_timestamp
from leadtrail.server.served_store import ServedStore
from leadtrail.server.status import Context, ServiceError, not_found, unary
from leadtrail.v1 import sinks_pb2, sinks_pb2_grpc

from .book import TooManySinksError
from .registry import Sinks
from .rules import check_name, keeping_secret, message_from_sink, sink_from_message, translated_filter

AUDIT_TYPES = "audit.*"
"""What a reader key does not see: hidden from a masked sink too."""


class SinkService(sinks_pb2_grpc.SinkServiceServicer):
    def __init__(self, store: ServedStore) -> None:
        self.store = store

    def _sinks(self) -> Sinks:
        sinks = self.store.sinks
        if sinks is None:  # a follower forwards the service to the writer: never here
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "sinks are run by the writer")
        return sinks

    @unary
    async def SetSink(self, request: sinks_pb2.Sink, context: Context) -> sinks_pb2.Sink:
        sinks = self._sinks()
        caller = Caller.current()
        f = translated_filter(caller.filter, request.filter)
        if request.masked:
            f = replace(f, hidden_types=(*f.hidden_types, AUDIT_TYPES))
        spec, restart = sink_from_message(
            request, f, _now_ms(), self.store.log.last_position, sinks.files_roots
        )
        previous = sinks.book.get(spec.account_id, spec.name)
        caller.may_change(f"sink {spec.name!r}", None if previous is None else previous.filter, "sinks")
        if previous is not None and not restart:
            spec = replace(spec, start_after=previous.start_after)
        spec = keeping_secret(spec, previous)
        try:
            spec = await self.store.run(sinks.book.set, spec)
        except TooManySinksError as e:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        # A new sink starts where it was told even if a position of an earlier sink of its name
        # was left behind (a crash between deleting that sink and removing its position).
        await sinks.replace(spec, restart=restart or previous is None)
        return message_from_sink(spec)

    @unary
    async def ListSinks(
        self, request: sinks_pb2.ListSinksRequest, context: Context
    ) -> sinks_pb2.ListSinksResponse:
        listed = self._sinks().book.sinks(Caller.current().account)
        return sinks_pb2.ListSinksResponse(sinks=[message_from_sink(s) for s in listed])

    @unary
    async def DeleteSink(
        self, request: sinks_pb2.DeleteSinkRequest, context: Context
    ) -> sinks_pb2.DeleteSinkResponse:
        name = check_name(request.name)
        sinks = self._sinks()
        caller = Caller.current()
        account = caller.account
        held = sinks.book.get(account, name)
        caller.may_change(f"sink {name!r}", None if held is None else held.filter, "sinks")
        if held is None or not await self.store.run(sinks.book.delete, account, name):
            raise not_found(f"sink {name!r} not found")
        await sinks.remove(account, name, held.consumer_name)
        return sinks_pb2.DeleteSinkResponse()

    @unary
    async def GetSinkStatus(
        self, request: sinks_pb2.GetSinkStatusRequest, context: Context
    ) -> sinks_pb2.SinkStatus:
        name = check_name(request.name)
        state = self._sinks().status(Caller.current().account, name)
        if state is None:
            raise not_found(f"sink {name!r} not found")
        answer = sinks_pb2.SinkStatus(
            name=state.name,
            delivered_position=state.delivered_position,
            lag_events=state.lag_events,
            delivered_total=state.delivered_total,
            state=state.state,
            last_error=state.last_error,
        )
        if state.last_error_at_ms:
            ms_to_timestamp(state.last_error_at_ms, answer.last_error_at)
        return answer


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
