"""One durable consumer: follow committed events from a stored position, hand each
batch to a handler, save the position once the handler's work is done.

Events come from the live feed while it still reaches back to the consumer's
position (the writer's own decoded events, nothing read twice) and from the log on
disk otherwise (after a restart, or when the consumer fell behind). The position
and the handler's state are saved together, at most every ``save_every_s`` and on
a clean stop, so a crash replays at most the events handled since the last save.
When a handler fails, the consumer restores it from its last save and replays from
there: a failure is handled exactly like a crash, by the same code; a restore that
fails is retried the same way, so the consumer never stops following on its own.

At shutdown the feed is closed: a consumer that has handled everything it published
ends, and ``stop`` ends an idle wait at once rather than after up to ``tick_s``.
Events committed after that are handled after the next start, from the saved position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from leadtrail.server.feed import Feed
from leadtrail.storage import Event, EventLog

from .position import ConsumerPosition, Saved

log = logging.getLogger("leadtrail.server")


class Handler(Protocol):
    async def restore(self, saved: Saved) -> None:
        """Take up the state saved with ``saved.position`` (``saved.state`` is None for a
        new consumer): called before the first batch and after a failed one."""

    async def handle(self, events: Sequence[Event]) -> None:
        """Work on committed events, in position order, each after the last handled one.
        Events handled after the last save come again after a crash: a handler that
        must not act twice recognises them (e.g. by what it already wrote to the log).
        Raising leaves the position where it was."""

    async def tick(self, now_ms: int) -> None:
        """Called about every ``tick_s`` between batches: work that depends on time
        passing rather than on events (an absence, a retry that is due)."""

    def state(self) -> Any:
        """JSON values saved with the position: the state as of the last handled event."""


class Served(Protocol):
    """What a consumer follows in a server: the log, its live feed, the read pool."""

    @property
    def log(self) -> EventLog: ...
    @property
    def feed(self) -> Feed: ...
    @property
    def reads(self) -> Executor: ...


class DurableConsumer:
    def __init__(
        self,
        position: ConsumerPosition,
        handler: Handler,
        *,
        log: EventLog,
        feed: Feed,
        reads: Executor,
        new_start: int,
        batch: int = 1000,
        save_every_s: float = 1.0,
        tick_s: float = 1.0,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        holding: Callable[[], int | None] | None = None,
    ) -> None:
        """``new_start``: the position a consumer that never saved has handled (e.g. the
        log's last position, to follow only what is committed from now on). ``holding``: the
        first handled position whose work is not done yet (a sink's target still filling a
        batch or a file), or None; no position at or past it is saved."""
        self.name = position.name
        self._file = position
        self._handler = handler
        self._log = log
        self._feed = feed
        self._reads = reads
        self._new_start = new_start
        self._batch = batch
        self._save_every_s = save_every_s
        self._tick_s = tick_s
        self._retry_s = retry_s
        self._clock = clock
        self._holding = holding
        self.position = 0
        """Every event up to here is handled."""
        self.saved_position = 0
        self._saved: Saved | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting = False
        """The run loop is in a wait (for the feed, or before a retry), nothing in hand."""
        self._cut_short = False
        """stop() cancelled the run loop in a wait."""
        self._rewind_due = False
        """A batch or a restore failed: the handler's state is not that of ``position``."""
        self._advanced = asyncio.Event()
        self.failures = 0

    @classmethod
    def following(cls, store: Served, name: str, handler: Handler, **options: Any) -> DurableConsumer:
        """A consumer of the served store's log named ``name`` that, new, follows only what is
        committed from now on."""
        return cls(
            ConsumerPosition(store.log.path, name),
            handler,
            log=store.log,
            feed=store.feed,
            reads=store.reads,
            new_start=store.log.last_position,
            **options,
        )

    async def start(self) -> None:
        """Load the stored position, restore the handler, and follow from there."""
        loop = asyncio.get_running_loop()
        saved = await loop.run_in_executor(self._reads, self._file.load)
        new = saved is None
        if saved is None:
            saved = Saved(self._new_start, None)
        self._saved = saved
        self.position = self.saved_position = saved.position
        await self._handler.restore(saved)
        if new:
            # Saved at once: a consumer that follows "from now on" starts from its first start,
            # not from wherever the log is when it first saves after a crash.
            await self._save()
        self._task = asyncio.create_task(self._run(), name=f"consumer {self.name}")
        self._task.add_done_callback(self._ended)

    @property
    def running(self) -> bool:
        """Whether the run loop still follows the log (it ends on stop, or once the feed is
        closed and everything it published is handled)."""
        return self._task is not None and not self._task.done()

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the batch in hand (within ``grace`` seconds), then save the position."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        if self._waiting and not task.done():
            # Nothing in hand: end the wait now rather than after up to a tick.
            self._cut_short = True
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
            return  # the handler stopped mid-batch: its state is not that of a position
        except Exception:
            return
        if not self._rewind_due:  # else the last save is the last consistent state
            await self._save()

    async def handled(self, position: int, timeout: float) -> bool:
        """Wait until every event up to ``position`` is handled (False after ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.position < position:
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._advanced.clear()
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except TimeoutError:
                return self.position >= position
        return True

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A run loop that ends other than by ``stop`` or a closed feed stops the consumer for
        good: say so loudly rather than leave the position silently still."""
        if task.cancelled():
            if not self._stopping:
                log.error("consumer %s was cancelled; it no longer follows the log", self.name)
            return
        e = task.exception()
        if e is not None:
            log.error("consumer %s ended; it no longer follows the log", self.name, exc_info=e)

    async def _run(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # stop() cut a wait short: a clean end. Any other cancellation goes on.
            if not (self._cut_short and task is not None and task.uncancel() == 0):
                raise

    async def _pause(self, waited: Awaitable[None]) -> None:
        """Await ``waited`` with nothing in hand: ``stop`` may cancel the run loop meanwhile."""
        self._waiting = True
        try:
            await waited
        finally:
            self._waiting = False

    async def _follow(self) -> None:
        last_save = last_tick = self._clock()
        while not self._stopping:
            try:
                if self._rewind_due:
                    # Here, inside the try, so that a failing restore is retried like a failing
                    # batch instead of ending the loop.
                    await self._pause(asyncio.sleep(self._retry_s))
                    await self._rewind()
                    self._rewind_due = False
                events = await self._next()
                if events:
                    await self._handler.handle(events)
                    self.position = events[-1].position
                    self._advanced.set()
                now = self._clock()
                if now - last_tick >= self._tick_s or not events:
                    last_tick = now
                    await self._handler.tick(int(now * 1000))
                if now - last_save >= self._save_every_s and self.settled_position != self.saved_position:
                    last_save = now
                    await self._save()
                # Checked again after the awaits above: a group published meanwhile is handled
                # now, not after a wait of a tick.
                if not events and not self._stopping and self.position >= self._feed.last_position:
                    if self._feed.closed:
                        return  # shutdown: the feed wakes no one any more, and nothing is in hand
                    await self._pause(self._feed.wait(self._tick_s))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                self._rewind_due = True
                log.warning("consumer %s: %s; resuming from position %d", self.name, e, self.saved_position)

    async def _next(self) -> list[Event]:
        """The next committed events after the position: from memory, or from disk."""
        if self.position >= self._feed.last_position:
            return []
        kept = self._feed.after(self.position, self._batch)
        if kept is not None:
            return kept[0]
        loop = asyncio.get_running_loop()
        start, limit = self.position + 1, self._batch
        return await loop.run_in_executor(self._reads, lambda: list(self._log.read_from(start, limit=limit)))

    @property
    def settled_position(self) -> int:
        """Every event up to here is handled and its work done: what a save stores."""
        first = self._holding() if self._holding is not None else None
        return self.position if first is None else min(self.position, first - 1)

    async def _save(self) -> None:
        saved = Saved(self.settled_position, self._handler.state())
        await asyncio.get_running_loop().run_in_executor(
            self._reads, self._file.save, saved.position, saved.state
        )
        self._saved = saved
        self.saved_position = saved.position

    async def _rewind(self) -> None:
        """After a failed batch: the handler and the position as of the last save."""
        saved = self._saved or Saved(self._new_start, None)
        self.position = saved.position
        await self._handler.restore(saved)
