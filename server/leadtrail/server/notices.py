"""The private service between the writer process and its followers.

``Follow`` (bidirectional stream): the writer sends a follower the newest
``CommitNotice`` (storage/follow.py) whenever the store moved; notices that pile
up while one is in flight are merged into the newest, since each says all there
is to know. The follower answers each new maintenance epoch with that epoch once
it has reloaded. An admin call that changed the store on disk (an erasure,
retention, a field policy, a key) returns only after every connected follower
answered: a value erased is then served by no worker, from no stale descriptor
and no cache (``settle``).

``Audit`` (unary): the read-audit records a follower makes, written by the writer.

Bytes on this channel are JSON; it never leaves the machine (a Unix socket in a
directory only the server's user can enter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, Protocol

import grpc
import orjson

from leadtrail.storage import Event, Outcome
from leadtrail.storage.follow import CommitNotice, tail_states
from leadtrail.storage.segment import Segment

log = logging.getLogger("leadtrail.server")

SERVICE = "leadtrail.worker.Writer"
FOLLOW = f"/{SERVICE}/Follow"
AUDIT = f"/{SERVICE}/Audit"
LATEST = f"/{SERVICE}/Latest"
SETTLE_SECONDS = 10.0
"""How long an admin call waits for the followers' answers; one that does not answer
in time is reported in the log (it is hung or dying, and is restarted)."""
RECONNECT_SECONDS = (0.05, 1.0)

Context = grpc.aio.ServicerContext[Any, Any]


class WrittenStore(Protocol):
    @property
    def segments(self) -> list[Segment]: ...

    @property
    def last_position(self) -> int: ...

    @property
    def dictionaries(self) -> Any: ...


class _Peer:
    def __init__(self) -> None:
        self.acked = 0
        self.changed = asyncio.Event()


class NoticeHub:
    """The writer's side: the newest notice and the followers connected to it."""

    def __init__(self, store: WrittenStore) -> None:
        self._store = store
        # Starts from the clock: a restarted writer's epoch differs from the last one's, so a
        # follower that reconnects reloads what recovery may have changed.
        self.epoch = time.time_ns()
        self._latest = self.notice()
        self._peers: set[_Peer] = set()
        self._acks = asyncio.Condition()
        self._closed = False

    def notice(self) -> CommitNotice:
        store = self._store
        return CommitNotice(
            store.last_position, self.epoch, tail_states(store.segments), store.dictionaries.current_id
        )

    def publish(self, notice: CommitNotice | None = None) -> None:
        """On the event loop: the store moved (``notice`` made on the writer thread)."""
        self._latest = notice or self.notice()
        for peer in self._peers:
            peer.changed.set()

    async def settle(self) -> None:
        """A new maintenance epoch: wait until every follower reloaded (bounded)."""
        self.epoch += 1
        epoch = self.epoch
        self.publish()
        async with self._acks:
            try:
                await asyncio.wait_for(
                    self._acks.wait_for(lambda: all(p.acked >= epoch for p in self._peers)), SETTLE_SECONDS
                )
            except TimeoutError:
                log.warning("a follower did not reload within %s s of a maintenance call", SETTLE_SECONDS)

    def close(self) -> None:
        """End every Follow stream (the writer is stopping)."""
        self._closed = True
        for peer in self._peers:
            peer.changed.set()

    async def _follow(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        peer = _Peer()
        self._peers.add(peer)

        async def acks() -> None:
            async for raw in requests:
                peer.acked = int(raw)
                async with self._acks:
                    self._acks.notify_all()

        reading = asyncio.create_task(acks())
        sent: CommitNotice | None = None
        try:
            while not self._closed:
                peer.changed.clear()
                latest = self._latest
                if latest is not sent:
                    sent = latest
                    yield latest.to_bytes()
                else:
                    await peer.changed.wait()
        finally:
            reading.cancel()
            self._peers.discard(peer)
            async with self._acks:
                self._acks.notify_all()  # a follower gone is not waited for

    def handler(self, submit: Callable[[list[Event]], object]) -> grpc.GenericRpcHandler[Any, Any]:
        """The private service, with ``submit`` taking followers' audit records."""

        async def audit(raw: bytes, context: Context) -> bytes:
            try:
                submit(events_from_bytes(raw))
            except Exception as e:  # an audit record never fails the read it records
                log.warning("audit records of a follower not written: %s", e)
            return b""

        async def latest(raw: bytes, context: Context) -> bytes:
            return str(self._store.last_position).encode()

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Follow": grpc.stream_stream_rpc_method_handler(self._follow),
                "Audit": grpc.unary_unary_rpc_method_handler(audit),
                "Latest": grpc.unary_unary_rpc_method_handler(latest),
            },
        )


