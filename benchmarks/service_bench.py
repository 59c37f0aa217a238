"""Benchmark of the LeadTrail service over gRPC, beside an empty gRPC service measured in the same run.

    python benchmarks/service_bench.py [--quick] [--runs N] [--data DIR] [--json FILE] [--only PART]

A real server (``leadtrail serve`` in a child process, on a loopback port
chosen by the kernel, fsync policy ``always``) and real gRPC clients. Each
figure is the median of N runs (at least 3) with min-max:

- batched ``Append``: events/s, 100 simulated events (~1.5 KB each) a
  request, 4 concurrent clients, each waiting for its durable answer;
- ``AppendStream``: events/s, 100 events a request, pipelined (up to
  ``STREAM_IN_FLIGHT`` requests unanswered per stream), 1 and 4 streams;
- single-event ``Append``: events/s from 1 and from 16 concurrent clients;
- ``GetTimeline``: calls/s and p50/p99 latency for random leads of exactly 10
  events, from 1 and from 16 concurrent clients;
- subscription replay: events/s of ``Subscribe(from_start)`` over the stored
  timeline events, until ``caught_up``;

``--only singles`` (or ``live``, ``writes``) measures those write figures alone, each run
on a fresh store first primed with ``PRIME_EVENTS`` events in batches: a fresh store trains
its compression dictionary after 2,000 events, on a thread beside the writer, and a figure
taken across that training measures the training (in the full run the batched figures come
first and prime the store).

Requests are made as the SDK makes them: snapshots as JSON bytes
(``lead_json``), reads with ``json_snapshots``, subscriptions with events in
batches (``batch_size``);
- live latency: a subscriber follows from the end while appends of
  ``LIVE_EVENTS_PER_APPEND`` events are sent open-loop on a clock, ``LIVE_RATE``
  events/s in all; latency is the subscriber's receive time minus the moment
  the append carrying that event id was sent, both read from the same
  monotonic clock in this process. Small appends rather than single events:
  1,000 single-event durable appends/s is about all the server can do at all
  (see the single-event figures), and a saturated server measures its queue,
  not the live path.

Every figure is set against a baseline measured in the same run, because the
machine is shared and two runs minutes apart are not comparable: an empty
grpc.aio service (``_grpc_ceiling.py``, a child process built like the real
server) called by the same client code with the same concurrency and, where it
matters, the same request bytes. Its unary handler answers an empty message at
once, its stream answers every request with an empty message, its flood sends
back messages of the size a replay sends. The ratio says how much of what
Python gRPC allows on this machine the LeadTrail handlers keep; the
columns ``client`` and ``server`` say how many cores each process kept busy.

What the client costs: load comes from this one Python process, one asyncio
loop (grpc.aio). Requests are converted from the simulation and serialized
before the clock starts (encoding ~1.5 KB snapshots is the client's cost, not
the service's), but every call still
costs the client CPU in grpc.aio and every response is parsed, as a real
client would: on the 2-core development machine about 0.3 ms of client CPU a
unary call (0.4 cores at 1,300 calls/s against the empty service). That CPU is
taken from the server; the ceiling pays the same, so the ratio stays fair, and
the ``client`` column shows when the client, not the server, is the limit.

Batches are sent without event ids, so the server assigns them and a pool of
distinct simulated requests can be sent again and again without being taken
for duplicates (an id on every event is the same validation work). Live
latency events carry client ids, which is what keys their send times.
Benchmarks are never timed assertions in tests (DESIGN.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import _grpc_ceiling as ceiling
import grpc
import orjson
from leadtrail.client import new_event_id
from leadtrail.client._requests import SUBSCRIBE_BATCH
from leadtrail.server.simulation import LeadFlowSimulator, SimulatedEvent
from leadtrail.storage import EventLog, FsyncPolicy, Options
from leadtrail.v1 import event_pb2, query_pb2, stream_pb2, submission_pb2
from storage_bench import (
    BATCH,
    RELAXED_FSYNC_MS,
    SEED,
    TIMELINE_LENGTH,
    Figure,
    Results,
    Scratch,
    batches,
    fmt,
    percentile,
    progress,
    simulated_events,
)
from storage_bench import parse_args as storage_parse_args

STREAM_IN_FLIGHT = 16
"""Unanswered requests per AppendStream; the server queues up to 64, so it never waits on the client."""
LIVE_RATE = 1000
"""Events/s appended while a subscriber follows live."""
LIVE_EVENTS_PER_APPEND = 5
"""So an append every 5 ms."""
TIMELINE_SAMPLE = 5000
TARGET_STREAM_EVENTS_PER_S = 43_000
TARGET_TIMELINE_OF_CEILING = 0.90
TARGET_SINGLE_OF_CEILING = 0.80
TARGET_LIVE_P99_MS = 1.0

APPEND = "/leadtrail.v1.SubmissionService/Append"
APPEND_STREAM = "/leadtrail.v1.SubmissionService/AppendStream"
GET_TIMELINE = "/leadtrail.v1.QueryService/GetTimeline"
SUBSCRIBE = "/leadtrail.v1.StreamService/Subscribe"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", ceiling.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", ceiling.MAX_MESSAGE_BYTES),
    # One connection per client, as separate client processes would have;
    # otherwise grpc shares one subchannel between channels to the same address.
    ("grpc.use_local_subchannel_pool", 1),
]
CLOCK = time.perf_counter_ns
"""CLOCK_MONOTONIC on Linux: the same clock for send and receive times."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Scale:
    """How long each measurement runs; ``--quick`` trades precision for time."""

    pool_events: int
    warmup_s: float
    seconds: float
    timeline_leads: int
    live_seconds: float


