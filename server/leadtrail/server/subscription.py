"""A subscription's pump: it chooses the live feed or the disk, and emits the events a
filter matches, batches and checkpoints through one place, in position order, with no gap.

What a subscription holds in memory is bounded, per subscriber and for all together:

- Per subscriber: the events in hand (at most ``REPLAY_CHUNK`` = 512 events and, by
  estimate, ``CHUNK_BYTES`` = 256 KiB, at least one event) and the one message being
  sent (a batch is cut at ``BATCH_BYTES`` = 1 MiB). A client that stops reading stops
  its pump at the send: the server holds no queue per subscriber beyond that (gRPC's
  own buffers aside, bounded by HTTP/2 flow control). A disk reader is closed before
  its chunk is sent: an open one holds its segment's 4 MiB read buffer, which 200
  stalled subscribers replaying from disk once held together (480 MB resident).
- All subscribers together: the events in hand are charged to one ``HeldBytes``
  budget (``SUBSCRIBERS_BUDGET_BYTES`` = 64 MiB by default). A pump that finds the
  budget spent takes ``MIN_CHUNK_BYTES`` = 32 KiB (or one event) at a time,
  uncharged, as a slow subscriber reading from disk does, and catches up at full
  speed once others have given their share back. Events shared with the live feed
  are counted for every subscriber that holds them, so the estimate errs high. So N
  stalled subscribers hold at most the budget plus 32 KiB of events and one message
  each.
- Shared by all: the live feed's encodings of the events it keeps, one per form, within
  ``feed.ENCODINGS_BUDGET_BYTES`` (32 MiB); past it a subscriber encodes for itself.

The pump knows nothing of gRPC: it yields ``SubscribeResponse`` messages that the
servicer sends, and is tested against a real ``EventLog`` in a temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

from leadtrail.storage import Event, EventFilter, StoredEvent
from leadtrail.storage.wireform import repeated_field
from leadtrail.v1 import event_pb2, stream_pb2

from .feed import EVENT_OVERHEAD_BYTES, Feed, estimated_bytes

T = TypeVar("T")
E = TypeVar("E", Event, StoredEvent)

REPLAY_CHUNK = 512
CHUNK_BYTES = 256 * 1024
MIN_CHUNK_BYTES = 32 * 1024
"""What a subscriber takes at a time when the shared budget is spent (or one event)."""
SUBSCRIBERS_BUDGET_BYTES = 64 * 1024 * 1024
CHECKPOINT_EVERY_EVENTS = 1000
CHECKPOINT_EVERY_SECONDS = 1.0
MAX_BATCH_SIZE = 1000
BATCH_BYTES = 1 << 20
"""A subscription's batch is sent once it holds this much, whatever ``batch_size`` says: well
under the 4 MiB a gRPC client accepts by default, with 64 KiB snapshots."""


class HeldBytes:
    """The bytes (by estimate) that every subscription's events in hand hold together."""

    def __init__(self, budget: int = SUBSCRIBERS_BUDGET_BYTES) -> None:
        self.budget = budget
        self.held = 0

    def take(self, wanted: int) -> int:
        """As much of ``wanted`` as the budget has left (possibly nothing)."""
        granted = max(0, min(wanted, self.budget - self.held))
        self.held += granted
        return granted

    def give_back(self, granted: int) -> None:
        self.held -= granted


class SubscribedLog(Protocol):
    """What a pump reads of the log."""

    @property
    def last_position(self) -> int: ...
    @property
    def rewrites(self) -> int: ...
    def read_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[Event]: ...
    def read_stored_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[StoredEvent]: ...


RunOffLoop = Callable[[Callable[[], T]], Awaitable[T]]
Chunk = tuple[list[Event], int, int] | tuple[list[StoredEvent], int, int]
"""What a read from disk hands the pump: (events, the position scanned through, their bytes)."""
Response = stream_pb2.SubscribeResponse | bytes
"""A message of the stream, or its serialized bytes (spliced from stored ones)."""


