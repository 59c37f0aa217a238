"""NATS JetStream as an event store: one file-backed stream, subjects ``ev.<flow>.<lead>.<type>``.

Each event is a message (the event as JSON) with its id in ``Nats-Msg-Id``
(JetStream's de-duplication, the idempotent publish NATS users reach for) and
its timestamp in a header. A publish is acknowledged once the server has
written the message to its file store, which JetStream does not fsync per
message by default (2.9 flushes and syncs on a timer): a crash of the machine
can lose acknowledged messages. The report says so beside every NATS figure.

Reads are what JetStream offers: an ephemeral consumer filtered by subject
(``ev.*.<lead>.>`` for a timeline, ``ev.*.*.<type>`` for a scan, whole
messages, snapshots included, as every system's scan returns them; there is
no index on the event's own timestamp, so the window is filtered in the
client), fetched in batches, then deleted. The live feed is an
ordered push consumer delivering new messages.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import orjson
from leadtrail.server.simulation import SimulatedEvent

from benchmarks.systems import (
    ChildProcess,
    Received,
    Session,
    System,
    command_output,
    find_binary,
    free_port,
    require_client,
)

STREAM = "EVENTS"
TIMESTAMP_HEADER = "Lt-Timestamp-Ms"
FETCH = 1000


def subject(d: SimulatedEvent) -> str:
    return f"ev.{d['flow_id']}.{d['lead_id']}.{d['type']}"


async def read_filtered(js: Any, filter_subject: str, *, headers_only: bool = False) -> list[Any]:
    """Every stored message on ``filter_subject``, in stream order, through an ephemeral consumer."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = ConsumerConfig(
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        headers_only=headers_only,
        mem_storage=True,
        inactive_threshold=30.0,
    )
    info = await js.add_consumer(STREAM, config=config)
    try:
        messages: list[Any] = []
        pending = info.num_pending or 0
        if pending:
            subscription = await js.pull_subscribe_bind(stream=STREAM, name=info.name)
            try:
                while len(messages) < pending:
                    messages += await subscription.fetch(min(FETCH, pending - len(messages)), timeout=10)
            finally:
                await subscription.unsubscribe()
        return messages
    finally:
        await js.delete_consumer(STREAM, info.name)


async def _quiet(error: Exception) -> None:
    """nats-py prints every connection error by default; the harness reports the ones that matter."""


class NatsSession(Session):
    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.js = connection.jetstream()

    async def append(self, events: Sequence[Any]) -> None:
        if len(events) == 1:
            name, event, headers = events[0]
            await self.js.publish(name, orjson.dumps(event), headers=headers)
            return
        # JetStream has no batch publish (before 2.12): publishes pipelined on one connection,
        # each waiting for its own acknowledgement.
        await asyncio.gather(
            *(self.js.publish(name, orjson.dumps(event), headers=headers) for name, event, headers in events)
        )

    async def timeline(self, lead_id: str) -> int:
        messages = await read_filtered(self.js, f"ev.*.{lead_id}.>")
        events = sorted((orjson.loads(m.data) for m in messages), key=lambda e: e["timestamp_ms"])
        return len(events)

    async def scan(self, event_type: str, start_ms: int, end_ms: int) -> int:
        messages = await read_filtered(self.js, f"ev.*.*.{event_type}")
        # Whole events, snapshots decoded, as the other systems' scans return them.
        return sum(
            1
            for m in messages
            if start_ms <= int(m.headers[TIMESTAMP_HEADER]) < end_ms and orjson.loads(m.data)
        )

    async def close(self) -> None:
        await self.connection.close()


class NatsJetStream(System):
    key = "nats"
    label = "NATS JetStream"

    def __init__(self) -> None:
        super().__init__()
        self.server: ChildProcess | None = None
        self.url = ""

    @property
    def setting(self) -> str:
        return "file storage, no fsync per message (default)"

    def check(self) -> None:
        require_client("nats", "nats-py")
        find_binary("nats-server")

    async def _connect(self) -> Any:
        import nats

        return await nats.connect(self.url, allow_reconnect=False, connect_timeout=5, error_cb=_quiet)

    async def start(self, directory: str) -> None:
        from nats.js.api import StorageType

        self.directory = os.path.join(directory, "data")
        os.makedirs(self.directory)
        port = free_port()
        self.url = f"nats://127.0.0.1:{port}"
        argv = [find_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", self.directory]
        self.server = ChildProcess("nats-server", argv, os.path.join(directory, "server.log"))

        async def probe() -> None:
            await (await self._connect()).close()

        await self.server.wait_until(probe)
        connection = await self._connect()
        try:
            await connection.jetstream().add_stream(name=STREAM, subjects=["ev.>"], storage=StorageType.FILE)
            self.version = connection.connected_server_version.__str__()
        finally:
            await connection.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def prepare(self, events: Sequence[SimulatedEvent]) -> list[Any]:
        return [
            (subject(d), d, {"Nats-Msg-Id": d["id"], TIMESTAMP_HEADER: str(d["timestamp_ms"])})
            for d in events
        ]

    async def session(self) -> Session:
        return NatsSession(await self._connect())

    async def replay(self) -> int:
        connection = await self._connect()
        try:
            messages = await read_filtered(connection.jetstream(), "ev.>")
            for message in messages:
                orjson.loads(message.data)  # a replay hands the client whole events
            return len(messages)
        finally:
            await connection.close()

    async def follow(self, received: Received, ready: asyncio.Event) -> None:
        from nats.js.api import DeliverPolicy

        connection = await self._connect()
        try:
            js = connection.jetstream()
            subscription = await js.subscribe("ev.>", ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
            ready.set()
            async for message in subscription.messages:
                received(message.headers["Nats-Msg-Id"])
        finally:
            await connection.close()

    async def stored(self) -> int:
        connection = await self._connect()
        try:
            info = await connection.jetstream().stream_info(STREAM)
            return int(info.state.messages)
        finally:
            await connection.close()

    def notes(self) -> list[str]:
        version = command_output([find_binary("nats-server"), "--version"])
        return [
            f"NATS JetStream ({version}): NOT DURABLE PER MESSAGE. A publish is acknowledged once the "
            "message is written to the file store, which JetStream does not fsync per message by "
            "default: a power loss or kernel crash can lose acknowledged messages. It is compared as "
            "the fast, non-fsyncing reference, never as a durable peer. File storage, one stream `ev.>`, "
            "subjects `ev.<flow>.<lead>.<type>`, ids in `Nats-Msg-Id` (de-duplication window 2 min); "
            "batches are 100 publishes pipelined on one connection. Timelines and scans use an "
            "ephemeral consumer filtered by subject (scans read whole messages, the time window filtered in "
            "the client: no index on event time); live is an ordered push consumer.",
        ]
