"""What ``leadtrail top`` shows, counted over a sliding window of recorded time.

Events are bucketed by the second the server recorded them (``recorded_at``,
the axis a subscription ``from_recorded_at`` replays on), so history replayed
at start and events arriving live land in the same buckets. Only the buckets of
the last ``max(window_s, 60)`` seconds are kept (the money panel always looks
at the last minute), which bounds memory whatever the event rate:

- per bucket, one counter per (type, outcome), per recipient and per entity;
- at most ``MAX_ENTITIES`` entities per bucket (the rest are counted under
  ``OTHER``), so a flood of distinct ids cannot grow it either;
- durations as a histogram per entity: exact below ``EXACT_BELOW_MS``, three
  significant digits above, so a bucket holds at most a few thousand distinct
  values per entity while the common step durations keep their exact p95.

Money is Decimal: revenue is the sum of positive prices, cost the magnitude of
the sum of negative prices (a source's cost, a return's credit).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

MONEY_WINDOW_S = 60
"""Revenue and cost are per minute: the last 60 s whatever the window."""
MAX_ENTITIES = 500
"""Distinct recipients and timed entities kept per one-second bucket."""
OTHER = "(other)"
EXACT_BELOW_MS = 1000
SLOWEST_SHOWN = 10
PERCENTILE = 0.95
_FAILED = frozenset({"FAILURE", "ERROR"})
# A flow.* step lasts the whole journey (retry waits included) and alert.* events are the
# server's own: neither is a step of a service whose slowness an operator chases.
_UNTIMED_PREFIXES = ("flow.", "alert.")


class WatchedEvent(Protocol):
    """The fields of an SDK ``Event`` the view reads (the rest stay undecoded)."""

    @property
    def type(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def price(self) -> Decimal | None: ...


def duration_key(ms: int) -> int:
    """The histogram value for a duration: itself below 1 s, else rounded to 3 significant digits."""
    if ms < EXACT_BELOW_MS:
        return max(ms, 0)
    scale = int(10 ** (len(str(ms)) - 3))
    return (ms + scale // 2) // scale * scale


@dataclass
class _Second:
    """The counts of the events recorded in one second."""

    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    recipient_all: Counter[str] = field(default_factory=Counter)
    recipient_failed: Counter[str] = field(default_factory=Counter)
    durations: dict[str, Counter[int]] = field(default_factory=dict)
    revenue: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)

    def add(self, event: WatchedEvent, outcome: str) -> None:
        self.by_type[(event.type, outcome)] += 1
        entity = event.entity_id
        if event.type.startswith("recipient."):
            if entity not in self.recipient_all and len(self.recipient_all) >= MAX_ENTITIES:
                entity = OTHER
            self.recipient_all[entity] += 1
            if outcome in _FAILED:
                self.recipient_failed[entity] += 1
        if event.entity_id and not event.type.startswith(_UNTIMED_PREFIXES):
            timed = event.entity_id
            if timed not in self.durations and len(self.durations) >= MAX_ENTITIES:
                timed = OTHER
            self.durations.setdefault(timed, Counter())[duration_key(event.duration_ms)] += 1
        price = event.price
        if price is not None:
            if price > 0:
                self.revenue += price
            elif price < 0:
                self.cost -= price


def percentile(histogram: Counter[int], fraction: float = PERCENTILE) -> int:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of the samples
    at or below it."""
    total = sum(histogram.values())
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return 0


class TopWindow:
    """Per-second counts of the last ``window_s`` seconds (and at least the last minute)."""

    def __init__(self, window_s: int) -> None:
        if window_s < 1:
            raise ValueError(f"window_s {window_s}: must be at least 1")
        self.window_s = window_s
        self._kept_s = max(window_s, MONEY_WINDOW_S)
        self._seconds: dict[int, _Second] = {}
        self.position = 0
        """The position of the last event counted (0: none yet)."""

    def add(self, event: WatchedEvent, *, recorded_ms: int, outcome: str, position: int, now_ms: int) -> None:
        """Count one event recorded at ``recorded_ms``; older than the kept seconds it is skipped."""
        self.position = max(self.position, position)
        second = recorded_ms // 1000
        if second <= now_ms // 1000 - self._kept_s:
            return
        bucket = self._seconds.get(second)
        if bucket is None:
            self._prune(now_ms)
            bucket = self._seconds[second] = _Second()
        bucket.add(event, outcome)

    def _prune(self, now_ms: int) -> None:
        oldest = now_ms // 1000 - self._kept_s
        for second in [s for s in self._seconds if s <= oldest]:
            del self._seconds[second]

    @property
    def buckets(self) -> int:
        """How many one-second buckets are held (at most the kept seconds, plus any ahead of the clock)."""
        return len(self._seconds)

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """The view's numbers at ``now_ms``, as JSON-ready values (money as decimal strings)."""
        self._prune(now_ms)
        now_s = now_ms // 1000
        in_window = [b for s, b in self._seconds.items() if s > now_s - self.window_s]
        last_minute = [b for s, b in self._seconds.items() if s > now_s - MONEY_WINDOW_S]

        by_type: Counter[tuple[str, str]] = Counter()
        recipient_all: Counter[str] = Counter()
        recipient_failed: Counter[str] = Counter()
        durations: dict[str, Counter[int]] = {}
        for bucket in in_window:
            by_type.update(bucket.by_type)
            recipient_all.update(bucket.recipient_all)
            recipient_failed.update(bucket.recipient_failed)
            for entity, histogram in bucket.durations.items():
                durations.setdefault(entity, Counter()).update(histogram)
        revenue = sum((b.revenue for b in last_minute), Decimal(0))
        cost = sum((b.cost for b in last_minute), Decimal(0))
        total = sum(by_type.values())

        rows = sorted(by_type.items(), key=lambda item: (-item[1], item[0]))
        shares = sorted(
            ((recipient_failed[entity] / count, count, entity) for entity, count in recipient_all.items()),
            key=lambda r: (-r[0], -r[1], r[2]),
        )
        recipients = [
            {
                "entity_id": entity,
                "failed": recipient_failed[entity],
                "total": count,
                "failure_share": round(share, 4),
            }
            for share, count, entity in shares
        ]
        p95s = sorted(
            (
                (percentile(histogram), sum(histogram.values()), entity)
                for entity, histogram in durations.items()
            ),
            key=lambda r: (-r[0], r[2]),
        )
        slowest = [
            {"entity_id": entity, "p95_ms": p95, "count": n} for p95, n, entity in p95s[:SLOWEST_SHOWN]
        ]
        return {
            "window_s": self.window_s,
            "position": self.position,
            "events": {
                "total": total,
                "per_second": _rate(total, self.window_s),
                "by_type_outcome": [
                    {"type": t, "outcome": o, "count": n, "per_second": _rate(n, self.window_s)}
                    for (t, o), n in rows
                ],
            },
            "recipients": recipients,
            "money": {
                "window_s": MONEY_WINDOW_S,
                "revenue_per_minute": str(revenue),
                "cost_per_minute": str(cost),
                "margin_per_minute": str(revenue - cost),
            },
            "slowest": slowest,
        }


def _rate(count: int, seconds: int) -> float:
    return round(count / seconds, 3)
