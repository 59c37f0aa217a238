"""The live feed: recently committed events, shared by every subscriber.

The writer thread hands each durable group to the event loop; the feed keeps
the most recent ones in one bounded list that all live subscribers read by
position. A subscriber is just a cursor into it, so a thousand subscribers cost
one buffer, and one that falls behind the oldest event kept here reads from
disk instead: the server never buffers without bound and never drops an event.
Each kept event carries an estimate of the memory it holds, so that what a
subscriber takes from here can be charged to the subscriptions' shared budget.

A kept event is also encoded once per form (see ``Encodings``), not once per
subscriber: a thousand subscribers in one form cost one encoding of each event.

Waiting subscribers are woken by resolving their own futures directly when a
group is published: the wake costs one turn of the event loop, no task and no
timer stand between a commit and the subscribers' sends. One timer for the
whole feed bounds the idle waits (so that checkpoints still go out), rather
than one per wait, which cost more than the rest of a live subscriber's wake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable

import orjson

from leadtrail.storage import Event

EVENT_OVERHEAD_BYTES = 600
"""The objects of an event beyond its snapshots' JSON: fields, the dataclass, the dicts."""
SNAPSHOT_FACTOR = 3
"""Python holds a decoded snapshot in about three times its JSON size (dict, keys, strings)."""
ENCODINGS_BUDGET_BYTES = 32 * 1024 * 1024
"""What the kept encodings of every form may hold together; past it an event is encoded
for its subscriber alone, as if it came from disk (slower, never unbounded)."""


def estimated_bytes(event: Event) -> int:
    """What a decoded event holds in memory, roughly (an estimate that errs high)."""
    snapshots = 0
    if event.lead:
        snapshots += len(orjson.dumps(event.lead))
    if event.details:
        snapshots += len(orjson.dumps(event.details))
    return EVENT_OVERHEAD_BYTES + SNAPSHOT_FACTOR * snapshots


Form = Hashable
"""How a subscriber is sent events (snapshot form, masking and whose policy masks): two
subscribers share an encoding only if their forms are equal."""
Encode = Callable[[Event], bytes]


class Encodings:
    """The serialized wire form of kept events, per form and position, within a byte budget.

    Only what the feed keeps is encoded here, and a kept event whose content changes
    (erasure) loses its encodings at once: nothing erased survives in a cached byte."""

    def __init__(self, budget: int = ENCODINGS_BUDGET_BYTES) -> None:
        self.budget = budget
        self.held = 0
        self._by_form: dict[Form, dict[int, bytes]] = {}

    def get(self, form: Form, position: int, event: Event, encode: Encode) -> bytes:
        kept = self._by_form.get(form)
        if kept is None:
            kept = self._by_form[form] = {}
        found = kept.get(position)
        if found is not None:
            return found
        encoded = encode(event)
        if self.held + len(encoded) <= self.budget:
            kept[position] = encoded
            self.held += len(encoded)
        return encoded

    def forget_before(self, position: int) -> None:
        """Drop the encodings of events no longer kept (and of forms left with none)."""
        for form, kept in list(self._by_form.items()):
            old = [p for p in kept if p < position]
            for p in old:
                self.held -= len(kept.pop(p))
            if not kept:
                del self._by_form[form]

    def forget(self, positions: set[int]) -> None:
        for kept in self._by_form.values():
            for p in positions & kept.keys():
                self.held -= len(kept.pop(p))

    def clear(self) -> None:
        self._by_form.clear()
        self.held = 0


class Feed:
    def __init__(self, last_position: int, capacity: int = 2048) -> None:
        self._capacity = capacity
        self._events: list[Event] = []
        self._sizes: list[int] = []  # estimated_bytes of each kept event
        self.last_position = last_position
        self.encodings = Encodings()
        # Each waiter's deadline; insertion-ordered, so subscribers are woken in the order
        # they began to wait.
        self._waiters: dict[asyncio.Future[None], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

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
            self.encodings.forget_before(self._events[0].position)
        self.last_position = max(self.last_position, events[-1].position)
        self._wake()

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

    def encoded(self, event: Event, form: Form, encode: Encode) -> bytes:
        """``encode(event)``, shared by every subscriber of ``form`` while the feed keeps
        the event (an event read from disk is encoded for its reader alone)."""
        if self._events:
            i = event.position - self._events[0].position
            if 0 <= i < len(self._events) and self._events[i] is event:
                return self.encodings.get(form, event.position, event, encode)
        return encode(event)

    def replace(self, events: list[Event]) -> None:
        """Give the kept copies of these events their stored content again (after an
        erasure); in place, so a subscriber holding a slice sends the new content."""
        if not self._events:
            return
        first = self._events[0].position
        changed: set[int] = set()
        for event in events:
            i = event.position - first
            if 0 <= i < len(self._events) and self._events[i].position == event.position:
                kept = self._events[i]
                kept.lead, kept.details, kept.reason = event.lead, event.details, event.reason
                changed.add(event.position)
        self.encodings.forget(changed)

    def clear(self) -> None:
        """Keep nothing in memory: subscribers read from disk until the next commits."""
        self._events.clear()
        self._sizes.clear()
        self.encodings.clear()

    async def wait(self, timeout: float) -> None:
        """Until the next publish, or ``timeout`` seconds."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + timeout
        self._waiters[waiter] = deadline
        if self._timer is None or self._timer_loop is not loop or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_loop = loop.call_at(deadline, self._expire), loop
        try:
            await waiter
        finally:
            self._waiters.pop(waiter, None)

    def _expire(self) -> None:
        """The feed's one timer: end the waits that are due, and wait for the next due."""
        self._timer = None
        loop = asyncio.get_running_loop()
        due = loop.time() + _TIMER_SLACK_SECONDS
        earliest: float | None = None
        for waiter, deadline in list(self._waiters.items()):
            if deadline <= due:
                del self._waiters[waiter]
                _resolve(waiter)
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._expire)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            _resolve(waiter)

    @property
    def closed(self) -> bool:
        """Shutting down: ``wait`` returns at once, so a reader that has caught up stops
        following rather than wait on a feed that no longer wakes anyone."""
        return self._closed

    def close(self) -> None:
        """Wake every waiter, now and from now on (shutdown)."""
        self._closed = True
        self._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_TIMER_SLACK_SECONDS = 0.001
"""A timer may fire this much before its time (the clock's resolution): waits due within it end."""


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
