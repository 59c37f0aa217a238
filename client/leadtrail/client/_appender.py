"""The background appender: the non-blocking write path of a flow engine.

``submit()`` only names the event and puts it on a bounded queue. A sender
thread takes events off the queue in batches and writes them, several batches in
flight, onto one long-lived ``AppendStream`` call; a stream thread reads the
in-order acknowledgements. Every batch stays in the in-flight list until it is
acknowledged, so when the connection is lost the stream thread reconnects and
writes the whole list again: the ids were assigned before the first attempt, so
the server stores each event once however often it is sent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import grpc

from leadtrail.v1 import submission_pb2, submission_pb2_grpc

from ._client import Client
from ._convert import append_request, append_result_from_proto, event_to_proto
from ._errors import InvalidArgumentError, LeadTrailError, QueueFullError, handle_rpc_error
from ._model import Event
from ._requests import DEFAULT_TARGET
from ._resume import RECONNECT_CODES, Backoff, cancel_call
from ._ulid import new_event_id
from ._warnings import warn_of_conflicts

logger = logging.getLogger("leadtrail.client")

FullPolicy = Literal["block", "drop_newest", "raise"]
ErrorCallback = Callable[[Event, LeadTrailError], None]

# Worth sending again as it is: the server was unreachable, restarting or slow.
_RETRY_CODES = RECONNECT_CODES | {grpc.StatusCode.DEADLINE_EXCEEDED}
# Rejections that may concern only some events of a batch (an invalid event, a
# request over the size limit): smaller batches isolate the culprits.
_SPLIT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})

_WAKE = None  # put on the queue to wake the sender at close

# An idle stream is closed after this long: an open call would otherwise hold a
# stopping server in its shutdown grace period, and reopening costs one round trip.
_IDLE_CLOSE_SECONDS = 1.0


@dataclass(eq=False)
class _Batch:
    events: list[Event]
    request: submission_pb2.AppendRequest


class _Retry(Exception):
    """The server became unreachable while batches were settled one by one."""


class BackgroundAppender:
    """Appends events in the background; ``submit()`` returns in microseconds.

    ``submit(event)`` gives the event an id (``evt_`` + a new ULID) unless it has
    one, queues it and returns the id. Batches of up to ``batch_size`` events (or
    what arrived within ``linger_ms`` of the first) are pipelined onto one
    ``AppendStream`` call, at most ``max_in_flight`` batches unacknowledged.

    Delivery: every submitted event is stored exactly once or reported through
    ``on_error(event, error)`` (logged when no callback is given) and counted in
    ``failed``.

    - Connection lost, server restarting (UNAVAILABLE, CANCELLED, ABORTED,
      DEADLINE_EXCEEDED): reconnect with backoff (0.05 s doubling to 2 s) and
      send every unacknowledged batch again with the same ids. Retried without
      limit: the queue filling up is the signal that the server is gone.
    - A batch rejected with INVALID_ARGUMENT or RESOURCE_EXHAUSTED: its events are
      sent again with unary ``Append`` calls in halves, recursively, so the good
      events are stored and each invalid one is reported alone.
    - Any other rejection (UNAUTHENTICATED, PERMISSION_DENIED,
      FAILED_PRECONDITION, ...): the batch's events are reported as failed.
    - An event that cannot be encoded (naive datetime, non-JSON value in
      ``details``): reported with ``InvalidArgumentError`` without a call.

    Full queue (``max_queue`` events waiting), by ``full_policy``:

    - ``"block"`` (default): wait up to ``block_timeout`` seconds (None: forever)
      for room, then raise ``QueueFullError``.
    - ``"raise"``: raise ``QueueFullError`` at once.
    - ``"drop_newest"``: drop the event being submitted, count it in ``dropped``
      and return its id as usual.

    ``flush()`` waits until everything submitted before it is acknowledged
    (durable) or reported failed; ``close()`` flushes, stops the threads, and
    reports whatever is still unacknowledged as failed. Counters: ``submitted``
    (accepted onto the queue), ``acknowledged``, ``failed``, ``dropped``.
    """

    def __init__(
        self,
        target_or_client: str | Client = DEFAULT_TARGET,
        *,
        max_queue: int = 10_000,
        batch_size: int = 100,
        linger_ms: float = 5,
        full_policy: FullPolicy = "block",
        block_timeout: float | None = 5.0,
        api_key: str | None = None,
        on_error: ErrorCallback | None = None,
        max_in_flight: int = 8,
    ) -> None:
        if full_policy not in ("block", "drop_newest", "raise"):
            raise ValueError(f"full_policy must be 'block', 'drop_newest' or 'raise', not {full_policy!r}")
        if max_queue < 1 or batch_size < 1 or max_in_flight < 1 or linger_ms < 0:
            raise ValueError("max_queue, batch_size and max_in_flight must be >= 1, linger_ms >= 0")
        if isinstance(target_or_client, Client):
            self._client = target_or_client
            self._owns_client = False
        else:
            self._client = Client(target_or_client, api_key=api_key)
            self._owns_client = True
        self._stub = submission_pb2_grpc.SubmissionServiceStub(self._client.channel)
        self._metadata = self._client.metadata
        self._unary_timeout = self._client.timeout
        self._batch_size = batch_size
        self._linger = linger_ms / 1000
        self._full_policy = full_policy
        self._block_timeout = block_timeout
        self._max_in_flight = max_in_flight
        self._on_error = on_error

        self._queue: queue.Queue[Event | None] = queue.Queue(max_queue)
        self._count_lock = threading.Lock()
        self._submitted = 0
        self._dropped = 0

        # Guards everything below; notified on every acknowledgement or failure.
        self._cond = threading.Condition()
        self._in_flight: deque[_Batch] = deque()
        self._outbox: queue.SimpleQueue[submission_pb2.AppendRequest | None] | None = None
        self._call: grpc.CallIterator[submission_pb2.AppendResponse] | None = None
        self._acknowledged = 0
        self._failed = 0

        self._closing = False
        self._stopped = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="leadtrail-appender-send", daemon=True)
        self._streamer = threading.Thread(
            target=self._stream_loop, name="leadtrail-appender-stream", daemon=True
        )
        self._sender.start()
        self._streamer.start()

    # -- the caller's side -------------------------------------------------------------------------

    def submit(self, event: Event) -> str:
        """Queue an event for appending and return its id (assigned here when empty)."""
        if self._closing:
            raise LeadTrailError("the BackgroundAppender is closed")
        if not event.id:
            event = _with_id(event, new_event_id())
        try:
            if self._full_policy == "block":
                self._queue.put(event, timeout=self._block_timeout)
            else:
                self._queue.put_nowait(event)
        except queue.Full:
            if self._full_policy == "drop_newest":
                with self._count_lock:
                    self._dropped += 1
                return event.id
            raise QueueFullError(f"{self._queue.maxsize} events are waiting to be sent") from None
        with self._count_lock:
            self._submitted += 1
        return event.id

    @property
    def submitted(self) -> int:
        return self._submitted

    @property
    def acknowledged(self) -> int:
        return self._acknowledged

    @property
    def failed(self) -> int:
        return self._failed

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> int:
        """Submitted events neither acknowledged nor failed yet."""
        with self._cond:
            return self._submitted - self._acknowledged - self._failed

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far is acknowledged or failed; False on timeout."""
        with self._count_lock:
            target = self._submitted
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._acknowledged + self._failed < target:
                if self._stopped.is_set():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Bounded waits so that a stop() elsewhere is noticed.
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush (up to ``timeout``), stop, and report anything unacknowledged as failed.

        Returns True when everything submitted was settled before the stop.
        """
        if self._closing and self._stopped.is_set():
            return True
        self._closing = True
        settled = self.flush(timeout)
        self._stopped.set()
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            pass  # the sender polls the stop flag as well
        with self._cond:
            call = self._call
            self._cond.notify_all()
        if call is not None:
            cancel_call(call)
        self._sender.join(5.0)
        self._streamer.join(5.0)
        leftovers = [batch_event for batch in self._in_flight for batch_event in batch.events]
        self._in_flight.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        if leftovers:
            self._fail(
                leftovers,
                LeadTrailError(
                    "the appender closed before the server acknowledged the event; it may or may not "
                    "be stored, and submitting it again with the same id is safe"
                ),
            )
        if self._owns_client:
            self._client.close()
        return settled

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- settling events ---------------------------------------------------------------------------

    def _acknowledge(self, count: int) -> None:
        with self._cond:
            self._acknowledged += count
            self._cond.notify_all()

    def _fail(self, events: list[Event], error: LeadTrailError) -> None:
        with self._cond:
            self._failed += len(events)
            self._cond.notify_all()
        for event in events:
            if self._on_error is None:
                logger.error("event %s was not appended: %s", event.id, error)
                continue
            try:
                self._on_error(event, error)
            except Exception:
                # A faulty callback must not stop the delivery of later events.
                logger.exception("on_error raised for event %s", event.id)

    # -- the sender thread -------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            with self._cond:
                while len(self._in_flight) >= self._max_in_flight and not self._stopped.is_set():
                    self._cond.wait(0.5)
                self._in_flight.append(batch)
                if self._outbox is not None:
                    self._outbox.put(batch.request)
                self._cond.notify_all()

    def _next_batch(self) -> _Batch | None:
        """The next batch to send, encoded; None once stopped."""
        events: list[Event] = []
        idle_since = time.monotonic()
        while not events:
            if self._stopped.is_set():
                return None
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() - idle_since >= _IDLE_CLOSE_SECONDS:
                    self._close_idle_stream()
                continue
            if first is not None:
                events.append(first)
        deadline = time.monotonic() + self._linger
        while len(events) < self._batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is not None:
                events.append(item)
        try:
            return _Batch(events, self._encode(events))
        except (TypeError, ValueError):
            return self._encodable_part(events)

    @staticmethod
    def _encode(events: list[Event]) -> submission_pb2.AppendRequest:
        messages = []
        for event in events:
            messages.append(event_to_proto(event))
            # Encoding is pure Python under the GIL; handing the GIL over after each
            # event keeps a submit() in the caller's thread from waiting for a whole
            # batch (or the 5 ms switch interval) to be encoded.
            time.sleep(0)
        return submission_pb2.AppendRequest(events=messages)

    def _close_idle_stream(self) -> None:
        with self._cond:
            if self._outbox is not None and not self._in_flight:
                # Half-close: the server answers what it has and ends the call; a
                # batch made meanwhile waits in the in-flight list for the next call.
                self._outbox.put(None)
                self._outbox = None

    def _encodable_part(self, events: list[Event]) -> _Batch | None:
        good: list[Event] = []
        for event in events:
            try:
                event_to_proto(event)
            except (TypeError, ValueError) as error:
                self._fail([event], InvalidArgumentError(str(error)))
            else:
                good.append(event)
        return _Batch(good, append_request(good)) if good else self._next_batch()

    # -- the stream thread -------------------------------------------------------------------------

    def _stream_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._in_flight and not self._stopped.is_set():
                    self._cond.wait()
                if self._stopped.is_set():
                    return
                outbox: queue.SimpleQueue[submission_pb2.AppendRequest | None] = queue.SimpleQueue()
                for batch in self._in_flight:
                    outbox.put(batch.request)
                self._outbox = outbox
                call = self._stub.AppendStream(_requests(outbox), metadata=self._metadata)
                self._call = call
            error: grpc.RpcError | None = None
            try:
                for response in call:  # one per request, in order
                    backoff.reset()
                    with self._cond:
                        if not self._in_flight:
                            continue
                        batch = self._in_flight.popleft()
                    _warn_of_conflicts(response)  # before flush() can return
                    self._acknowledge(len(batch.events))
            except grpc.RpcError as rpc_error:
                error = rpc_error
            finally:
                with self._cond:
                    self._outbox = None
                    self._call = None
                outbox.put(None)  # ends the request iterator gRPC is reading
            if self._stopped.is_set():
                return
            if error is None and not self._in_flight:
                continue  # an idle stream ended: open the next one when there is work
            if error is not None and error.code() not in _RETRY_CODES:
                try:
                    self._settle_one_by_one()
                    continue
                except _Retry:
                    pass
            if self._stopped.wait(backoff.next_delay()):
                return

    def _settle_one_by_one(self) -> None:
        """Send the unacknowledged batches with unary calls, isolating rejected events."""
        with self._cond:
            batches = list(self._in_flight)
        for batch in batches:
            self._settle(batch)
            with self._cond:
                if self._in_flight and self._in_flight[0] is batch:
                    self._in_flight.popleft()

    def _settle(self, batch: _Batch) -> None:
        # Chunk sizes still to send, front first; the batch keeps only the unsettled
        # events, so a retry after a lost connection sends nothing twice to on_error.
        sizes = deque([len(batch.events)])
        while sizes and not self._stopped.is_set():
            size = sizes.popleft()
            chunk = batch.events[:size]
            try:
                response = self._stub.Append(
                    append_request(chunk), timeout=self._unary_timeout, metadata=self._metadata
                )
            except grpc.RpcError as error:
                code = error.code()
                if code in _RETRY_CODES:
                    batch.request = append_request(batch.events)
                    raise _Retry from error
                if size > 1 and code in _SPLIT_CODES:
                    sizes.extendleft((size - size // 2, size // 2))
                    continue
                self._fail(chunk, handle_rpc_error(error, secure=self._client.secure))
            else:
                _warn_of_conflicts(response)
                self._acknowledge(size)
            del batch.events[:size]
        if self._stopped.is_set():
            raise _Retry


def _with_id(event: Event, event_id: str) -> Event:
    """A copy of ``event`` named ``event_id``.

    Equivalent to ``dataclasses.replace`` for the plain frozen Event, at a tenth
    of its cost: replace() runs __init__ and __post_init__ over all 17 fields,
    which alone would be half of submit()'s budget.
    """
    copy = object.__new__(Event)
    copy.__dict__.update(event.__dict__)
    copy.__dict__["id"] = event_id
    return copy


def _requests(
    outbox: queue.SimpleQueue[submission_pb2.AppendRequest | None],
) -> Iterator[submission_pb2.AppendRequest]:
    while True:
        request = outbox.get()
        if request is None:
            return
        yield request


def _warn_of_conflicts(response: submission_pb2.AppendResponse) -> None:
    # Checked on the message first: converting every result would cost the hot path.
    if any(result.conflict for result in response.results):
        warn_of_conflicts(append_result_from_proto(result) for result in response.results)
