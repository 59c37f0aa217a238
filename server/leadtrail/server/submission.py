"""SubmissionService: Append and AppendStream (validate, queue, answer once durable)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import grpc

from leadtrail.storage import SERVER_TYPE_PREFIXES, NotFoundError, StorageError
from leadtrail.v1 import submission_pb2, submission_pb2_grpc

from .caller import Caller
from .convert import event_from_proto, ms_to_timestamp
from .privacy import sealed_event
from .served_store import ServedStore
from .status import Context, ServiceError, invalid, streaming, unary
from .web.meters import meters_of

APPEND_STREAM_IN_FLIGHT = 64
INLINE_EVENTS = 8


class Handoff:
    """Brings durable answers from the writer thread to the event loop, one wake-up for
    all the answers a group commit resolves at once.

    ``asyncio.wrap_future`` wakes the loop once a future (a write to its self-pipe
    and a loop turn each): sixteen single-event Appends sharing one group cost
    sixteen wake-ups, taken from the one core the loop and the writer share.
    Here the first answer of a group schedules the delivery and the others join it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Any], Future[Any]]] = []

    def watch(self, durable: Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future resolved as ``durable`` is; cancelling it cancels ``durable``
        (a batch still queued is then not written, as with ``asyncio.wrap_future``)."""
        answer: asyncio.Future[Any] = self.loop.create_future()
        answer.add_done_callback(functools.partial(_give_up, durable))
        durable.add_done_callback(functools.partial(self._resolved, answer))
        return answer

    def _resolved(self, answer: asyncio.Future[Any], durable: Future[Any]) -> None:
        # The writer thread (or the loop, for a future already done).
        with self._lock:
            self._ready.append((answer, durable))
            first = len(self._ready) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _deliver(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for answer, durable in ready:
            if answer.done():
                continue
            if durable.cancelled():
                answer.cancel()
                continue
            error = durable.exception()
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(durable.result())


def _give_up(durable: Future[Any], answer: asyncio.Future[Any]) -> None:
    if answer.cancelled():
        durable.cancel()


def _results(results: Iterable[Any]) -> submission_pb2.AppendResponse:
    response = submission_pb2.AppendResponse()
    for r in results:
        out = response.results.add(
            id=r.id, position=r.position, duplicate=r.duplicate, conflict=r.conflict, chain_hash=r.chain_hash
        )
        if r.recorded_at_ms:  # 0: a duplicate the caller may not see (see _answer)
            ms_to_timestamp(r.recorded_at_ms, out.recorded_at)
    return response


class SubmissionService(submission_pb2_grpc.SubmissionServiceServicer):
    def __init__(self, store: ServedStore) -> None:
        self.store = store
        self._handoff: Handoff | None = None
        self._latency = meters_of(store.log).append_seconds  # /metrics: arrival to durable

    def _watch(self, durable: Future[Any]) -> asyncio.Future[Any]:
        handoff, loop = self._handoff, asyncio.get_running_loop()
        if handoff is None or handoff.loop is not loop:
            handoff = self._handoff = Handoff(loop)
        return handoff.watch(durable)

    async def _submit(self, request: submission_pb2.AppendRequest, caller: Caller) -> asyncio.Future[Any]:
        """Convert, validate and queue a request; the returned future resolves once durable."""
        log, account = self.store.log, caller.account
        for i, m in enumerate(request.events):
            if m.type.startswith(SERVER_TYPE_PREFIXES):
                prefix = next(p for p in SERVER_TYPE_PREFIXES if m.type.startswith(p))
                raise invalid(f"events[{i}].type", f"{prefix}* events are the server's own")
        key = caller.key
        if key is not None and caller.limited:
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
            return self._watch(submit())
        loop = asyncio.get_running_loop()
        return self._watch(await loop.run_in_executor(self.store.ingest, submit))

    @unary
    async def Append(
        self, request: submission_pb2.AppendRequest, context: Context
    ) -> submission_pb2.AppendResponse:
        arrived = time.perf_counter()
        caller = Caller.current()
        response = _results(await self._answer(await self._submit(request, caller), caller))
        self._latency.observe(caller.account, time.perf_counter() - arrived)
        return response

    def _observe(self, account: str, arrived: float, durable: asyncio.Future[Any]) -> None:
        if not durable.cancelled() and durable.exception() is None:
            self._latency.observe(account, time.perf_counter() - arrived)

    async def _answer(self, durable: asyncio.Future[Any], caller: Caller) -> list[Any]:
        """The results of a request once durable. A key limited to some entities or flows
        learns nothing of an event outside them: a duplicate of one answers position 0."""
        results: list[Any] = await durable
        if any(r.duplicate for r in results):
            results = await self._receipts(results)
        if not caller.limited or not any(r.duplicate for r in results):
            return results
        log, key = self.store.log, caller.key

        def hidden(result: Any) -> bool:
            original = log.get(result.id, caller.account)
            return original is None or not (
                key is not None and key.sees(original.entity_id, original.flow_id)
            )

        answered = []
        for r in results:
            if r.duplicate and await self.store.run(hidden, r):
                r = replace(r, position=0, recorded_at_ms=0, conflict=False, chain_hash=b"")
            answered.append(r)
        return answered

    async def _receipts(self, results: list[Any]) -> list[Any]:
        """A duplicate's receipt is the original event's chain hash: a client retrying after
        a lost answer gets the receipt it missed (recomputed off the writer's thread)."""
        log = self.store.log

        def receipt(position: int) -> bytes:
            try:
                return log.chain_point(position).chain_hash
            except NotFoundError:  # written before the chain
                return b""

        answered = []
        for r in results:
            if r.duplicate and not r.chain_hash and r.position:
                r = replace(r, chain_hash=await self.store.run(receipt, r.position))
            answered.append(r)
        return answered

    @streaming
    async def AppendStream(
        self, request_iterator: AsyncIterator[submission_pb2.AppendRequest], context: Context
    ) -> AsyncIterator[submission_pb2.AppendResponse]:
        caller, gate = Caller.current(), self.store.gate
        # Requests are validated and queued as they arrive; responses follow in
        # order as groups become durable. A bad request ends the stream after
        # the responses of every request before it.
        pending: asyncio.Queue[asyncio.Future[Any] | BaseException | None] = asyncio.Queue(
            APPEND_STREAM_IN_FLIGHT
        )

        async def read() -> None:
            number = 0
            try:
                async for request in request_iterator:
                    arrived = time.perf_counter()
                    if number and gate is not None:  # the call itself took the first message's token
                        await gate.pace(caller.key)
                    durable = await self._submit(request, caller)
                    durable.add_done_callback(functools.partial(self._observe, caller.account, arrived))
                    await pending.put(durable)
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
                yield _results(await self._answer(item, caller))
        finally:
            reader.cancel()


def _numbered(error: Exception, number: int) -> Exception:
    if isinstance(error, StorageError | ServiceError):
        error.args = (f"request {number}: {error}",)
    return error
