"""The live feed without gRPC: one encoding of each kept event per form, shared by every
subscriber of that form and never kept past an erasure or the feed's bounds; waiting
subscribers woken by a publish (not by a timer)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from leadtrail.server.caller import Caller
from leadtrail.server.feed import Encodings, Feed
from leadtrail.server.keys import ApiKey
from leadtrail.server.stream import form_of
from leadtrail.server.subscription import SubscriptionPump, event_field
from leadtrail.storage import Event, EventFilter, EventLog
from leadtrail.storage.fields import Classify, default_classify
from leadtrail.v1 import event_pb2, stream_pb2

T = TypeVar("T")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog.open(tmp_path / "data") as opened:
        yield opened


def events(lead: str, count: int) -> list[Event]:
    return [
        Event("source.submitted", lead, "flow-live", lead={"n": i, "email": f"p{i}@example.com"})
        for i in range(count)
    ]


async def run_off_loop(fn: Callable[[], T]) -> T:
    return fn()


class CountingEncoder:
    """An event's wire form (id, position, lead JSON) as a response carries it, counting the
    encodings made."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: Event) -> bytes:
        self.calls += 1
        message = event_pb2.Event(id=event.id, position=event.position, lead_json=repr(event.lead).encode())
        return event_field(message.SerializeToString())


def positions(message: stream_pb2.SubscribeResponse) -> list[int]:
    kind = message.WhichOneof("message")
    if kind == "event":
        return [message.event.position]
    if kind == "events":
        return [e.position for e in message.events.events]
    return []


async def follow(
    log: EventLog, feed: Feed, serialized: Callable[[Event], bytes], after: int, last: int, batch_size: int
) -> list[int]:
    """The positions a pump sends from ``after`` until it has sent ``last``."""
    stop = [False]
    pump = SubscriptionPump(
        log,
        feed,
        run_off_loop,
        EventFilter(),
        serialized=serialized,
        batch_size=batch_size,
        closing=lambda: stop[0],
    )
    got: list[int] = []
    async for message in pump.responses(after):
        got.extend(positions(message))
        if got and got[-1] >= last:
            stop[0] = True
    return got


@pytest.mark.parametrize("batch_size", [0, 7])
def test_subscribers_of_one_form_share_one_encoding_of_each_live_event(
    log: EventLog, batch_size: int
) -> None:
    async def scenario() -> tuple[list[list[int]], int]:
        loop = asyncio.get_running_loop()
        feed = Feed(log.last_position)
        log.add_commit_listener(lambda committed: loop.call_soon_threadsafe(feed.publish, committed))
        encode = CountingEncoder()
        form = ("as stored", True)

        def serialized(event: Event) -> bytes:
            return feed.encoded(event, form, encode)

        followers = [asyncio.create_task(follow(log, feed, serialized, 0, 300, batch_size)) for _ in range(3)]
        await asyncio.sleep(0)  # every follower is waiting before the first commit
        for start in range(0, 300, 50):
            await loop.run_in_executor(None, log.append, events(f"lead-{start}", 50))
        received = await asyncio.wait_for(asyncio.gather(*followers), 60)
        return received, encode.calls

    received, encoded = asyncio.run(scenario())
    for got in received:
        assert got == list(range(1, 301))
    assert encoded == 300  # once per event, not once per subscriber


def test_a_pump_of_shared_encodings_sends_what_a_pump_that_encodes_sends(log: EventLog) -> None:
    log.append(events("lead-same", 40))

    def fill(event: Event, out: event_pb2.Event) -> None:
        out.id, out.position, out.lead_json = event.id, event.position, repr(event.lead).encode()

    async def collect(batch_size: int, spliced: bool) -> list[bytes]:
        feed = Feed(0)
        feed.publish(list(log.read_from(1)))
        stop = [False]
        encode = CountingEncoder()
        pump = SubscriptionPump(
            log,
            feed,
            run_off_loop,
            EventFilter(),
            None if spliced else fill,
            serialized=(lambda e: feed.encoded(e, "form", encode)) if spliced else None,
            batch_size=batch_size,
            closing=lambda: stop[0],
        )
        out = []
        async for message in pump.responses(0):
            out.append(message.SerializeToString())
            if message.HasField("caught_up"):
                stop[0] = True
        return out

    for batch_size in (0, 1, 16, 1000):
        assert asyncio.run(collect(batch_size, True)) == asyncio.run(collect(batch_size, False))


