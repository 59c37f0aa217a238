"""What the sync and asyncio subscriptions and the appender share about reconnecting.

A subscription remembers the last position it delivered or was told about by a
checkpoint; after a lost connection it asks for the events after that
position, so the caller sees no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from leadtrail.v1 import stream_pb2

from ._convert import subscription_items_from_proto
from ._model import CaughtUp, Checkpoint, Event
from ._requests import resume_request

# The server went away (restart, shutdown, network): the same request will work
# against its successor. A server stopping with calls still open cancels them,
# which the client sees as CANCELLED; the caller's own cancellation is told
# apart by the caller's stop flag.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED})


def is_reconnectable(error: grpc.RpcError) -> bool:
    code_of = getattr(error, "code", None)
    return callable(code_of) and code_of() in RECONNECT_CODES


class Backoff:
    """Delays between reconnection attempts: doubling from ``initial`` up to ``maximum`` seconds."""

    def __init__(self, initial: float = 0.05, maximum: float = 2.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay

    def reset(self) -> None:
        self._next = self._initial


SubscriptionItem = Event | Checkpoint | CaughtUp


class SubscriptionCursor:
    """The position of a subscription, and the request that continues it."""

    def __init__(self, first: stream_pb2.SubscribeRequest, include_checkpoints: bool) -> None:
        self._first = first
        self._include_checkpoints = include_checkpoints
        start = first.WhichOneof("start")
        self._resumable = start == "after_position"
        self.position = first.after_position if self._resumable else 0
        self.caught_up = False

    def request(self) -> stream_pb2.SubscribeRequest:
        # Until the first message the original start point still means the same thing.
        return resume_request(self._first, self.position) if self._resumable else self._first

    def accept(self, message: stream_pb2.SubscribeResponse) -> Iterator[SubscriptionItem]:
        """The items to hand to the caller for a server message. The position moves as each
        item is taken, not when the message arrives, so it always names the last item the
        caller has seen, even in the middle of a batch."""
        for item in subscription_items_from_proto(message):
            self._resumable = True
            self.position = max(self.position, item.position)
            if isinstance(item, Event):
                yield item
                continue
            if isinstance(item, CaughtUp):
                # Each new connection replays and catches up again; the caller sees one
                # continuous subscription and hears about catching up once.
                if self.caught_up:
                    continue
                self.caught_up = True
            if self._include_checkpoints:
                yield item


def cancel_call(call: grpc.RpcContext) -> None:
    """Cancel a sync call (a no-op once it has finished)."""
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves cancel() unannotated