QUICK = Scale(pool_events=20_000, warmup_s=0.5, seconds=2.0, timeline_leads=2_000, live_seconds=3.0)
FULL = Scale(pool_events=60_000, warmup_s=1.0, seconds=5.0, timeline_leads=10_000, live_seconds=10.0)


# --------------------------------------------------------------------------- processes


class ServerProcess:
    """A server in a child process, from its ready line (``serving on HOST:PORT``) to SIGTERM."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str, timeout_s: float = 120.0) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        try:
            self.address = self._ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _ready(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.5)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            found = re.search(rb"serving on (\S+:\d+)", seen)
            if found:
                return found.group(1).decode()
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            raise RuntimeError(f"{self.name} did not start: {log.read()[-2000:]}")

    def cpu_seconds(self) -> float:
        """User + system time of every thread of the server so far."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def leadtrail_server(directory: str, log_path: str) -> ServerProcess:
    argv = [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", directory]
    # HTTP on (as users run it: committed events are counted for /metrics), on a port the OS picks.
    argv += ["--listen", "127.0.0.1:0", "--fsync", "always", "--http", "127.0.0.1:0"]
    return ServerProcess("leadtrail serve", argv, log_path)


def ceiling_server(log_path: str) -> ServerProcess:
    argv = [sys.executable, ceiling.__file__, "--listen", "127.0.0.1:0"]
    return ServerProcess("ceiling server", argv, log_path)


# --------------------------------------------------------------------------- requests


def to_proto(d: SimulatedEvent) -> event_pb2.Event:
    message = event_pb2.Event(
        id=d["id"],
        type=d["type"],
        lead_id=d["lead_id"],
        flow_id=d["flow_id"],
        entity_id=d["entity_id"],
        outcome=d["outcome"],  # type: ignore[arg-type]
        reason=d["reason"],
        duration_ms=d["duration_ms"],
        integration=d["integration"],
        response_code=d["response_code"],
        price=d["price"],
    )
    message.timestamp.FromMilliseconds(d["timestamp_ms"])
    # As the SDK sends snapshots: JSON bytes, not Structs.
    if d["details"]:
        message.details_json = orjson.dumps(d["details"])
    message.lead_json = orjson.dumps(d["lead"])
    return message


def subscribe_request(**start: Any) -> bytes:
    """A Subscribe request as the SDK makes it: JSON snapshots, events in batches."""
    request = stream_pb2.SubscribeRequest(json_snapshots=True, batch_size=SUBSCRIBE_BATCH, **start)
    return request.SerializeToString()


def events_of(response: stream_pb2.SubscribeResponse) -> Sequence[event_pb2.Event]:
    kind = response.WhichOneof("message")
    if kind == "events":
        return response.events.events
    return [response.event] if kind == "event" else []


Paced = tuple[list[str], bytes]
"""A request sent on the clock: the ids it carries (whose send times are kept) and its bytes."""


@dataclass(frozen=True)
class Requests:
    """Serialized requests, made before any clock starts."""

    batches: list[bytes]
    singles: list[bytes]
    events: list[event_pb2.Event]

    def live(self, count: int) -> list[Paced]:
        """``count`` requests of ``LIVE_EVENTS_PER_APPEND`` events with fresh client ids, to key send
        times by."""
        out = []
        for k in range(count):
            request = submission_pb2.AppendRequest()
            for j in range(LIVE_EVENTS_PER_APPEND):
                message = request.events.add()
                message.CopyFrom(self.events[(k * LIVE_EVENTS_PER_APPEND + j) % len(self.events)])
                message.id = new_event_id()
            out.append(([m.id for m in request.events], request.SerializeToString()))
        return out


def make_requests(n_events: int) -> Requests:
    simulator = LeadFlowSimulator(SEED + 3)
    events = [to_proto(d) for d in simulator.events(n_events // 7 + 1)][:n_events]
    return Requests(
        batches=[
            submission_pb2.AppendRequest(events=events[k : k + BATCH]).SerializeToString()
            for k in range(0, len(events), BATCH)
        ],
        singles=[submission_pb2.AppendRequest(events=[e]).SerializeToString() for e in events],
        events=events,
    )


# --------------------------------------------------------------------------- load


class Window:
    """What the workers of one measurement did between the end of the warm-up and the stop."""

    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        self.items = 0
        self.latencies_ms: list[float] = []
        self.began_ns = self.ended_ns = 0
        self.client_cpu_s = 0.0
        self.server_cpu_s = 0.0

    def record(self, items: int, began_ns: int) -> None:
        if self.measuring:
            self.items += items
            self.latencies_ms.append((CLOCK() - began_ns) / 1e6)

    @property
    def seconds(self) -> float:
        return (self.ended_ns - self.began_ns) / 1e9

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    def percentile(self, fraction: float) -> float:
        return percentile(sorted(self.latencies_ms), fraction)


Worker = Callable[[Window], Coroutine[Any, Any, None]]


async def run_window(workers: Sequence[Worker], server: ServerProcess, scale: Scale) -> Window:
    """Runs the workers through a warm-up, then measures for ``scale.seconds``."""
    window = Window()
    tasks = [asyncio.create_task(work(window)) for work in workers]
    try:
        await asyncio.sleep(scale.warmup_s)
        client_cpu, server_cpu = time.process_time(), server.cpu_seconds()
        window.began_ns, window.measuring = CLOCK(), True
        await asyncio.sleep(scale.seconds)
        window.measuring, window.ended_ns = False, CLOCK()
        window.client_cpu_s = time.process_time() - client_cpu
        window.server_cpu_s = server.cpu_seconds() - server_cpu
        window.stopping = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return window


@contextlib.asynccontextmanager
async def clients(address: str, count: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(count)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        yield channels
    finally:
        for channel in channels:
            await channel.close(None)


def unary_worker(
    channel: grpc.aio.Channel,
    method: str,
    payloads: Sequence[bytes],
    first: int,
    step: int,
    items: int,
    parse: Callable[[bytes], Any],
) -> Worker:
    """One client calling one at a time, each call waiting for its answer."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=parse)

    async def work(window: Window) -> None:
        k = first
        while not window.stopping:
            began = CLOCK()
            await call(payloads[k % len(payloads)])
            window.record(items, began)
            k += step

    return work


def stream_worker(
    channel: grpc.aio.Channel,
    method: str,
    payloads: Sequence[bytes],
    first: int,
    items_of: Callable[[Any], int],
) -> Worker:
    """One bidirectional stream, up to ``STREAM_IN_FLIGHT`` requests ahead of its answers."""
    parse = submission_pb2.AppendResponse.FromString

    async def work(window: Window) -> None:
        call = channel.stream_stream(method, request_serializer=None, response_deserializer=parse)(None)
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
        sent: deque[int] = deque()

        async def write() -> None:
            k = first
            while not window.stopping:
                await slots.acquire()
                sent.append(CLOCK())
                await call.write(payloads[k % len(payloads)])
                k += 1
            await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            async for response in call:
                slots.release()
                window.record(items_of(response), sent.popleft())
            await writer
        finally:
            writer.cancel()

    return work


async def unary_load(
    server: ServerProcess,
    method: str,
    payloads: Sequence[bytes],
    concurrency: int,
    items: int,
    parse: Callable[[bytes], Any],
    scale: Scale,
) -> Window:
    async with clients(server.address, concurrency) as channels:
        workers = [
            unary_worker(channel, method, payloads, k, concurrency, items, parse)
            for k, channel in enumerate(channels)
        ]
        return await run_window(workers, server, scale)


async def stream_load(
    server: ServerProcess,
    method: str,
    payloads: Sequence[bytes],
    streams: int,
    items_of: Callable[[Any], int],
    scale: Scale,
) -> Window:
    async with clients(server.address, streams) as channels:
        share = len(payloads) // streams
        workers = [
            stream_worker(channel, method, payloads, k * share, items_of)
            for k, channel in enumerate(channels)
        ]
        return await run_window(workers, server, scale)


async def follow_live(
    leadtrail: ServerProcess, requests: list[Paced], skip: int
) -> tuple[list[float], list[float]]:
    """Live latencies and append acknowledgement latencies (ms) of ``requests`` after the first ``skip``.

    Appends are sent open-loop on a clock, each from its own task, so a slow
    answer never delays the next send and cannot hide a stall.
    """
    sent: dict[str, int] = {}
    live: list[float] = []
    acks: list[float] = []
    measured = {event_id for ids, _ in requests[skip:] for event_id in ids}
    everything = asyncio.Event()
    async with clients(leadtrail.address, 2) as (follower, appender):
        subscribe = follower.unary_stream(
            SUBSCRIBE, request_serializer=None, response_deserializer=stream_pb2.SubscribeResponse.FromString
        )
        call = subscribe(subscribe_request(from_end=True))
        caught_up = asyncio.Event()

        async def follow() -> None:
            async for response in call:
                now = CLOCK()
                kind = response.WhichOneof("message")
                if kind == "caught_up":
                    caught_up.set()
                for event in events_of(response):
                    if event.id in measured:
                        live.append((now - sent[event.id]) / 1e6)
                        if len(live) == len(measured):
                            everything.set()

        following = asyncio.create_task(follow())
        try:
            await asyncio.wait_for(caught_up.wait(), 30)
            await paced(appender, APPEND, requests, sent, acks, skip)
            await asyncio.wait_for(everything.wait(), 30)
        finally:
            call.cancel()
            following.cancel()
    return live, acks


async def paced(
    channel: grpc.aio.Channel,
    method: str,
    requests: list[Paced],
    sent: dict[str, int],
    acks: list[float],
    skip: int,
) -> None:
    """Sends each request at its time on the clock, ``LIVE_RATE`` events/s in all; ``acks`` gets the
    round trips of the requests after the first ``skip``."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    interval_ns = 1_000_000_000 * LIVE_EVENTS_PER_APPEND // LIVE_RATE

    async def one(k: int, ids: list[str], payload: bytes) -> None:
        began = CLOCK()
        for event_id in ids:
            sent[event_id] = began
        await call(payload)
        if k >= skip:
            acks.append((CLOCK() - began) / 1e6)

    tasks = []
    start = CLOCK()
    for k, (ids, payload) in enumerate(requests):
        delay = (start + k * interval_ns - CLOCK()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(k, ids, payload)))
    await asyncio.gather(*tasks)


PRIME_EVENTS = 3_000
"""Past the store's first dictionary training (after 2,000 events), which a fresh store runs
on a thread of its own: measured alone, single appends would otherwise pay for it."""
PRIME_SETTLE_S = 1.0


async def prime(server: ServerProcess, batches: Sequence[bytes]) -> None:
    """Bring a fresh store to the state the full run measures single appends in (after the
    batched figures): its compression dictionary trained."""
    async with clients(server.address, 1) as (channel,):
        call = channel.unary_unary(APPEND, request_serializer=None, response_deserializer=None)
        for k in range(PRIME_EVENTS // BATCH):
            await call(batches[k % len(batches)])
    await asyncio.sleep(PRIME_SETTLE_S)  # the training runs beside the writer; a bound, not a signal


async def drain(server: ServerProcess, method: str, request: bytes) -> tuple[int, float]:
    """Events received on a server stream until ``caught_up`` or its end, and the seconds it took."""
    async with clients(server.address, 1) as (channel,):
        call = channel.unary_stream(
            method, request_serializer=None, response_deserializer=stream_pb2.SubscribeResponse.FromString
        )
        count = 0
        began = CLOCK()
        stream = call(request)
        async for response in stream:
            count += len(events_of(response))
            if response.WhichOneof("message") == "caught_up":
                break
        elapsed = (CLOCK() - began) / 1e9
        stream.cancel()
    return count, elapsed


# --------------------------------------------------------------------------- measurements


class Bench:
    """The servers, the prepared requests and the results of one benchmark."""

    def __init__(self, results: Results, scratch: Scratch, scale: Scale, requests: Requests) -> None:
        self.results = results
        self.scratch = scratch
        self.scale = scale
        self.requests = requests
        self.baselines: dict[str, str] = {}

    def add(self, key: str, name: str, unit: str, value: float, base: str | None = None) -> None:
        self.results.add(key, name, unit, value)
        if base is not None:
            self.baselines[key] = base
            self.results.add(f"{key}:ratio", name, "x", value / self.results.figures[base].runs[-1])

    def add_window(self, key: str, name: str, unit: str, window: Window, base: str | None = None) -> None:
        self.add(key, name, unit, window.rate, base)
        self.results.add(f"{key}:client", name, "cores", window.client_cpu_s / window.seconds)
        self.results.add(f"{key}:server", name, "cores", window.server_cpu_s / window.seconds)

    async def writes(self, top: ServerProcess, leadtrail: ServerProcess, singles_only: bool = False) -> None:
        scale, requests = self.scale, self.requests
        parse = submission_pb2.AppendResponse.FromString
        if singles_only:
            await prime(leadtrail, requests.batches)
            await self.singles(top, leadtrail)
            return

        def results_of(response: submission_pb2.AppendResponse) -> int:
            return len(response.results)

        def batch_of(response: submission_pb2.AppendResponse) -> int:
            return BATCH

        progress("batched Append, 4 clients")
        window = await unary_load(top, ceiling.UNARY, requests.batches, 4, BATCH, parse, scale)
        self.add_window("ceil_batch_4", "empty unary, same 100-event requests, 4 clients", "events/s", window)
        window = await unary_load(leadtrail, APPEND, requests.batches, 4, BATCH, parse, scale)
        self.add_window("append_batch_4", "Append, 100 events, 4 clients", "events/s", window, "ceil_batch_4")

        for streams in (1, 4):
            progress(f"AppendStream, {streams} stream(s)")
            ceil, key = f"ceil_stream_{streams}", f"stream_{streams}"
            window = await stream_load(top, ceiling.ECHO, requests.batches, streams, batch_of, scale)
            self.add_window(ceil, f"empty stream, same requests, {streams} stream(s)", "events/s", window)
            window = await stream_load(leadtrail, APPEND_STREAM, requests.batches, streams, results_of, scale)
            self.add_window(key, f"AppendStream, 100 events, {streams} stream(s)", "events/s", window, ceil)
        await self.singles(top, leadtrail)

    async def singles(self, top: ServerProcess, leadtrail: ServerProcess) -> None:
        scale, requests = self.scale, self.requests
        parse = submission_pb2.AppendResponse.FromString
        for concurrency in (1, 16):
            progress(f"single-event Append, {concurrency} client(s)")
            ceil, key = f"ceil_single_{concurrency}", f"single_{concurrency}"
            window = await unary_load(top, ceiling.UNARY, requests.singles, concurrency, 1, parse, scale)
            self.add_window(ceil, f"empty unary, same 1-event requests, {concurrency} client(s)", "calls/s",
                            window)  # fmt: skip
            window = await unary_load(leadtrail, APPEND, requests.singles, concurrency, 1, parse, scale)
            self.add_window(key, f"Append, 1 event, {concurrency} client(s)", "events/s", window, ceil)

    async def live(self, top: ServerProcess, leadtrail: ServerProcess) -> None:
        progress(f"live subscription at {LIVE_RATE} events/s")
        per_second = LIVE_RATE // LIVE_EVENTS_PER_APPEND
        skip = int(per_second * self.scale.warmup_s)
        count = skip + int(per_second * self.scale.live_seconds)
        requests = self.requests.live(count)
        # Round trips of the empty unary at the same pace: the least a live event can take.
        sent: dict[str, int] = {}
        acks: list[float] = []
        async with clients(top.address, 1) as (channel,):
            await paced(channel, ceiling.UNARY, requests, sent, acks, skip)
        acks.sort()
        name = f"empty unary round trip, same requests at {per_second}/s, p50"
        self.add("ceil_rtt_p50", name, "ms", percentile(acks, 0.5))
        self.add("ceil_rtt_p99", "  p99", "ms", percentile(acks, 0.99))
        live, appended = await follow_live(leadtrail, requests, skip)
        live.sort()
        appended.sort()
        name = f"live latency, {LIVE_RATE} events/s in appends of {LIVE_EVENTS_PER_APPEND}: p50"
        self.add("live_p50", name, "ms", percentile(live, 0.5), "ceil_rtt_p50")
        self.add("live_p99", "  p99", "ms", percentile(live, 0.99), "ceil_rtt_p99")
        self.add(
            "ack_p50", "  durable Append round trip p50", "ms", percentile(appended, 0.5), "ceil_rtt_p50"
        )
        self.add(
            "ack_p99", "  durable Append round trip p99", "ms", percentile(appended, 0.99), "ceil_rtt_p99"
        )

    async def reads(
        self, top: ServerProcess, timelines: ServerProcess, lead_ids: list[str], sample: bytes
    ) -> None:
        scale = self.scale
        chooser = random.Random(SEED)
        payloads = [  # JSON snapshots, as the SDK asks for them
            query_pb2.GetTimelineRequest(
                lead_id=chooser.choice(lead_ids), json_snapshots=True
            ).SerializeToString()
            for _ in range(TIMELINE_SAMPLE)
        ]
        parse = query_pb2.Timeline.FromString
        for concurrency in (1, 16):
            progress(f"GetTimeline, {concurrency} client(s)")
            ceil, key = f"ceil_unary_{concurrency}", f"timeline_{concurrency}"
            window = await unary_load(top, ceiling.UNARY, payloads, concurrency, 1, parse, scale)
            self.add_window(ceil, f"empty unary, {concurrency} client(s)", "calls/s", window)
            self.add(f"{ceil}_p50", "  latency p50", "ms", window.percentile(0.5))
            self.add(f"{ceil}_p99", "  latency p99", "ms", window.percentile(0.99))
            window = await unary_load(timelines, GET_TIMELINE, payloads, concurrency, 1, parse, scale)
            self.add_window(key, f"GetTimeline (10 events), {concurrency} client(s)", "calls/s", window, ceil)
            self.add(f"{key}_p50", "  latency p50", "ms", window.percentile(0.5), f"{ceil}_p50")
            self.add(f"{key}_p99", "  latency p99", "ms", window.percentile(0.99), f"{ceil}_p99")

        progress("subscription replay")
        stored = len(lead_ids) * TIMELINE_LENGTH
        count, seconds = await drain(top, ceiling.FLOOD, ceiling.flood_request(stored, sample))
        self.add(
            "ceil_flood", f"empty stream sending {len(sample):,} B messages", "messages/s", count / seconds
        )
        count, seconds = await drain(timelines, SUBSCRIBE, subscribe_request(from_start=True))
        if count != stored:
            raise RuntimeError(f"replay sent {count} events of {stored}")
        self.add("replay", f"Subscribe from_start over {stored:,} events", "events/s", count / seconds,
                 "ceil_flood")  # fmt: skip


def build_timeline_store(directory: str, leads: int) -> list[str]:
    """A store where every lead has exactly ``TIMELINE_LENGTH`` events; its lead ids."""
    events = simulated_events(SEED + 1, leads * TIMELINE_LENGTH, events_per_lead=TIMELINE_LENGTH)
    # Built offline and not measured; a relaxed fsync only makes it quicker to set up.
    with EventLog.open(directory, Options(fsync=FsyncPolicy(interval_ms=RELAXED_FSYNC_MS))) as log:
        for batch in batches(events):
            log.append(batch)
    return sorted({e.lead_id for e in events})


async def replay_sample(timelines: ServerProcess) -> bytes:
    """A replayed message of the mean size (and a warm page cache for the replays to come)."""
    async with clients(timelines.address, 1) as (channel,):
        call = channel.unary_stream(SUBSCRIBE, request_serializer=None, response_deserializer=None)
        messages: list[bytes] = []
        # One event per message, as the empty stream sends them.
        stream = call(stream_pb2.SubscribeRequest(from_start=True, json_snapshots=True).SerializeToString())
        async for raw in stream:
            if stream_pb2.SubscribeResponse.FromString(raw).WhichOneof("message") == "caught_up":
                break
            messages.append(raw)
        stream.cancel()
    mean = sum(map(len, messages)) / len(messages)
    return min(messages, key=lambda m: abs(len(m) - mean))


async def check_timeline(timelines: ServerProcess, lead_id: str) -> None:
    async with clients(timelines.address, 1) as (channel,):
        call = channel.unary_unary(
            GET_TIMELINE, request_serializer=None, response_deserializer=query_pb2.Timeline.FromString
        )
        timeline = await call(query_pb2.GetTimelineRequest(lead_id=lead_id).SerializeToString())
        if len(timeline.steps) != TIMELINE_LENGTH:
            raise RuntimeError(f"timeline of {lead_id} has {len(timeline.steps)} steps")


async def bench(
    results: Results, scratch: Scratch, scale: Scale, runs: int, only: str = "all"
) -> dict[str, str]:
    progress(f"simulating and serializing {scale.pool_events:,} events")
    requests = make_requests(scale.pool_events)
    if only in WRITE_PARTS:
        return await bench_writes(results, scratch, scale, runs, requests, only)
    progress(f"building a store of {scale.timeline_leads:,} leads x {TIMELINE_LENGTH} events")
    timeline_dir = scratch.new("timelines")
    lead_ids = build_timeline_store(timeline_dir, scale.timeline_leads)
    logs = scratch.new("logs")
    state = Bench(results, scratch, scale, requests)
    top = ceiling_server(os.path.join(logs, "ceiling.log"))
    try:
        timelines = leadtrail_server(timeline_dir, os.path.join(logs, "timelines.log"))
        try:
            await check_timeline(timelines, lead_ids[0])
            sample = await replay_sample(timelines)
            for run in range(runs):
                progress(f"run {run + 1}/{runs}")
                data = scratch.new(f"writes-{run}")
                leadtrail = leadtrail_server(data, os.path.join(logs, f"writes-{run}.log"))
                try:
                    await state.writes(top, leadtrail)
                    await state.live(top, leadtrail)
                finally:
                    leadtrail.stop()
                await state.reads(top, timelines, lead_ids, sample)
        finally:
            timelines.stop()
    finally:
        top.stop()
    return state.baselines


WRITE_PARTS = ("singles", "live", "writes")
"""``--only``: the single-event Appends, the live latency, or every write figure (no read store)."""


async def bench_writes(
    results: Results, scratch: Scratch, scale: Scale, runs: int, requests: Requests, only: str
) -> dict[str, str]:
    """The write figures alone: a fresh store a run, the empty service beside it."""
    logs = scratch.new("logs")
    state = Bench(results, scratch, scale, requests)
    top = ceiling_server(os.path.join(logs, "ceiling.log"))
    try:
        for run in range(runs):
            progress(f"run {run + 1}/{runs}")
            data = scratch.new(f"writes-{run}")
            leadtrail = leadtrail_server(data, os.path.join(logs, f"writes-{run}.log"))
            try:
                if only == "live":
                    await prime(leadtrail, requests.batches)
                    await state.live(top, leadtrail)
                else:
                    await state.writes(top, leadtrail, singles_only=only == "singles")
            finally:
                leadtrail.stop()
    finally:
        top.stop()
    return state.baselines


# --------------------------------------------------------------------------- report

SECTIONS = (
    (
        "writes (durable: fsync always)",
        ("append_batch_4", "stream_1", "stream_4", "single_1", "single_16"),
    ),
    (
        "reads",
        (
            "timeline_1", "timeline_1_p50", "timeline_1_p99",
            "timeline_16", "timeline_16_p50", "timeline_16_p99",
            "replay", "live_p50", "live_p99", "ack_p50", "ack_p99",
        ),
    ),
    (
        "baselines: empty grpc.aio service, same client (this machine, this run)",
        (
            "ceil_batch_4", "ceil_stream_1", "ceil_stream_4", "ceil_single_1", "ceil_single_16",
            "ceil_unary_1", "ceil_unary_1_p50", "ceil_unary_1_p99",
            "ceil_unary_16", "ceil_unary_16_p50", "ceil_unary_16_p99",
            "ceil_flood", "ceil_rtt_p50", "ceil_rtt_p99",
        ),
    ),
)  # fmt: skip


def ratio_text(figure: Figure | None, unit: str) -> str:
    if figure is None:
        return ""
    # Rates as a share of the ceiling; latencies as a multiple of it.
    if unit == "ms":
        return f"{figure.median:.1f}x ({min(figure.runs):.1f}-{max(figure.runs):.1f})"
    return f"{figure.median:.0%} ({min(figure.runs):.0%}-{max(figure.runs):.0%})"


def cores_text(results: Results, key: str) -> str:
    client, server = results.figures.get(f"{key}:client"), results.figures.get(f"{key}:server")
    if client is None or server is None:
        return ""
    return f"{client.median:.2f} / {server.median:.2f}"


def targets(results: Results) -> list[tuple[str, str, bool]]:
    """The issue's targets among the figures measured (``--only`` measures some)."""
    rows = []
    figures = results.figures
    for streams in (1, 4):
        if f"stream_{streams}" not in figures:
            continue
        value = results.median(f"stream_{streams}")
        rows.append(
            (
                f">= {TARGET_STREAM_EVENTS_PER_S:,} durable events/s, AppendStream, {streams} stream(s)",
                f"{fmt(value)} events/s ({value / TARGET_STREAM_EVENTS_PER_S:.0%} of target)",
                value >= TARGET_STREAM_EVENTS_PER_S,
            )
        )
    if "single_16:ratio" in figures:
        share = results.median("single_16:ratio")
        rows.append(
            (
                f"single-event Append/s >= {TARGET_SINGLE_OF_CEILING:.0%} of the empty unary, 16 clients",
                f"{share:.0%}",
                share >= TARGET_SINGLE_OF_CEILING,
            )
        )
    for concurrency in (1, 16):
        if f"timeline_{concurrency}:ratio" not in figures:
            continue
        share = results.median(f"timeline_{concurrency}:ratio")
        rows.append(
            (
                f"GetTimeline/s >= {TARGET_TIMELINE_OF_CEILING:.0%} of the empty unary, "
                f"{concurrency} client(s)",
                f"{share:.0%}",
                share >= TARGET_TIMELINE_OF_CEILING,
            )
        )
    if "live_p99" in figures:
        p99 = results.median("live_p99")
        rows.append(
            (
                f"live subscription latency p99 <= {TARGET_LIVE_P99_MS:g} ms at {LIVE_RATE} events/s",
                f"{fmt(p99)} ms",
                p99 <= TARGET_LIVE_P99_MS,
            )
        )
    return rows


def report(results: Results, baselines: dict[str, str], header: list[str]) -> str:
    lines = header[:]
    shown = [f for key, f in results.figures.items() if ":" not in key]
    width = max(len(f.name) for f in shown) + 2
    for title, keys in SECTIONS:
        lines.append("")
        lines.append(title)
        lines.append(
            f"  {'':<{width}}{'median':>10}  {'min - max':>19}  {'unit':<10}"
            f"{'of baseline (min-max)':<24}{'cores client / server'}"
        )
        for key in keys:
            figure = results.figures.get(key)
            if figure is None:
                continue
            spread = f"{fmt(min(figure.runs))} - {fmt(max(figure.runs))}"
            ratio = ratio_text(results.figures.get(f"{key}:ratio"), figure.unit)
            lines.append(
                f"  {figure.name:<{width}}{fmt(figure.median):>10}  {spread:>19}  {figure.unit:<10}"
                f"{ratio:<24}{cores_text(results, key)}".rstrip()
            )
    lines.append("")
    lines.append("baseline of each ratio: " + ", ".join(f"{k} / {b}" for k, b in baselines.items()))
    lines.append("")
    lines.append("targets (from the issue)")
    for goal, measured, passed in targets(results):
        lines.append(f"  {'PASS' if passed else 'MISS'}  {goal:<72} {measured}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "grpcio": grpc.__version__,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parts = argparse.ArgumentParser(add_help=False)
    parts.add_argument("--only", choices=("all", *WRITE_PARTS), default="all")
    known, rest = parts.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print("  --only {all,singles,live,writes}: measure only these figures (default all)")
    args = storage_parse_args(rest, __doc__, "a few seconds per measurement")
    args.only = known.only
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else FULL
    results = Results()
    scratch = Scratch(args.data)
    began = time.perf_counter()
    try:
        baselines = asyncio.run(bench(results, scratch, scale, args.runs, args.only))
    finally:
        data_dir = os.path.dirname(scratch.root)
        scratch.close()
    elapsed = time.perf_counter() - began
    info = machine()
    header = [
        f"LeadTrail service benchmark ({'quick' if args.quick else 'full'}): "
        f"median of {args.runs} runs, min - max",
        f"  {info['cpus']} CPUs, Python {info['python']}, grpcio {info['grpcio']}, {info['platform']}",
        f"  server and ceiling in child processes on 127.0.0.1, client: this process (grpc.aio); "
        f"data dir {data_dir}, fsync always",
        f"  {scale.warmup_s:g} s warm-up + {scale.seconds:g} s per measurement, "
        f"{scale.pool_events:,} distinct simulated events, {elapsed:.0f} s in all",
    ]
    print(report(results, baselines, header))
    if args.json_path:
        payload = {
            "mode": "quick" if args.quick else "full",
            "runs": args.runs,
            "scale": scale.__dict__,
            "machine": info,
            "data_dir": data_dir,
            "elapsed_s": elapsed,
            "figures": {key: f.as_json() for key, f in results.figures.items()},
            "baselines": baselines,
            "targets": [
                {"target": goal, "measured": measured, "pass": passed}
                for goal, measured, passed in targets(results)
            ],
        }
        with open(args.json_path, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