def test_an_erasure_drops_the_kept_encodings_of_the_events_it_changed() -> None:
    feed = Feed(0)
    kept = [
        Event("source.submitted", "lead-e", "flow-live", lead={"email": f"p{i}@example.com"})
        for i in range(3)
    ]
    for position, event in enumerate(kept, 1):
        event.position = position
    feed.publish(kept)
    encode = CountingEncoder()
    before = [feed.encoded(e, "form", encode) for e in kept]
    assert b"p1@example.com" in before[1]
    erased = kept[1].copy()
    erased.lead = {"email": "[erased]"}
    feed.replace([erased])
    after = [feed.encoded(e, "form", encode) for e in kept]
    assert b"p1@example.com" not in after[1] and b"[erased]" in after[1]
    assert after[0] == before[0] and after[2] == before[2]
    assert encode.calls == 4  # the erased event alone was encoded again


def test_an_event_read_from_disk_is_encoded_for_its_reader_alone(log: EventLog) -> None:
    log.append(events("lead-disk", 2))
    feed = Feed(log.last_position)
    encode = CountingEncoder()
    [first, _] = log.read_from(1)
    feed.encoded(first, "form", encode)
    feed.encoded(first, "form", encode)
    assert encode.calls == 2 and feed.encodings.held == 0


def test_encodings_stay_within_their_budget_and_go_with_the_events_the_feed_lets_go() -> None:
    feed = Feed(0, capacity=10)
    feed.encodings = Encodings(budget=5_000)
    encode = CountingEncoder()
    position = 0
    for _ in range(10):
        batch = [Event("source.submitted", "lead-b", "flow-live", lead={"pad": "x" * 200}) for _ in range(7)]
        for event in batch:
            position += 1
            event.position = position
        feed.publish(batch)
        for event in batch:
            feed.encoded(event, "json", encode)
            feed.encoded(event, "struct", encode)
            assert feed.encodings.held <= 5_000
    kept = feed.after(0, 1000)
    assert kept is None  # the oldest events are let go
    # Only what the feed still keeps may be cached: at most 2 forms x 20 events.
    assert feed.encodings.held <= 2 * 20 * len(encode(batch[0]))
    feed.clear()
    assert feed.encodings.held == 0


def test_masked_forms_are_never_shared_across_accounts_roles_or_policies() -> None:
    class Policies:
        def __init__(self) -> None:
            self.current: dict[str, Classify] = {}

        def classifier(self, account_id: str) -> Classify:
            return self.current.get(account_id, default_classify)

    fields = Policies()
    event = Event("source.submitted", "lead-m", "flow-live")

    def form(role: str | None, account: str = "acme", json_snapshots: bool = True) -> Hashable:
        key = None if role is None else ApiKey(key_id=f"k-{role}-{account}", account=account, role=role)
        return form_of(Caller(key), fields, json_snapshots)(event)

    assert form("reader") == form("reader")
    assert form("reader") != form("analyst")
    assert form("reader") != form("reader", account="globex")
    assert form("reader") != form("admin") and form("reader") != form(None)
    assert form("reader") != form("reader", json_snapshots=False)
    assert form("admin") == form(None) == form("admin", account="globex")  # the stored content, unmasked
    assert form("admin") != form("admin", json_snapshots=False)
    masked_before = form("reader")
    fields.current["acme"] = lambda name: "pii"  # a new field policy: a new classifier
    assert form("reader") != masked_before


def test_a_publish_wakes_every_waiting_subscriber_and_a_cancelled_wait_is_forgotten() -> None:
    async def scenario() -> None:
        feed = Feed(0)
        waiting = [asyncio.create_task(feed.wait(3600)) for _ in range(3)]
        cancelled = asyncio.create_task(feed.wait(3600))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        event = Event("source.submitted", "lead-w", "flow-live")
        event.position = 1
        feed.publish([event])
        # Woken by the publish itself: an hour's timeout never comes into it.
        await asyncio.wait_for(asyncio.gather(*waiting), 30)
        feed.close()
        await asyncio.wait_for(feed.wait(3600), 30)  # a closed feed never makes anyone wait

    asyncio.run(scenario())


def test_an_idle_wait_ends_at_its_timeout_while_longer_ones_go_on_until_a_publish() -> None:
    feed = Feed(0)

    async def scenario(position: int) -> None:
        long_waits = [asyncio.create_task(feed.wait(3600)) for _ in range(2)]
        await asyncio.wait_for(feed.wait(0.05), 30)  # no publish: the timeout ends it
        await asyncio.wait_for(feed.wait(0.05), 30)  # and again, with the feed's timer re-armed
        assert not any(wait.done() for wait in long_waits)
        event = Event("source.submitted", "lead-t", "flow-live")
        event.position = position
        feed.publish([event])
        await asyncio.wait_for(asyncio.gather(*long_waits), 30)

    for position in (1, 2):  # the feed's timer is armed again on each loop it waits on
        asyncio.run(scenario(position))
