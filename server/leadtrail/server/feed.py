"""The live feed: recently committed events, shared by every subscriber.

The writer thread hands each durable group to the event loop; the feed keeps
the most recent ones in one bounded list that all live subscribers read by
position. A subscriber is just a cursor into it, so a thousand subscribers cost
one buffer, and one that falls behind the oldest event kept here reads from
disk instead: the server never buffers without bound and never drops an event.
Each kept event carries an estimate of the memory it holds, so that what a
subscriber takes from here can be charged to the subscriptions' shared budget.
"""

from __future__ import annotations

import asyncio

import orjson

from leadtrail.storage import Event

EVENT_OVERHEAD_BYTES = 600
"""The objects of an event beyond its snapshots' JSON: fields, the dataclass, the dicts."""
SNAPSHOT_FACTOR = 3
"""Python holds a decoded snapshot in about three times its JSON size (dict, keys, strings)."""


def estimated_bytes(event: Event) -> int:
    """What a decoded event holds in memory, roughly (an estimate that errs high)."""
    snapshots = 0
    if event.lead:
        snapshots += len(orjson.dumps(event.lead))
    if event.details:
        snapshots += len(orjson.dumps(event.details))
    return EVENT_OVERHEAD_BYTES + SNAPSHOT_FACTOR * snapshots


class Feed:
    def __init__(self, last_position: int, capacity: int = 2048) -> None:
        self._capacity = capacity
        self._events: list[Event] = []
        self._sizes: list[int] = []  # estimated_bytes of each kept event
        self.last_position = last_position
        self._signal = asyncio.Event()

    def publish(self, events: list[Event]) -> None:
        """Runs on the event loop, in commit order."""
        if not events:
            return
        if self._events and events[0].position != self._events[-1].position + 1:
            self.clear()  # never expected: positions are gapless for appends
        self._events.extend(events)
        self._sizes.extend(estimated_bytes(e) for e in events)
        if len(self._events) > 2 * self._capacity:
            del self._events[: len(self._events) - self._capacity]
            del self._sizes[: len(self._sizes) - self._capacity]
        self.last_position = max(self.last_position, events[-1].position)
        signal, self._signal = self._signal, asyncio.Event()
        signal.set()

    def after(
        self, position: int, limit: int, max_bytes: int | None = None
    ) -> tuple[list[Event], int] | None:
        """Events after ``position`` from memory, at most ``limit`` of them and (but for the
        first) ``max_bytes`` by estimate, with their estimated bytes; None when memory no
        longer reaches back."""
        if position >= self.last_position:
            return [], 0
        if not self._events:
            return None
        first = self._events[0].position
        if position + 1 < first:
            return None
        start = position + 1 - first
        end = min(start + limit, len(self._events))
        total = 0
        for i in range(start, end):
            if max_bytes is not None and i > start and total + self._sizes[i] > max_bytes:
                end = i
                break
            total += self._sizes[i]
        return self._events[start:end], total

    def replace(self, events: list[Event]) -> None:
        """Give the kept copies of these events their stored content again (after an
        erasure); in place, so a subscriber holding a slice sends the new content."""
        if not self._events:
            return
        first = self._events[0].position
        for event in events:
            i = event.position - first
            if 0 <= i < len(self._events) and self._events[i].position == event.position:
                kept = self._events[i]
                kept.lead, kept.details, kept.reason = event.lead, event.details, event.reason

    def clear(self) -> None:
        """Keep nothing in memory: subscribers read from disk until the next commits."""
        self._events.clear()
        self._sizes.clear()

    async def wait(self, timeout: float) -> None:
        """Until the next publish, or ``timeout`` seconds."""
        signal = self._signal
        try:
            await asyncio.wait_for(signal.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        """Wake every waiter (shutdown)."""
        self._signal.set()
