"""Durable consumers (server/consumers): every committed event handed over at least once,
in position order, the position saved only after the handler's work, resumed after a
restart and after a failed batch, from the live feed or from disk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from leadtrail.server.consumers import ConsumerPosition, DurableConsumer, Saved
from leadtrail.server.consumers.position import PositionFileError
from leadtrail.server.feed import Feed
from leadtrail.storage import Event, EventLog, FsyncPolicy, Options


class Counter:
    """A handler whose state is the number of events and the sum of their positions."""

    def __init__(self, fail_at: int | None = None, restores_failing: int = 0) -> None:
        self.count = 0
        self.total = 0
        self.seen: list[int] = []
        self.restored: list[Saved] = []
        self.ticks = 0
        self.fail_at = fail_at
        self.restores_failing = restores_failing
        """The restores after the first that raise (as when the state cannot be read back)."""

    async def restore(self, saved: Saved) -> None:
        if self.restored and self.restores_failing:
            self.restores_failing -= 1
            raise OSError("the saved state could not be read")
        self.restored.append(saved)
        self.count, self.total = saved.state or (0, 0)

    async def handle(self, events: Sequence[Event]) -> None:
        for event in events:
            if self.fail_at is not None and event.position == self.fail_at:
                self.fail_at = None  # once
                raise RuntimeError("the handler's work failed")
            self.count += 1
            self.total += event.position
            self.seen.append(event.position)

    async def tick(self, now_ms: int) -> None:
        self.ticks += 1

    def state(self) -> Any:
        return [self.count, self.total]


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event(type="source.submitted", lead_id=f"lead-{start + i}", flow_id="f") for i in range(n)]


class Rig:
    """A log whose commits reach a feed on the loop, as in the server."""

    def __init__(self, data: Path, capacity: int = 2048) -> None:
        self.data = str(data)
        self.log = EventLog.open(self.data, Options(fsync=FsyncPolicy.parse("always")))
        self.feed = Feed(self.log.last_position, capacity=capacity)
        self.reads = ThreadPoolExecutor(max_workers=2)
        loop = asyncio.get_running_loop()
        self.log.add_commit_listener(lambda events: loop.call_soon_threadsafe(self.feed.publish, events))

    def consumer(self, handler: Counter, **kwargs: Any) -> DurableConsumer:
        kwargs.setdefault("save_every_s", 0.0)
        kwargs.setdefault("tick_s", 0.05)
        kwargs.setdefault("retry_s", 0.01)
        return DurableConsumer(
            ConsumerPosition(self.data, "test"),
            handler,
            log=self.log,
            feed=self.feed,
            reads=self.reads,
            new_start=kwargs.pop("new_start", self.log.last_position),
            **kwargs,
        )

    async def append(self, events: list[Event]) -> int:
        results = await asyncio.wrap_future(self.log.submit(events))
        return results[-1].position

    def close(self) -> None:
        self.feed.close()
        self.log.close()
        self.reads.shutdown()


async def _case_follows_commits_and_saves_the_position(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        await rig.append(_events(5))  # before the consumer existed: not its business
        handler = Counter()
        consumer = rig.consumer(handler)
        await consumer.start()
        assert handler.restored == [Saved(5, None)]
        last = await rig.append(_events(7, 5))
        assert await consumer.handled(last, timeout=10)
        await consumer.stop()
        assert handler.seen == list(range(6, 13))
        assert ConsumerPosition(rig.data, "test").load() == Saved(12, [7, sum(range(6, 13))])
        assert handler.ticks >= 1
    finally:
        rig.close()


async def _case_restart_resumes_after_the_saved_position_from_disk(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        first = Counter()
        consumer = rig.consumer(first, new_start=0)
        await consumer.start()
        last = await rig.append(_events(3))
        assert await consumer.handled(last, timeout=10)
        await consumer.stop()
        await rig.append(_events(4, 3))  # while no consumer runs
        rig.feed.clear()  # memory no longer reaches back: these come from disk
        second = Counter()
        consumer = rig.consumer(second, new_start=0)
        await consumer.start()
        assert second.restored == [Saved(3, [3, 6])]
        assert await consumer.handled(7, timeout=10)
        await consumer.stop()
        assert second.seen == [4, 5, 6, 7]
        assert (second.count, second.total) == (7, sum(range(1, 8)))
    finally:
        rig.close()


async def _case_a_failed_batch_is_replayed_from_the_last_save(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        handler = Counter(fail_at=4)
        consumer = rig.consumer(handler, new_start=0)
        await consumer.start()
        assert await consumer.handled(await rig.append(_events(2)), timeout=10)
        await saved_at(consumer, 2)  # a save happens between batches (save_every_s=0)
        last = await rig.append(_events(4, 2))
        assert await consumer.handled(last, timeout=10)
        await consumer.stop()
        assert consumer.failures == 1
        # Restored from its last save, the handler's state counts every event once.
        assert (handler.count, handler.total) == (6, sum(range(1, 7)))
        assert len(handler.restored) == 2
        assert ConsumerPosition(rig.data, "test").load() == Saved(6, [6, 21])
    finally:
        rig.close()


async def saved_at(consumer: DurableConsumer, position: int, timeout: float = 10.0) -> None:
    """Until the consumer has saved ``position`` (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while consumer.saved_position < position:
        assert asyncio.get_running_loop().time() < deadline, f"position {position} not saved in {timeout} s"
        await asyncio.sleep(0.01)


async def _case_a_failing_restore_is_retried_and_every_event_handled(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        # The batch at position 4 fails, then the restore after it fails too: the consumer must
        # go on retrying (not end), and handle every event once from its last save.
        handler = Counter(fail_at=4, restores_failing=1)
        consumer = rig.consumer(handler, new_start=0)
        await consumer.start()
        assert await consumer.handled(await rig.append(_events(2)), timeout=10)
        await saved_at(consumer, 2)
        assert await consumer.handled(await rig.append(_events(4, 2)), timeout=10)
        last = await rig.append(_events(3, 6))  # and the events after it
        assert await consumer.handled(last, timeout=10)
        assert consumer.running
        await consumer.stop()
        assert consumer.failures == 2
        assert handler.restored == [Saved(0, None), Saved(2, [2, 3])]
        assert (handler.count, handler.total) == (9, sum(range(1, 10)))
        assert ConsumerPosition(rig.data, "test").load() == Saved(9, [9, 45])
    finally:
        rig.close()


async def _case_stop_ends_an_idle_wait_at_once_and_saves(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        # A tick far longer than the grace of stop: a stop that waited for the tick would be cut
        # off by the grace and leave the position unsaved (saves are otherwise an hour apart).
        handler = Counter()
        consumer = rig.consumer(handler, new_start=0, tick_s=60.0, save_every_s=3600.0)
        await consumer.start()
        last = await rig.append(_events(3))
        assert await consumer.handled(last, timeout=10)
        await consumer.stop(grace=2.0)
        assert ConsumerPosition(rig.data, "test").load() == Saved(3, [3, 6])
        assert not consumer.running
    finally:
        rig.close()


async def _case_a_closed_feed_ends_the_consumer_once_it_has_caught_up(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        handler = Counter()
        consumer = rig.consumer(handler, new_start=0, tick_s=60.0, save_every_s=3600.0)
        await consumer.start()
        last = await rig.append(_events(4))
        assert await consumer.handled(last, timeout=10)
        rig.feed.close()  # shutdown: the feed no longer waits
        deadline = asyncio.get_running_loop().time() + 10
        while consumer.running:
            assert asyncio.get_running_loop().time() < deadline, "the consumer kept running"
            await asyncio.sleep(0.01)
        ticks = handler.ticks
        await asyncio.sleep(0.1)
        assert handler.ticks == ticks  # no idle rounds on a closed feed
        await consumer.stop()
        assert ConsumerPosition(rig.data, "test").load() == Saved(4, [4, 10])
    finally:
        rig.close()


async def _case_a_consumer_behind_the_feed_reads_the_log(tmp_path: Path) -> None:
    rig = Rig(tmp_path, capacity=4)
    try:
        await rig.append(_events(50))
        handler = Counter()
        consumer = rig.consumer(handler, new_start=0, batch=7)
        await consumer.start()
        assert await consumer.handled(50, timeout=10)
        await consumer.stop()
        assert handler.seen == list(range(1, 51))
    finally:
        rig.close()


def test_position_file_round_trip_and_damage(tmp_path: Path) -> None:
    stored = ConsumerPosition(str(tmp_path), "alerts")
    assert stored.load() is None
    stored.save(42, {"windows": [1, 2]})
    assert stored.load() == Saved(42, {"windows": [1, 2]})
    assert not [n for n in os.listdir(stored.directory) if n.endswith(".tmp")]
    Path(stored.path).write_bytes(b'{"format": 1, "position": -3}')
    with pytest.raises(PositionFileError, match="position -3"):
        stored.load()
    Path(stored.path).write_bytes(b"\x00garbage")
    with pytest.raises(PositionFileError, match=str(stored.path)):
        stored.load()
    stored.remove()
    assert stored.load() is None
    with pytest.raises(ValueError, match="consumer name"):
        ConsumerPosition(str(tmp_path), "../escape")


def test_follows_commits_and_saves_the_position(tmp_path: Path) -> None:
    asyncio.run(_case_follows_commits_and_saves_the_position(tmp_path))


def test_restart_resumes_after_the_saved_position_from_disk(tmp_path: Path) -> None:
    asyncio.run(_case_restart_resumes_after_the_saved_position_from_disk(tmp_path))


def test_a_failed_batch_is_replayed_from_the_last_save(tmp_path: Path) -> None:
    asyncio.run(_case_a_failed_batch_is_replayed_from_the_last_save(tmp_path))


def test_a_consumer_behind_the_feed_reads_the_log(tmp_path: Path) -> None:
    asyncio.run(_case_a_consumer_behind_the_feed_reads_the_log(tmp_path))


def test_a_failing_restore_is_retried_and_every_event_handled(tmp_path: Path) -> None:
    asyncio.run(_case_a_failing_restore_is_retried_and_every_event_handled(tmp_path))


def test_stop_ends_an_idle_wait_at_once_and_saves(tmp_path: Path) -> None:
    asyncio.run(_case_stop_ends_an_idle_wait_at_once_and_saves(tmp_path))


def test_a_closed_feed_ends_the_consumer_once_it_has_caught_up(tmp_path: Path) -> None:
    asyncio.run(_case_a_closed_feed_ends_the_consumer_once_it_has_caught_up(tmp_path))
