"""``Alerting`` on a real store, without gRPC: rules set, replaced and deleted while it runs.

The store is opened as the server opens it (the log, the live feed fed by the commit
listener on the event loop, the read pool, the rules book); appends go straight to the
log, and the alert events are read back from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from leadtrail.server.alerts import Alerting, GroupBy, Kind, Rule, RuleBook
from leadtrail.server.consumers import Saved
from leadtrail.server.feed import Feed
from leadtrail.server.keys import KeyStore
from leadtrail.server.privacy import Fingerprints
from leadtrail.server.served_store import ServedStore
from leadtrail.storage import Event, EventFilter, EventLog, Options

WAIT_S = 20.0


@asynccontextmanager
async def running(data: Path, start: bool = True) -> AsyncIterator[ServedStore]:
    """The store with its alerting (its consumer started when ``start``)."""
    loop = asyncio.get_running_loop()
    log = EventLog.open(str(data), Options())
    reads = ThreadPoolExecutor(2)
    ingest = ThreadPoolExecutor(1)
    store = ServedStore(
        log, reads, Feed(log.last_position), ingest, KeyStore(str(data)), Fingerprints(str(data))
    )
    log.add_commit_listener(lambda events: loop.call_soon_threadsafe(store.feed.publish, events))
    store.rules = RuleBook(str(data))
    alerting = store.alerting = Alerting(store, store.rules)
    if start:
        await alerting.start()
    try:
        yield store
    finally:
        if start:
            await alerting.stop()
        store.feed.close()
        ingest.shutdown()
        log.close()
        reads.shutdown()


def count_rule(name: str, threshold: str, after: int, at_ms: int = 1, window_s: int = 3600) -> Rule:
    return Rule(
        account_id="default",
        name=name,
        kind=Kind.COUNT,
        filter=EventFilter(types=("recipient.failed",)),
        threshold=Decimal(threshold),
        window_s=window_s,
        group_by=GroupBy.ENTITY,
        set_at_ms=at_ms,
        set_after_position=after,
    )


async def append(store: ServedStore, n: int, entity: str = "buyer") -> int:
    events = [Event("recipient.failed", lead_id=f"l{i}", flow_id="f", entity_id=entity) for i in range(n)]
    results = await asyncio.wrap_future(store.log.submit(events))
    return results[-1].position


async def evaluated(store: ServedStore, position: int) -> None:
    assert store.alerting is not None
    assert await store.alerting.evaluated(position, WAIT_S)


def alert_events(store: ServedStore) -> list[Event]:
    return [e for e in store.log.read_from(1) if e.flow_id == "alerts"]


async def until(check: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


def test_rules_set_replaced_and_deleted_while_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path / "data") as store:
            assert store.rules is not None and store.alerting is not None
            alerting = store.alerting
            before = await append(store, 5)
            await evaluated(store, before)
            store.rules.set(count_rule("fails", "3", after=before))  # earlier events do not count
            p = await append(store, 2)
            await evaluated(store, p)
            assert alerting.firing() == []
            p = await append(store, 1)
            await until(lambda: len(alerting.firing()) == 1)
            fired = alerting.firing()[0]
            assert (fired.rule, fired.group, fired.value) == ("fails", "buyer", Decimal(3))
            assert [e.id for e in alert_events(store)] == [fired.event_id]
            # set again (a new version): empty state, so no firing until 3 more
            store.rules.set(count_rule("fails", "3", after=store.log.last_position, at_ms=2))
            assert alerting.firing() == []
            p = await append(store, 2)
            await evaluated(store, p)
            assert alerting.firing() == []
            await append(store, 1)
            await until(lambda: len(alerting.firing()) == 1)
            # the replaced rule's alert was closed (on a tick), before the new version fired
            await until(lambda: len(alert_events(store)) == 3)
            written = alert_events(store)
            assert [(e.type, e.details.get("cause")) for e in written] == [
                ("alert.fired", None),
                ("alert.resolved", "rule_changed"),
                ("alert.fired", None),
            ]
            assert written[1].details["fired_event_id"] == fired.event_id
            store.rules.delete("default", "fails")
            assert alerting.firing() == []
            p = await append(store, 5)
            await evaluated(store, p)
            await until(lambda: len(alert_events(store)) == 4)
            closed = alert_events(store)[3]
            assert (closed.type, closed.details["cause"]) == ("alert.resolved", "rule_changed")
            assert closed.details["fired_event_id"] == written[2].id
            assert alerting.refused() == {}

    asyncio.run(scenario())


def test_restart_resumes_from_the_saved_position_and_state(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def first() -> None:
        async with running(data) as store:
            assert store.rules is not None and store.alerting is not None
            store.rules.set(count_rule("fails", "3", after=0))
            await append(store, 3, "a")
            await append(store, 2, "b")
            await until(lambda: len(store.alerting.firing()) == 1 if store.alerting else False)

    async def second() -> None:
        async with running(data) as store:
            assert store.alerting is not None
            alerting = store.alerting
            assert [a.group for a in alerting.firing()] == ["a"]  # restored, not fired again
            await append(store, 1, "a")
            await append(store, 1, "b")
            await until(lambda: [a.group for a in alerting.firing()] == ["a", "b"])
            assert [(e.type, e.entity_id) for e in alert_events(store)] == [
                ("alert.fired", "a"),
                ("alert.fired", "b"),
            ]

    asyncio.run(first())
    asyncio.run(second())


def test_while_catching_up_time_is_that_of_the_events_not_the_clock(tmp_path: Path) -> None:
    """The handler driven as the consumer drives it, a clock a minute past the events: while
    events are still to be evaluated, a tick goes by the last one's recorded_at (the group
    still fires: its next events are on their way); once caught up, by the clock."""

    async def scenario() -> None:
        async with running(tmp_path / "data", start=False) as store:
            assert store.rules is not None and store.alerting is not None
            alerting = store.alerting
            store.rules.set(count_rule("fails", "3", after=0, window_s=1))
            await append(store, 3, "a")
            last = await append(store, 3, "a")
            await until(lambda: store.feed.last_position == last)
            await alerting.restore(Saved(0, None))
            events = list(store.log.read_from(1))
            clock = events[-1].recorded_at_ms + 60_000
            await alerting.handle(events[:3])
            assert [a.group for a in alerting.firing()] == ["a"]
            await alerting.tick(clock)
            assert [e.type for e in alert_events(store)] == ["alert.fired"]
            await until(lambda: store.feed.last_position == last + 1)
            await alerting.handle(list(store.log.read_from(4)))  # the rest, and the firing itself
            assert alerting.firing()[0].value == Decimal(3)
            await alerting.tick(clock)
            assert [e.type for e in alert_events(store)] == ["alert.fired", "alert.resolved"]
            assert alerting.firing() == []

    asyncio.run(scenario())