def read_chunk(log: SubscribedLog, after: int, max_bytes: int) -> tuple[list[Event], int, int]:
    """The events after ``after`` from disk, at most REPLAY_CHUNK and (but for the first)
    ``max_bytes`` by estimate: (events, the position scanned through, their bytes).

    The reader is closed before the events are sent: an open one holds its segment's read
    buffer (4 MiB) and decoding state, which a subscriber that stops reading would keep.
    Reopening costs an index lookup and one read a chunk."""
    return _chunk(log.last_position, log.read_from(after + 1), after, max_bytes, estimated_bytes)


def read_stored_chunk(log: SubscribedLog, after: int, max_bytes: int) -> tuple[list[StoredEvent], int, int]:
    """``read_chunk`` in the stored wire form: no decoded event, the answer is spliced."""
    return _chunk(log.last_position, log.read_stored_from(after + 1), after, max_bytes, stored_bytes)


def stored_bytes(record: StoredEvent) -> int:
    """What a stored event holds in memory, roughly: its snapshots' JSON, undecoded."""
    details_json, lead_json = record.json_parts()
    return EVENT_OVERHEAD_BYTES + len(details_json) + len(lead_json)


def _chunk(
    visible: int, reader: Iterator[E], after: int, max_bytes: int, size_of: Callable[[E], int]
) -> tuple[list[E], int, int]:
    events: list[E] = []
    total = 0
    try:
        for event in reader:
            size = size_of(event)
            if events and total + size > max_bytes:
                break
            events.append(event)
            total += size
            if len(events) == REPLAY_CHUNK:
                break
    finally:
        getattr(reader, "close", lambda: None)()
    if events:
        return events, events[-1].position, total
    return events, max(after, visible), 0


class _Outbox:
    """One place that decides what goes out: an event, a batch, a checkpoint."""

    def __init__(self, batch_size: int, encode: Callable[[Event, event_pb2.Event], None]) -> None:
        self._batch_size = batch_size
        self._encode = encode
        self._batch: stream_pb2.SubscribeResponse | None = None
        self._bytes = 0

    def add(self, event: Event | StoredEvent) -> stream_pb2.SubscribeResponse | None:
        """Take a matching event; the message to send now, if one is complete."""
        if isinstance(event, StoredEvent):
            raise TypeError("an encoding pump reads decoded events only")
        if not self._batch_size:
            response = stream_pb2.SubscribeResponse()
            self._encode(event, response.event)
            return response
        if self._batch is None:
            self._batch, self._bytes = stream_pb2.SubscribeResponse(), 0
        message = self._batch.events.events.add()
        self._encode(event, message)
        self._bytes += message.ByteSize()
        if len(self._batch.events.events) >= self._batch_size or self._bytes >= BATCH_BYTES:
            return self.flush()
        return None

    def flush(self) -> stream_pb2.SubscribeResponse | None:
        """The batch begun, if any (it goes before a checkpoint, and at a chunk's end)."""
        batch, self._batch = self._batch, None
        return batch

    @property
    def holding(self) -> bool:
        """Whether a batch is begun and not yet sent."""
        return self._batch is not None

    def drop(self) -> None:
        self._batch = None


_EVENT_FIELD = 1
"""The field number of ``SubscribeResponse.event`` and of ``EventBatch.events`` alike, so an
event tagged once serves both."""
_RESPONSE_EVENTS = 4
"""``SubscribeResponse.events`` (an ``EventBatch``)."""


def _field(number: int, message: bytes) -> bytes:
    """``message`` as length-delimited field ``number`` of the enclosing message."""
    return repeated_field(number, (message,))


def event_field(event: bytes) -> bytes:
    """A serialized ``Event`` as a response carries it: tagged and length-prefixed, the same
    bytes in a single-event response and in a batch."""
    return _field(_EVENT_FIELD, event)


