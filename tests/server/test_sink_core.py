"""The sink core on a real log and consumer, with a target written here that holds events
pending until it has a full file's worth (as the files target does) and fails when told:
the saved position never passes what the target does not hold, a failing target is
retried inside ``handle`` (the consumer never rewinds), and a restart hands over again
exactly what was pending."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from leadtrail.server.consumers import ConsumerPosition, DurableConsumer
from leadtrail.server.feed import Feed
from leadtrail.server.sinks import SinkSpec, TargetError, WebhookSpec
from leadtrail.server.sinks.sink import SinkPolicy, SinkRun
from leadtrail.storage import Event, EventFilter, EventLog, FsyncPolicy, Options

FAST = SinkPolicy(first_backoff_s=0.01, max_backoff_s=0.05)


class FileLikeTarget:
    """Holds what it is handed pending until ``every`` events wait, then takes those (a
    completed file); ``failures`` calls raise first (TargetError, or ``bug`` if set)."""

    def __init__(self, every: int, failures: int = 0, bug: bool = False) -> None:
        self.every = every
        self.failures = failures
        self.bug = bug
        self.pending: list[Event] = []
        self.held: list[int] = []
        self.calls = 0
        self.closed = False

    async def open(self) -> None:
        self.closed = False

    async def deliver(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            if self.bug:
                raise RuntimeError("the target tripped over itself")
            raise TargetError("the other side is down")
        last = self.pending[-1].position if self.pending else (self.held[-1] if self.held else 0)
        self.pending += [e for e in events if e.position > last]
        while len(self.pending) >= self.every:
            self.held += [e.position for e in self.pending[: self.every]]
            del self.pending[: self.every]

    def pending_from(self) -> int | None:
        return self.pending[0].position if self.pending else None

    async def flush(self, now_ms: int) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, data: Path) -> None:
        self.data = str(data)
        self.log = EventLog.open(self.data, Options(fsync=FsyncPolicy.parse("always")))
        self.feed = Feed(self.log.last_position)
        self.reads = ThreadPoolExecutor(max_workers=2)
        loop = asyncio.get_running_loop()
        self.log.add_commit_listener(lambda events: loop.call_soon_threadsafe(self.feed.publish, events))

    def sink(self, target: FileLikeTarget, spec: SinkSpec) -> tuple[SinkRun, DurableConsumer]:
        run = SinkRun(spec, lambda: target, FAST, random.Random(7))
        consumer = DurableConsumer(
            ConsumerPosition(self.data, spec.consumer_name),
            run,
            log=self.log,
            feed=self.feed,
            reads=self.reads,
            new_start=spec.start_after,
            save_every_s=0.0,
            tick_s=0.05,
            retry_s=0.01,
            holding=run.pending_from,
        )
        return run, consumer

    async def append(self, n: int, type: str = "source.submitted") -> int:
        events = [Event(type=type, lead_id=f"lead-{i}", flow_id="f") for i in range(n)]
        results = await asyncio.wrap_future(self.log.submit(events))
        return results[-1].position

    def close(self) -> None:
        self.feed.close()
        self.log.close()
        self.reads.shutdown()


def spec(**filter_parts: object) -> SinkSpec:
    f = EventFilter("default", **filter_parts)  # type: ignore[arg-type]
    return SinkSpec("default", "core", f, WebhookSpec("http://127.0.0.1:9/"))


async def _case_the_saved_position_stops_before_what_the_target_holds_pending(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        target = FileLikeTarget(every=5)
        run, consumer = rig.sink(target, spec())
        await consumer.start()
        last = await rig.append(7)
        assert await consumer.handled(last, timeout=10)
        assert target.held == [1, 2, 3, 4, 5] and [e.position for e in target.pending] == [6, 7]
        assert consumer.settled_position == 5 and run.delivered_total == 5
        await run.stop()
        await consumer.stop()
        saved = ConsumerPosition(rig.data, "sink.default.core").load()
        assert saved is not None and saved.position == 5 and saved.state["delivered_total"] == 5
        # After a restart the pending events are handed over again, nothing more, nothing less.
        again = FileLikeTarget(every=3)
        again.held = list(target.held)
        run, consumer = rig.sink(again, spec())
        await consumer.start()
        last = await rig.append(1)
        assert await consumer.handled(last, timeout=10)
        assert again.held == [1, 2, 3, 4, 5, 6, 7, 8] and again.pending == []
        assert run.delivered_total == 8 and consumer.settled_position == 8
        await run.stop()
        await consumer.stop()
    finally:
        rig.close()


async def _case_a_failing_target_is_retried_in_place_and_reported(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        target = FileLikeTarget(every=1, failures=3)
        run, consumer = rig.sink(target, spec(types=("source.*",)))
        await consumer.start()
        await rig.append(2, type="buyer.accepted")  # not matched: never handed on
        last = await rig.append(4)
        assert await consumer.handled(last, timeout=10)
        assert target.held == [3, 4, 5, 6] and target.calls >= 4
        assert consumer.failures == 0  # retried inside handle: the consumer never rewound
        assert run.delivered_total == 4 and not run.retrying and run.state_name == "running"
        assert run.last_error == "the other side is down" and run.last_error_at_ms > 0
        await run.stop()
        await consumer.stop()
    finally:
        rig.close()


async def _case_a_targets_own_bug_is_shown_and_retried_the_same_way(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        target = FileLikeTarget(every=1, failures=2, bug=True)
        run, consumer = rig.sink(target, spec())
        await consumer.start()
        last = await rig.append(3)
        assert await consumer.handled(last, timeout=10)
        assert target.held == [1, 2, 3] and consumer.failures == 0
        assert run.last_error == "RuntimeError: the target tripped over itself"
        await run.stop()
        await consumer.stop()
    finally:
        rig.close()


async def _case_a_stop_while_retrying_keeps_the_failed_events_for_the_next_start(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        target = FileLikeTarget(every=1, failures=10**9)
        run, consumer = rig.sink(target, spec())
        await consumer.start()
        await rig.append(3)
        while not run.retrying:
            await asyncio.sleep(0.01)
        assert run.state_name == "retrying"
        await run.stop()
        await consumer.stop()
        await run.close()
        assert target.closed and target.held == []
        saved = ConsumerPosition(rig.data, "sink.default.core").load()
        assert saved is not None and saved.position == 0
    finally:
        rig.close()


def test_the_saved_position_stops_before_what_the_target_holds_pending(tmp_path: Path) -> None:
    asyncio.run(_case_the_saved_position_stops_before_what_the_target_holds_pending(tmp_path))


def test_a_failing_target_is_retried_in_place_and_reported(tmp_path: Path) -> None:
    asyncio.run(_case_a_failing_target_is_retried_in_place_and_reported(tmp_path))


def test_a_targets_own_bug_is_shown_and_retried_the_same_way(tmp_path: Path) -> None:
    asyncio.run(_case_a_targets_own_bug_is_shown_and_retried_the_same_way(tmp_path))


def test_a_stop_while_retrying_keeps_the_failed_events_for_the_next_start(tmp_path: Path) -> None:
    asyncio.run(_case_a_stop_while_retrying_keeps_the_failed_events_for_the_next_start(tmp_path))
