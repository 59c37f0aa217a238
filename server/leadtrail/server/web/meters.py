"""What the server measures of itself for ``/metrics``, kept per account.

The hooks are cheap because they sit on the hot paths: a committed event costs one
dict increment (under a lock: the writer thread counts, the loop reads), an append one
bisect into the latency buckets, a subscription one set insertion while it lives.
Nothing here knows Prometheus: ``metrics`` turns a snapshot into families at scrape time.

Label cardinality is bounded: an account's first ``MAX_TYPES_PER_ACCOUNT`` event types
are counted by name, every later one as ``type="other"``.

The meters of a store are found by its log (``meters_of``): the servicers and the HTTP
listener of one store share them, two stores in one process (tests) never do.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from leadtrail.storage import Event, Outcome

MAX_TYPES_PER_ACCOUNT = 1000
OTHER_TYPE = "other"
"""The ``type`` label of an account's events past its first ``MAX_TYPES_PER_ACCOUNT`` types."""
APPEND_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of ``leadtrail_append_seconds``; +Inf follows. Appends are
durable in about a millisecond with fsync on a local disk, in tens with a slow one."""
OUTCOME_LABELS = {outcome: outcome.name.lower() for outcome in Outcome}


class AppendCounts:
    """Committed events by account, type and outcome (the writer thread adds, a scrape reads).

    One row of counts per account and type, indexed by outcome: hashing an ``Outcome`` (an
    enum, hashed in Python) would cost more than the rest of the count."""

    def __init__(self, max_types: int = MAX_TYPES_PER_ACCOUNT) -> None:
        self.max_types = max_types
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], list[int]] = {}
        self._types: dict[str, int] = {}
        """Types counted by name, per account."""

    def committed(self, events: Sequence[Event]) -> None:
        """A commit listener: runs on the writer thread after each durable group."""
        with self._lock:
            rows = self._rows
            for event in events:
                row = rows.get((event.account_id, event.type))
                if row is None:
                    row = self._row(event.account_id, event.type)
                row[event.outcome] += 1

    def _row(self, account: str, type_: str) -> list[int]:
        named = self._types.get(account, 0)
        if named >= self.max_types:
            type_ = OTHER_TYPE
        else:
            self._types[account] = named + 1
        row = self._rows.get((account, type_))
        if row is None:
            row = self._rows[(account, type_)] = [0] * len(Outcome)
        return row

    def of(self, account: str) -> dict[tuple[str, str], int]:
        """(type, outcome label) -> events committed since the server started."""
        with self._lock:
            mine = [(type_, list(row)) for (owner, type_), row in self._rows.items() if owner == account]
        return {
            (type_, OUTCOME_LABELS[outcome]): row[outcome]
            for type_, row in mine
            for outcome in Outcome
            if row[outcome]
        }


@dataclass
class Histogram:
    """Observations in ``APPEND_BUCKETS_S`` (not cumulative; ``metrics`` sums them)."""

    counts: list[int]
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(APPEND_BUCKETS_S, seconds)] += 1
        self.total += seconds


class AppendLatency:
    """``leadtrail_append_seconds`` per account: from a request's arrival to durable (on the loop)."""

    def __init__(self) -> None:
        self._by_account: dict[str, Histogram] = {}

    def observe(self, account: str, seconds: float) -> None:
        histogram = self._by_account.get(account)
        if histogram is None:
            histogram = self._by_account[account] = Histogram([0] * (len(APPEND_BUCKETS_S) + 1))
        histogram.observe(seconds)

    def of(self, account: str) -> Histogram:
        found = self._by_account.get(account)
        if found is None:
            return Histogram([0] * (len(APPEND_BUCKETS_S) + 1))
        return Histogram(list(found.counts), found.total)


class Reading(Protocol):
    """A live subscription as the meters see it: the position it has read through
    (None before it began)."""

    @property
    def position(self) -> int | None: ...


class Subscriptions:
    """The live subscriptions per account (on the loop)."""

    def __init__(self) -> None:
        self._by_account: dict[str, set[Reading]] = {}

    @contextmanager
    def live(self, account: str, subscription: Reading) -> Iterator[None]:
        """Counts ``subscription`` while the block runs."""
        live = self._by_account.setdefault(account, set())
        live.add(subscription)
        try:
            yield
        finally:
            live.discard(subscription)

    def count(self, account: str) -> int:
        return len(self._by_account.get(account, ()))

    def largest_lag(self, account: str, last_position: int) -> int:
        """Positions the furthest-behind live subscription of ``account`` has still to read
        (0 with none): the log's last position minus the position it has read through."""
        positions = [s.position for s in self._by_account.get(account, ()) if s.position is not None]
        return max((max(0, last_position - p) for p in positions), default=0)


class Meters:
    """Everything measured of one store."""

    def __init__(self) -> None:
        self.appended = AppendCounts()
        self.append_seconds = AppendLatency()
        self.subscriptions = Subscriptions()


_METERS: weakref.WeakKeyDictionary[object, Meters] = weakref.WeakKeyDictionary()


def meters_of(log: object) -> Meters:
    """The meters of the store whose log is ``log`` (made on first use)."""
    found = _METERS.get(log)
    if found is None:
        found = _METERS[log] = Meters()
    return found
