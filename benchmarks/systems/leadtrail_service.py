"""LeadTrail as its users run it: ``leadtrail serve`` (default fsync policy), called through the SDK.

Beside it, the empty-handler gRPC ceiling (``benchmarks/_grpc_ceiling.py``): a
grpc.aio server built like LeadTrail's whose handlers answer at once, called
with the very requests the SDK sends (the SDK's own conversion, in the clock
for both), so the gap between the two is the work of LeadTrail's handlers,
not of Python gRPC or of the client.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
from leadtrail.client import AsyncClient, CaughtUp, Event, Outcome
from leadtrail.server.simulation import SimulatedEvent
from leadtrail.v1 import query_pb2

from benchmarks import _grpc_ceiling as ceiling
from benchmarks import timeline_answer
from benchmarks.systems import (
    INGEST_BATCH,
    INGEST_SINGLE_1,
    INGEST_SINGLE_16,
    TIMELINE_1,
    TIMELINE_4,
    TIMELINE_16,
    ChildProcess,
    Received,
    Session,
    System,
    Unavailable,
    command_output,
)
from benchmarks.workload import Workload

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


EVENT_FIELDS = tuple(item.name for item in fields(Event))


_READ_ALL = operator.attrgetter(*EVENT_FIELDS)
"""Every field in one call: the same decoding as reading them one by one, without a loop."""


def read_whole(event: Event) -> None:
    """Read every field of an event the SDK returned. The SDK decodes a field when it is first read;
    the other systems' clients hand over rows, snapshots included, already decoded, so LeadTrail's
    figures include decoding whole events too."""
    _READ_ALL(event)


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class LeadTrailSession(Session):
    def __init__(self, address: str) -> None:
        self.client = AsyncClient(address, options=CHANNEL_OPTIONS)

    async def append(self, events: Sequence[Any]) -> None:
        await self.client.append(events)

    async def timeline(self, lead_id: str) -> int:
        steps = (await self.client.timeline(lead_id)).steps
        for step in steps:
            read_whole(step.event)
        return len(steps)

    async def scan(self, event_type: str, start_ms: int, end_ms: int) -> int:
        count = 0
        async for event in self.client.query(
            types=[event_type], start=utc(start_ms), end=utc(end_ms), page_size=1000, include_lead=True
        ):
            read_whole(event)
            count += 1
        return count

    async def close(self) -> None:
        await self.client.close()


@functools.cache
def serve_offers_workers() -> bool:
    """Whether this build's ``leadtrail serve`` has ``--workers`` (its help says so)."""
    usage = command_output([sys.executable, "-m", "leadtrail.server.cli", "serve", "--help"])
    return "--workers" in usage


@functools.cache
def serve_offers_http() -> bool:
    """Whether this build's ``leadtrail serve`` has ``--http`` (its help says so)."""
    usage = command_output([sys.executable, "-m", "leadtrail.server.cli", "serve", "--help"])
    return "--http" in usage


class LeadTrail(System):
    key = "leadtrail"
    label = "LeadTrail"
    peer = False
    workers = 1
    """Processes serving (``--workers``, where the build has the option)."""

    def __init__(self) -> None:
        super().__init__()
        self.server: ChildProcess | None = None
        self.address = ""

    @property
    def setting(self) -> str:
        return "fsync per group commit (default)"

    def serve_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", self.directory,
                "--listen", "127.0.0.1:0"]  # fmt: skip
        if serve_offers_workers():  # stated, so that a default of several workers does not change this figure
            argv += ["--workers", str(self.workers)]
        if serve_offers_http():  # on, as users run it (counting for /metrics included), never on 8080
            argv += ["--http", "127.0.0.1:0"]
        return argv

    async def start(self, directory: str) -> None:
        self.directory = os.path.join(directory, "data")
        # Its own process group: a server of several processes is stopped whole.
        self.server = ChildProcess(
            "leadtrail serve", self.serve_argv(), os.path.join(directory, "server.log"), stop_group=True
        )
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
                        read_whole(item)
                        count += 1
        return count

    async def follow(self, received: Received, ready: asyncio.Event) -> None:
        async with AsyncClient(self.address, options=CHANNEL_OPTIONS) as client:
            subscription = client.subscribe(from_end=True, include_checkpoints=True, reconnect=False)
            async with subscription:
                async for item in subscription:
                    if isinstance(item, Event):
                        read_whole(item)
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
            "(`AsyncClient`), whose conversion of `Event` objects to protobuf runs in the client's clock. "
            "Every field of every event read (timelines, scans, replay, live) is read once, snapshot "
            "included, so that decoding whole events is in the clock as it is for the other systems. "
            "One process (`--workers 1` where the build has the option).",
        ]


