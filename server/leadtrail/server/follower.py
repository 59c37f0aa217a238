"""A follower worker keeps up with the writer: its store, its live feed, its acknowledgements.

Each notice from the writer (notices.py) moves the follower's store (storage
``EventLog.follow_commit``); the events it newly made visible go to this
process's live feed, read back from the segment files, so that subscribers of
every worker see each commit promptly and never one the writer has not
acknowledged. A new maintenance epoch is answered once the store reloaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from leadtrail.storage import Event, EventLog
from leadtrail.storage.follow import CommitNotice

from .feed import Feed
from .notices import WriterLink

log = logging.getLogger("leadtrail.server")

FEED_BACKLOG = 2048
"""At most this many of the newest events go to the feed at once; subscribers further
behind read the rest from disk, as they do after any gap."""


def _visible_events(store: EventLog, after: int, upto: int) -> list[Event]:
    start = max(after + 1, upto - FEED_BACKLOG + 1)
    return list(store.read_from(start, limit=upto - start + 1))


async def follow_writer(
    link: WriterLink,
    notices: AsyncIterator[tuple[CommitNotice, bool]],
    store: EventLog,
    feed: Feed,
    reads: Executor,
) -> None:
    """Runs until the link closes: every notice applied in order."""
    loop = asyncio.get_running_loop()
    published = store.last_position
    acknowledged = 0
    async for notice, first in notices:
        try:
            await loop.run_in_executor(reads, store.follow_commit, notice, first)
            if first or notice.epoch != acknowledged:
                # The store was reloaded (an erasure may be why): what the feed kept is
                # read again from disk by whoever needs it.
                feed.clear()
            if notice.visible > published:
                events = await loop.run_in_executor(reads, _visible_events, store, published, notice.visible)
                feed.publish(events)
                published = notice.visible
        except Exception:
            # A read that failed here is tried again with the next notice; the follower
            # keeps serving what it has meanwhile.
            log.exception("follower could not apply a commit notice")
            continue
        if notice.epoch != acknowledged:
            await link.acknowledge(notice.epoch)
            acknowledged = notice.epoch
