"""What a sink hands its events to: one interface for NATS JetStream, HTTP and files.

A sink (``sinks.sink``) is a durable consumer: it filters and masks committed events and
hands them to its ``Target`` in position order. The target answers only once the system
on the other side holds them (a JetStream PubAck, an HTTP 2xx, a file fsynced and
renamed), or keeps them pending (a file still filling up) and says so with
``pending_from``: the sink's saved position never passes an event the target does not
hold, so a restart of either side hands over again exactly what might be missing.

Every call may be repeated with events the target already holds (a retry after a
failure, a replay after a crash): a target recognises them by position (in memory, or
from what is on the other side, e.g. the files it completed) and by event id (JetStream's
``Nats-Msg-Id`` de-duplication), and never holds one event twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from leadtrail.storage import Event


class TargetError(Exception):
    """A delivery failed; the message (shown as the sink's ``last_error``) names what failed.

    The sink retries the same call after a backoff; nothing is lost or skipped.
    """


class Target(Protocol):
    async def open(self) -> None:
        """Make ready (connect; create the stream or the directory; learn what the other
        side already holds). Raises TargetError: the sink retries later."""

    async def deliver(self, events: Sequence[Event]) -> None:
        """Hand ``events`` on (never empty, in position order, each after the last one
        handed, or again after a failure). Returns once the other side holds them, or holds
        what it does not yet acknowledge as pending (``pending_from``). Raises TargetError
        when the other side failed; the sink then calls again with the same events."""

    def pending_from(self) -> int | None:
        """The first position handed on that the other side does not hold yet (a batch
        waiting to fill, an open file), or None when it holds everything handed on."""

    async def flush(self, now_ms: int) -> None:
        """Complete what is due by time (a batch's ``max_wait_ms``, a file's
        ``rotate_seconds``); called about every second. Raises TargetError like deliver."""

    async def close(self) -> None:
        """Let go of connections and files; what is pending is handed over again after the
        next open (the sink's saved position is before it)."""
