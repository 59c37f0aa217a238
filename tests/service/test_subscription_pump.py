"""The subscription pump without gRPC: a real EventLog in a temporary directory, the live
feed, and the messages the pump would send, checked for order, gaps and what it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from leadtrail.server.feed import EVENT_OVERHEAD_BYTES, Feed
from leadtrail.server.subscription import (
    CHECKPOINT_EVERY_EVENTS,
    MIN_CHUNK_BYTES,
    HeldBytes,
    SubscriptionPump,
)
from leadtrail.storage import Event, EventFilter, EventLog
from leadtrail.v1 import event_pb2, stream_pb2

T = TypeVar("T")


def append(log: EventLog, batch: list[Event]) -> None:
    for start in range(0, len(batch), 1000):
        log.append(batch[start : start + 1000])


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog.open(tmp_path / "data") as opened:
        yield opened


def events(lead: str, count: int, flow: str = "flow-pump") -> list[Event]:
    return [Event("source.submitted", lead, flow, lead={"n": i, "pad": "p" * 200}) for i in range(count)]


def encode(event: Event, out: event_pb2.Event) -> None:
    out.id, out.position, out.flow_id = event.id, event.position, event.flow_id


async def run_off_loop(fn: Callable[[], T]) -> T:
    return fn()


class Received:
    """What a client would have read: positions of events, checkpoints and caught-up marks."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.checkpoints: list[int] = []
        self.caught_up: list[int] = []
        self.batches: list[int] = []
        self.messages = 0

    def take(self, message: stream_pb2.SubscribeResponse) -> None:
        self.messages += 1
        kind = message.WhichOneof("message")
        if kind == "event":
            self.positions.append(message.event.position)
        elif kind == "events":
            self.positions.extend(e.position for e in message.events.events)
            self.batches.append(len(message.events.events))
        elif kind == "checkpoint":
            self.checkpoints.append(message.checkpoint.position)
        elif kind == "caught_up":
            self.caught_up.append(message.caught_up.position)


async def pump_until(
    pump: SubscriptionPump, after: int, received: Received, last: int, stop: list[bool]
) -> None:
    async for message in pump.responses(after):
        received.take(message)
        if received.positions and received.positions[-1] >= last and received.caught_up:
            stop[0] = True


def make_pump(
    log: EventLog,
    feed: Feed,
    f: EventFilter,
    stop: list[bool],
    batch_size: int = 0,
    held: HeldBytes | None = None,
) -> SubscriptionPump:
    return SubscriptionPump(
        log, feed, run_off_loop, f, encode, batch_size=batch_size, held=held, closing=lambda: stop[0]
    )


def test_replays_from_disk_then_follows_the_feed_in_order_with_no_gap(log: EventLog) -> None:
    append(log, events("lead-disk", 1500))

    async def scenario() -> Received:
        feed = Feed(log.last_position)
        log.add_commit_listener(lambda committed: loop.call_soon_threadsafe(feed.publish, committed))
        loop = asyncio.get_running_loop()
        stop, received = [False], Received()
        pump = make_pump(log, feed, EventFilter(), stop, batch_size=100)
        task = asyncio.create_task(pump_until(pump, 0, received, 2000, stop))
        while not received.caught_up:
            await asyncio.sleep(0.01)
        await loop.run_in_executor(None, append, log, events("lead-live", 500))
        await asyncio.wait_for(task, 60)
        assert pump.matched == 2000
        return received

    received = asyncio.run(scenario())
    assert received.positions == list(range(1, 2001))
    assert received.caught_up == [1500]


def test_events_the_filter_passes_over_are_reported_by_checkpoints(log: EventLog) -> None:
    append(log, events("lead-other", 2 * CHECKPOINT_EVERY_EVENTS + 10, flow="flow-other"))
    append(log, events("lead-mine", 3))
    last = log.last_position

    async def scenario() -> Received:
        feed = Feed(log.last_position)
        stop, received = [False], Received()
        pump = make_pump(log, feed, EventFilter(flow_id="flow-pump"), stop)
        await asyncio.wait_for(pump_until(pump, 0, received, last, stop), 60)
        return received

    received = asyncio.run(scenario())
    assert received.positions == [last - 2, last - 1, last]
    assert received.checkpoints == [CHECKPOINT_EVERY_EVENTS, 2 * CHECKPOINT_EVERY_EVENTS]


def test_over_the_shared_budget_a_pump_takes_a_little_at_a_time_and_misses_none(log: EventLog) -> None:
    append(log, events("lead-budget", 700))

    async def scenario() -> tuple[Received, list[int]]:
        feed = Feed(log.last_position)
        held = HeldBytes(budget=0)  # spent by others
        stop, received = [False], Received()
        pump = make_pump(log, feed, EventFilter(), stop, batch_size=1000, held=held)
        seen_held: list[int] = []
        async for message in pump.responses(0):
            seen_held.append(held.held)
            received.take(message)
            if received.caught_up:
                break
        return received, seen_held

    received, seen_held = asyncio.run(scenario())
    assert received.positions == list(range(1, 701))
    # A little at a time: each batch holds what 32 KiB holds by estimate, nothing is charged.
    assert max(received.batches) <= MIN_CHUNK_BYTES // EVENT_OVERHEAD_BYTES + 1
    assert set(seen_held) == {0}


def test_what_a_pump_holds_is_charged_while_it_waits_to_send_and_given_back_after(log: EventLog) -> None:
    append(log, events("lead-charge", 300))

    async def scenario() -> tuple[int, int]:
        feed = Feed(log.last_position)
        held = HeldBytes()
        stop = [False]
        pump = make_pump(log, feed, EventFilter(), stop, held=held)
        responses = pump.responses(0)
        await anext(responses)  # the pump now waits for the client to read
        while_waiting = held.held
        stop[0] = True
        async for _ in responses:
            pass
        return while_waiting, held.held

    while_waiting, after = asyncio.run(scenario())
    assert 0 < while_waiting <= 256 * 1024
    assert after == 0