class _SplicedOutbox:
    """The ``_Outbox`` of events given already serialized, shared between subscribers of one
    form: a response is spliced from their bytes (a repeated field is a run of tagged,
    length-prefixed messages), with no Python object per field. An event from the live feed
    comes tagged by ``serialized`` (``event_field``); one read from disk in the stored form is
    spliced by ``stored`` and tagged here, a batch's run of them in one call."""

    def __init__(
        self,
        batch_size: int,
        serialized: Callable[[Event], bytes],
        stored: Callable[[StoredEvent], bytes] | None = None,
    ) -> None:
        self._batch_size = batch_size
        self._serialized = serialized
        self._stored = stored
        self._parts: list[bytes] = []
        """Tagged events, and runs of them."""
        self._untagged: list[bytes] = []
        """Serialized events after ``_parts``, not tagged yet."""
        self._count = 0
        self._bytes = 0

    def add(self, event: Event | StoredEvent) -> bytes | None:
        if type(event) is StoredEvent:
            assert self._stored is not None  # stored events are read only when it is given
            message = self._stored(event)
            if not self._batch_size:
                return event_field(message)  # a SubscribeResponse of its one event
            self._untagged.append(message)
            self._bytes += len(message)
        else:
            tagged = self._serialized(event)  # type: ignore[arg-type]  # an Event: the type says so
            if not self._batch_size:
                return tagged  # a SubscribeResponse of its one event already
            self._tag_untagged()  # in order: the run before this event first
            self._parts.append(tagged)
            self._bytes += len(tagged)
        self._count += 1
        if self._count >= self._batch_size or self._bytes >= BATCH_BYTES:
            return self.flush()
        return None

    def _tag_untagged(self) -> None:
        if self._untagged:
            self._parts.append(repeated_field(_EVENT_FIELD, self._untagged))
            self._untagged = []

    def flush(self) -> bytes | None:
        if not self._count:
            return None
        self._tag_untagged()
        batch = _field(_RESPONSE_EVENTS, b"".join(self._parts))
        self.drop()
        return batch

    @property
    def holding(self) -> bool:
        return self._count > 0

    def drop(self) -> None:
        self._parts, self._untagged, self._count, self._bytes = [], [], 0, 0


def checkpoint(position: int) -> stream_pb2.SubscribeResponse:
    return stream_pb2.SubscribeResponse(checkpoint=stream_pb2.Checkpoint(position=position))


def caught_up(position: int) -> stream_pb2.SubscribeResponse:
    return stream_pb2.SubscribeResponse(caught_up=stream_pb2.CaughtUp(position=position))