class LeadTrailWorkers(LeadTrail):
    """``leadtrail serve --workers N``: N processes on one port. Skipped, with the reason, where
    ``leadtrail serve --help`` does not offer ``--workers``."""

    key = "workers"

    def __init__(self, workers: int = 2) -> None:
        super().__init__()
        self.workers = workers
        self.label = f"LeadTrail, {workers} workers"

    @property
    def name(self) -> str:
        return f"leadtrail-{self.workers}w"

    @property
    def setting(self) -> str:
        return f"fsync per group commit (default), --workers {self.workers}"

    def check(self) -> None:
        if not serve_offers_workers():
            raise Unavailable("`leadtrail serve --help` offers no --workers option in this build")

    def notes(self) -> list[str]:
        return [
            f"LeadTrail, {self.workers} workers: `leadtrail serve --workers {self.workers}` (processes "
            "sharing one port), otherwise as LeadTrail; the ratio in its rows is 1 worker / "
            f"{self.workers} workers.",
        ]


def _leadtrail_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leadtrail")
    except PackageNotFoundError:
        return "source"


class CeilingSession(LeadTrailSession):
    """The SDK's calls, answered by the ceiling: nothing to check in its answers."""

    async def timeline(self, lead_id: str) -> None:  # type: ignore[override]
        await super().timeline(lead_id)


class GrpcCeiling(System):
    """Not a store: what Python gRPC allows on this machine, for LeadTrail's figures to be read against.

    Called through the very client LeadTrail is called through (``AsyncClient``: the same requests,
    the same decoding of the answers). With ``canned_timeline``, its ``GetTimeline`` answers a
    realistic timeline built once from the workload (the same bytes every call) instead of an
    empty one: the cost of carrying and decoding an answer of the real size, with no store behind."""

    key = "ceiling"
    label = "gRPC ceiling"
    measures = frozenset(
        {INGEST_SINGLE_1, INGEST_SINGLE_16, INGEST_BATCH, TIMELINE_1, TIMELINE_4, TIMELINE_16}
    )
    checked = False
    peer = False

    def __init__(self, canned_timeline: bool = False) -> None:
        super().__init__()
        self.canned_timeline = canned_timeline
        self.answer = b""
        self.steps = 0
        self.server: ChildProcess | None = None
        self.address = ""
        if canned_timeline:
            self.label = "gRPC ceiling, canned timeline"
            self.measures = frozenset({TIMELINE_1, TIMELINE_4, TIMELINE_16})

    @property
    def name(self) -> str:
        return "ceiling-timeline" if self.canned_timeline else "ceiling"

    @property
    def setting(self) -> str:
        if self.canned_timeline:
            return f"answers a {self.steps}-step timeline ({len(self.answer):,} B), same client"
        return "empty handlers, same client and requests"

    def use(self, work: Workload) -> None:
        if self.canned_timeline:
            self.answer = timeline_answer.canned_timeline(work.dataset)
            self.steps = len(query_pb2.Timeline.FromString(self.answer).steps)

    async def start(self, directory: str) -> None:
        self.directory = directory
        argv = [sys.executable, ceiling.__file__, "--listen", "127.0.0.1:0"]
        if self.canned_timeline:
            answer_path = os.path.join(directory, "timeline.bin")
            with open(answer_path, "wb") as file:
                file.write(self.answer)
            argv += ["--timeline-answer", answer_path]
        self.server = ChildProcess(self.label, argv, os.path.join(directory, "server.log"))
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
        if self.canned_timeline:
            return [
                f"gRPC ceiling, canned timeline: the same server, whose GetTimeline answers the bytes of a "
                f"{self.steps}-step timeline of the workload ({len(self.answer):,} B: JSON snapshots, "
                "positions, times, field changes) on every call, built once "
                "(`benchmarks/timeline_answer.py`) and decoded by the SDK like LeadTrail's: what carrying "
                "and decoding a real answer costs with no store behind it.",
            ]
        return [
            "gRPC ceiling: `benchmarks/_grpc_ceiling.py`, an empty grpc.aio service in a child process "
            "answering LeadTrail's Append and GetTimeline at once with empty messages, called through the "
            "same SDK client (`AsyncClient`) with the same requests as LeadTrail (conversion included); its "
            "ratio is LeadTrail's share of what Python gRPC allows here. Not a store, so nothing of it is "
            "checked.",
        ]
