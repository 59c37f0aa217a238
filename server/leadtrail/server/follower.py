"""A follower worker keeps up with the writer: its store, its live feed, its acknowledgements.

Each notice from the writer (notices.py) moves the follower's store (storage
``EventLog.follow_commit``); the events it newly made visible go to this
process's live feed, read back from the segment files, so that subscribers of
every worker see each commit promptly and never one the writer has not
acknowledged. The feed keeps them even with nobody subscribed here: a
subscription that starts later replays the newest events from memory rather
than from disk. A new maintenance epoch is answered once the store reloaded.

A read on a follower waits (bounded) until the follower serves what the writer
has acknowledged (acknowledged.py), so that a client reads through any worker
what it was told is stored.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any, Protocol

from leadtrail.storage import Event, EventLog
from leadtrail.storage.follow import CommitNotice

from .feed import Feed
from .notices import WriterLink

log = logging.getLogger("leadtrail.server")

FEED_BACKLOG = 2048
"""At most this many of the newest events go to the feed at once; subscribers further
behind read the rest from disk, as they do after any gap."""


CAUGHT_UP_SECONDS = 2.0
"""How long a read on a follower waits for the notice of what the writer acknowledged; one
that did not come by then (a writer hung or away) is no reason to refuse what is here."""

SYNC_SECONDS = 2.0
"""How long a subscription on a follower waits to see what the writer has acknowledged."""


class Followed:
    """How far this follower has applied the writer's notices."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._moved = asyncio.Event()

    def moved_to(self, position: int) -> None:
        self.position = position
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def reached(self, position: int, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.position < position:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._moved.wait(), left)
            except TimeoutError:
                return False
        return True


class SyncedStream:
    """A follower's StreamService: a subscription starts from what the writer has
    acknowledged when it is asked for, as it would on the writer (a client that appended,
    then subscribed through another connection, gets what it appended)."""

    def __init__(self, servicer: object, link: WriterLink, followed: Followed) -> None:
        self._servicer = servicer
        self._link = link
        self._followed = followed

    def __getattr__(self, name: str) -> Any:
        impl = getattr(self._servicer, name)

        async def synced(request: Any, context: Any) -> AsyncIterator[Any]:
            latest = await self._link.latest(SYNC_SECONDS)
            if latest is not None:  # a writer away is no reason to refuse what is here
                await self._followed.reached(latest, SYNC_SECONDS)
            async for response in impl(request, context):
                yield response

        return synced


class Acknowledged(Protocol):
    def get(self) -> int: ...


class CaughtUpQuery:
    """A follower's QueryService: a read starts once this follower serves what the writer
    has acknowledged (in the moment between an acknowledgement and its notice, it waits)."""

    def __init__(self, servicer: object, acknowledged: Acknowledged, followed: Followed) -> None:
        self._servicer = servicer
        self._acknowledged = acknowledged
        self._followed = followed

    async def _caught_up(self) -> None:
        target = self._acknowledged.get()
        if target > self._followed.position:
            await self._followed.reached(target, CAUGHT_UP_SECONDS)

    def __getattr__(self, name: str) -> Any:
        impl = getattr(self._servicer, name)
        if inspect.isasyncgenfunction(impl):

            async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
                await self._caught_up()
                async for response in impl(request, context):
                    yield response

            return streamed

        async def answered(request: Any, context: Any) -> Any:
            await self._caught_up()
            return await impl(request, context)

        return answered


def _visible_events(store: EventLog, after: int, upto: int) -> list[Event]:
    start = max(after + 1, upto - FEED_BACKLOG + 1)
    return list(store.read_from(start, limit=upto - start + 1))


async def follow_writer(
    link: WriterLink,
    notices: AsyncIterator[tuple[CommitNotice, bool]],
    store: EventLog,
    feed: Feed,
    reads: Executor,
    followed: Followed,
    opened: CommitNotice,
) -> None:
    """Runs until the link closes: every notice applied in order, from the one the store
    was ``opened`` at."""
    loop = asyncio.get_running_loop()
    published = store.last_position
    applied = opened
    async for notice, first in notices:
        try:
            moved_on = first or notice.epoch != applied.epoch
            if moved_on or notice.dictionary not in (0, applied.dictionary):
                # A reload (the writer restarted, or an erasure, retention, a new
                # dictionary): disk work, off the loop. What the feed kept is read
                # again from disk by whoever needs it.
                await loop.run_in_executor(reads, store.follow_commit, notice, first)
                feed.clear()
            else:
                # The tail segments' new sizes: cheaper here than a thread hop, and the
                # reads waiting for this position (CaughtUpQuery) start sooner.
                store.follow_commit(notice)
            applied = notice
        except Exception:
            # Tried again with the next notice; the follower keeps serving what it has meanwhile.
            log.exception("follower could not apply a commit notice")
            continue
        followed.moved_to(notice.visible)
        if moved_on:
            await link.acknowledge(notice.epoch)
        if notice.visible > published:
            try:
                events = await loop.run_in_executor(reads, _visible_events, store, published, notice.visible)
            except Exception:
                log.exception("follower could not read a commit back for its live feed")
                continue  # read with the next notice's events
            feed.publish(events)
            published = notice.visible