class SubscriptionPump:
    """The messages of one subscription from ``after`` on, until ``closing()``."""

    def __init__(
        self,
        log: SubscribedLog,
        feed: Feed,
        run: RunOffLoop[Chunk],
        f: EventFilter,
        encode: Callable[[Event, event_pb2.Event], None] | None = None,
        *,
        serialized: Callable[[Event], bytes] | None = None,
        stored: Callable[[StoredEvent], bytes] | None = None,
        batch_size: int = 0,
        held: HeldBytes | None = None,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        """Events are sent as ``encode`` fills a message, or as ``serialized`` gives their
        bytes as ``event_field`` tags them (which the feed shares between the subscribers of
        one form). With ``stored`` too, events are read from disk in their stored wire form
        and ``stored`` gives their serialized ``Event`` (spliced, for a caller who sees them
        unmasked): a replay then decodes no event."""
        self._log, self._feed, self._run = log, feed, run
        self._filter = f
        self._outbox: _Outbox | _SplicedOutbox
        self._read: Callable[[SubscribedLog, int, int], Chunk] = read_chunk
        if serialized is not None:
            self._outbox = _SplicedOutbox(batch_size, serialized, stored)
            if stored is not None:
                self._read = read_stored_chunk
        elif encode is not None:
            self._outbox = _Outbox(batch_size, encode)
        else:
            raise TypeError("SubscriptionPump needs encode or serialized")
        self._held = held if held is not None else HeldBytes()
        self._closing = closing
        self.matched = 0
        """Events handed to the stream, for the read audit."""
        self.position: int | None = None
        """The log position scanned through (None before the stream began), for /metrics."""

    async def responses(self, after: int) -> AsyncIterator[stream_pb2.SubscribeResponse]:
        """The stream's messages, each a ``SubscribeResponse``."""
        parse = stream_pb2.SubscribeResponse.FromString
        async for response in self._responses(after):
            yield parse(response) if isinstance(response, bytes) else response

    async def wire_responses(self, after: int) -> AsyncIterator[bytes]:
        """The stream's messages serialized, as gRPC sends them: spliced ones as they are."""
        async for response in self._responses(after):
            yield response if isinstance(response, bytes) else response.SerializeToString()

    async def _responses(self, after: int) -> AsyncIterator[Response]:
        log, feed, outbox, read = self._log, self._feed, self._outbox, self._read
        position = self.position = after  # everything up to here is scanned
        reported = position  # the last position the client has heard of
        reported_at = time.monotonic()
        caught = False
        while not self._closing():
            granted = self._held.take(CHUNK_BYTES)
            try:
                recent = feed.after(position, REPLAY_CHUNK, max(granted, MIN_CHUNK_BYTES))
                rewrites = log.rewrites
                from_disk = recent is None or (not recent[0] and position < log.last_position)
                if from_disk:
                    wanted = max(granted, MIN_CHUNK_BYTES)  # over the budget: a little at a time
                    events, scanned, size = await self._run(
                        lambda p=position, w=wanted: read(log, p, w)  # type: ignore[misc]
                    )
                else:
                    events, size = recent if recent is not None else ([], 0)
                    scanned = events[-1].position if events else position
                recent = None
                # What the chunk holds stays charged until it is sent; the rest goes back now.
                self._held.give_back(granted - min(granted, size))
                granted = min(granted, size)

                # A chunk read from a file an erasure has rewritten since is stale: never sent
                # once the rewrite has returned; it is read again instead.
                sent_through = position  # every event up to here was sent or passed over
                abandoned = False
                for event in events:
                    if self._filter.matches(event):
                        self.matched += 1
                        ready = outbox.add(event)
                        if ready is not None:
                            if from_disk and log.rewrites != rewrites:
                                abandoned = True
                                break
                            yield ready
                            sent_through = event.position
                        reported, reported_at = event.position, time.monotonic()
                    elif event.position - reported >= CHECKPOINT_EVERY_EVENTS:
                        pending = outbox.flush()  # order: the events before the checkpoint first
                        if pending is not None:
                            if from_disk and log.rewrites != rewrites:
                                abandoned = True
                                break
                            yield pending
                        yield checkpoint(event.position)
                        reported, reported_at = event.position, time.monotonic()
                        sent_through = event.position
                    elif not outbox.holding:
                        sent_through = event.position
                if not abandoned and outbox.holding:
                    if from_disk and log.rewrites != rewrites:
                        abandoned = True
                    else:
                        pending = outbox.flush()
                        assert pending is not None
                        yield pending
                read_any = bool(events)
                events = []  # nothing held while waiting below
            finally:
                self._held.give_back(granted)
            if abandoned:
                outbox.drop()
                position = sent_through
                reported = min(reported, sent_through)
                continue
            position = self.position = max(position, scanned)
            # More may be visible; a chunk from memory that reached the log's end is all there is.
            if position < log.last_position or (read_any and from_disk):
                continue
            if not caught:
                yield caught_up(position)
                caught = True
                reported, reported_at = max(reported, position), time.monotonic()
            if position > reported and time.monotonic() - reported_at >= CHECKPOINT_EVERY_SECONDS:
                yield checkpoint(position)
                reported, reported_at = position, time.monotonic()
            await feed.wait(CHECKPOINT_EVERY_SECONDS)