# -- the follower's side ---------------------------------------------------------------------


class WriterLink:
    """A follower's channel to the writer: notices in, acknowledgements and audit records out."""

    def __init__(self, socket_path: str, max_message_bytes: int) -> None:
        self.channel = grpc.aio.insecure_channel(
            f"unix:{socket_path}",
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # The writer's socket appears (again) within a second or two of start: try
                # often, so a follower serves soon after it does.
                ("grpc.initial_reconnect_backoff_ms", 20),
                ("grpc.min_reconnect_backoff_ms", 20),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self._call: Any = None
        self._closed = False

    async def notices(self) -> AsyncIterator[tuple[CommitNotice, bool]]:
        """Each notice, and whether it is the first of a new connection (the writer may
        have restarted and recovered: reload). Reconnects until ``close``."""
        delay = RECONNECT_SECONDS[0]
        while not self._closed:
            # No request iterator: acknowledgements are written on the call (``acknowledge``).
            call = self._call = self.channel.stream_stream(FOLLOW, None, None)(None, wait_for_ready=True)
            first = True
            try:
                while True:
                    raw = await call.read()
                    if not isinstance(raw, bytes):  # grpc.aio.EOF: the writer is stopping
                        break
                    delay = RECONNECT_SECONDS[0]
                    yield CommitNotice.from_bytes(raw), first
                    first = False
            except grpc.aio.AioRpcError as e:
                if self._closed:
                    return
                log.info("writer link lost (%s); reconnecting", e.code())
            finally:
                call.cancel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_SECONDS[1])

    async def acknowledge(self, epoch: int) -> None:
        call = self._call
        if call is not None:
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                await call.write(str(epoch).encode())

    def submit(self, events: list[Event]) -> Future[Any]:
        """Hand read-audit records to the writer (as ``EventLog.submit`` would, not waited for)."""
        return asyncio.run_coroutine_threadsafe(self._audit(events), asyncio.get_running_loop())

    async def _audit(self, events: list[Event]) -> None:
        try:
            await self.channel.unary_unary(AUDIT, None, None)(events_to_bytes(events), timeout=SETTLE_SECONDS)
        except grpc.aio.AioRpcError as e:
            log.warning("audit records not handed to the writer: %s", e.code())

    async def latest(self, timeout: float) -> int | None:
        """The writer's visible position now; None when it does not answer in time."""
        try:
            raw = await self.channel.unary_unary(LATEST, None, None)(b"", timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        return int(raw)

    async def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        await self.channel.close(None)


_AUDIT_FIELDS = ("type", "lead_id", "flow_id", "entity_id", "reason", "details", "account_id")


def events_to_bytes(events: list[Event]) -> bytes:
    return orjson.dumps(
        [{**{name: getattr(e, name) for name in _AUDIT_FIELDS}, "outcome": int(e.outcome)} for e in events]
    )


def events_from_bytes(raw: bytes) -> list[Event]:
    return [
        Event(**{name: item[name] for name in _AUDIT_FIELDS}, outcome=Outcome(item["outcome"]))
        for item in orjson.loads(raw)
    ]
