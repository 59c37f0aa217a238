"""LeadTrail as its users run it: ``leadtrail serve`` (default fsync policy), called through the SDK.

Beside it, the empty-handler gRPC ceiling (``benchmarks/_grpc_ceiling.py``): a
grpc.aio server built like LeadTrail's whose handlers answer at once, called
with the very requests the SDK sends (the SDK's own conversion, in the clock
for both), so the gap between the two is the work of LeadTrail's handlers,
not of Python gRPC or of the client.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from leadtrail.client import AsyncClient, CaughtUp, Event, Outcome
from leadtrail.client._convert import append_request  # the exact bytes the SDK sends
from leadtrail.server.simulation import SimulatedEvent
from leadtrail.v1 import query_pb2

from benchmarks import _grpc_ceiling as ceiling
from benchmarks.systems import (
    INGEST_BATCH,
    INGEST_SINGLE_1,
    INGEST_SINGLE_16,
    TIMELINE_1,
    TIMELINE_4,
    ChildProcess,
    Received,
    Session,
    System,
)

READY = r"serving on (\S+:\d+)"
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # One connection per client, as separate processes of an application would have;
    # otherwise grpc shares one subchannel between channels to the same address.
    ("grpc.use_local_subchannel_pool", 1),
]


def to_client_event(d: SimulatedEvent) -> Event:
    return Event(
        type=d["type"],
        lead_id=d["lead_id"],
        flow_id=d["flow_id"],
        id=d["id"],
        timestamp=datetime.fromtimestamp(d["timestamp_ms"] / 1000, UTC),
        entity_id=d["entity_id"],
        outcome=Outcome(d["outcome"]),
        reason=d["reason"],
        duration_ms=d["duration_ms"],
        integration=d["integration"],
        response_code=d["response_code"],
        price=Decimal(d["price"]) if d["price"] else None,
        details=d["details"],
        lead=d["lead"],
    )


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class LeadTrailSession(Session):
    def __init__(self, address: str) -> None:
        self.client = AsyncClient(address, options=CHANNEL_OPTIONS)

    async def append(self, events: Sequence[Any]) -> None:
        await self.client.append(events)

    async def timeline(self, lead_id: str) -> int:
        return len((await self.client.timeline(lead_id)).steps)

    async def scan(self, event_type: str, start_ms: int, end_ms: int) -> int:
        count = 0
        async for _ in self.client.query(
            types=[event_type], start=utc(start_ms), end=utc(end_ms), page_size=1000
        ):
            count += 1
        return count

    async def close(self) -> None:
        await self.client.close()


class LeadTrail(System):
    key = "leadtrail"
    label = "LeadTrail"

    def __init__(self) -> None:
        super().__init__()
        self.server: ChildProcess | None = None
        self.address = ""

    @property
    def setting(self) -> str:
        return "fsync per group commit (default)"

    async def start(self, directory: str) -> None:
        self.directory = os.path.join(directory, "data")
        argv = [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", self.directory]
        argv += ["--listen", "127.0.0.1:0"]
        self.server = ChildProcess("leadtrail serve", argv, os.path.join(directory, "server.log"))
        self.address = (await self.server.ready_line(READY)).group(1)
        self.version = _leadtrail_version()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def prepare(self, events: Sequence[SimulatedEvent]) -> list[Any]:
        return [to_client_event(d) for d in events]

    async def session(self) -> Session:
        return LeadTrailSession(self.address)

    async def replay(self) -> int:
        count = 0
        async with AsyncClient(self.address, options=CHANNEL_OPTIONS) as client:
            subscription = client.subscribe(from_start=True, include_checkpoints=True, reconnect=False)
            async with subscription:
                async for item in subscription:
                    if isinstance(item, CaughtUp):
                        break
                    if isinstance(item, Event):
                        count += 1
        return count

    async def follow(self, received: Received, ready: asyncio.Event) -> None:
        async with AsyncClient(self.address, options=CHANNEL_OPTIONS) as client:
            subscription = client.subscribe(from_end=True, include_checkpoints=True, reconnect=False)
            async with subscription:
                async for item in subscription:
                    if isinstance(item, Event):
                        received(item.id)
                    elif isinstance(item, CaughtUp):
                        ready.set()

    async def stored(self) -> int:
        async with AsyncClient(self.address, options=CHANNEL_OPTIONS) as client:
            return (await client.stats()).event_count

    def notes(self) -> list[str]:
        return [
            "LeadTrail: `leadtrail serve` in a child process with its default fsync policy (an append is "
            "acknowledged after fsync; concurrent appends share fsyncs), called through the SDK "
            "(`AsyncClient`), whose conversion of `Event` objects to protobuf runs in the client's clock.",
        ]


def _leadtrail_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leadtrail")
    except PackageNotFoundError:
        return "source"


class CeilingSession(Session):
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.call = self.channel.unary_unary(
            ceiling.UNARY, request_serializer=None, response_deserializer=None
        )

    async def append(self, events: Sequence[Any]) -> None:
        await self.call(append_request(events).SerializeToString())

    async def timeline(self, lead_id: str) -> None:
        await self.call(query_pb2.GetTimelineRequest(lead_id=lead_id).SerializeToString())

    async def close(self) -> None:
        await self.channel.close(None)


class GrpcCeiling(System):
    """Not a store: what Python gRPC allows on this machine, for LeadTrail's figures to be read against."""

    key = "ceiling"
    label = "gRPC ceiling"
    measures = frozenset({INGEST_SINGLE_1, INGEST_SINGLE_16, INGEST_BATCH, TIMELINE_1, TIMELINE_4})
    checked = False

    def __init__(self) -> None:
        super().__init__()
        self.server: ChildProcess | None = None
        self.address = ""

    @property
    def setting(self) -> str:
        return "empty handlers, same requests"

    async def start(self, directory: str) -> None:
        self.directory = directory
        argv = [sys.executable, ceiling.__file__, "--listen", "127.0.0.1:0"]
        self.server = ChildProcess("gRPC ceiling", argv, os.path.join(directory, "server.log"))
        self.address = (await self.server.ready_line(READY)).group(1)
        self.version = f"grpcio {grpc.__version__}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def prepare(self, events: Sequence[SimulatedEvent]) -> list[Any]:
        return [to_client_event(d) for d in events]

    async def session(self) -> Session:
        return CeilingSession(self.address)

    def notes(self) -> list[str]:
        return [
            "gRPC ceiling: `benchmarks/_grpc_ceiling.py`, an empty grpc.aio service in a child process, "
            "called with the requests the SDK builds for LeadTrail (conversion included); its ratio is "
            "LeadTrail's share of what Python gRPC allows here. Not a store, so nothing of it is checked.",
        ]
