"""Bounded sliding windows of event counts, bucketed by event ``timestamp``.

A window of ``window_s`` seconds is cut into buckets of ``width_ms`` = max(1 s,
window_s / 60): at most about 60 buckets a window, whatever its length. A rule that
compares the current window with earlier ones (DROP) keeps ``1 + baseline_windows``
windows of buckets; every other rule keeps one. Each bucket holds two counts: the
events the rule's ``filter`` matched and the events its ``base`` matched.

The buckets are a ring of two ``array('I')`` (4 bytes a count) indexed by the
bucket number modulo the span, with running totals of the newest window and of the
whole span, so adding an event costs O(1) whatever the window's length, and a group
of a one-window rule holds at most 60 x 8 bytes of counts (plus ~250 bytes of object
overhead). An event older than the span is outside every window the rule looks at
and is not counted.
"""

from __future__ import annotations

from array import array
from typing import Any

MAX_BUCKETS_PER_WINDOW = 60
MIN_BUCKET_MS = 1000


def bucket_width_ms(window_s: int) -> int:
    return max(MIN_BUCKET_MS, window_s * 1000 // MAX_BUCKETS_PER_WINDOW)


class Buckets:
    """Counts of one rule and group over ``windows`` consecutive windows of ``window_s``."""

    __slots__ = ("all", "base", "head", "matching", "per_window", "span", "width_ms", "win")

    def __init__(self, window_s: int, windows: int = 1) -> None:
        self.width_ms = bucket_width_ms(window_s)
        self.per_window = max(1, -(-window_s * 1000 // self.width_ms))
        self.span = self.per_window * max(1, windows)
        self.head = -1
        """The bucket number of the newest bucket held (-1: none yet)."""
        self.matching = array("I", bytes(4 * self.span))
        self.base = array("I", bytes(4 * self.span))
        self.win = [0, 0]
        """Matching and base events in the newest window (the buckets head-per_window+1..head)."""
        self.all = [0, 0]
        """Matching and base events in every bucket held."""

    def add(self, timestamp_ms: int, matching: int, base: int) -> None:
        b = timestamp_ms // self.width_ms
        if b > self.head:
            self.advance_to(timestamp_ms)
        elif b <= self.head - self.span:
            return  # older than every window kept
        i = b % self.span
        self.matching[i] += matching
        self.base[i] += base
        self.all[0] += matching
        self.all[1] += base
        if b > self.head - self.per_window:
            self.win[0] += matching
            self.win[1] += base

    def advance_to(self, timestamp_ms: int) -> None:
        """Make the bucket of ``timestamp_ms`` the newest (windows end there); never moves back."""
        b = timestamp_ms // self.width_ms
        head = self.head
        if b <= head:
            return
        span = self.span
        if head < 0 or b - head >= span:
            self.matching = array("I", bytes(4 * span))
            self.base = array("I", bytes(4 * span))
            self.win = [0, 0]
            self.all = [0, 0]
            self.head = b
            return
        # Buckets head-span+1 .. b-span leave the span: their slots become buckets head+1 .. b.
        first, count = head + 1, b - head
        self.all[0] -= _ring_sum(self.matching, first, count)
        self.all[1] -= _ring_sum(self.base, first, count)
        _ring_zero(self.matching, first, count)
        _ring_zero(self.base, first, count)
        self.head = b
        per = self.per_window
        self.win = [_ring_sum(self.matching, b - per + 1, per), _ring_sum(self.base, b - per + 1, per)]

    @property
    def earlier(self) -> tuple[int, int]:
        """Matching and base events of the windows before the newest one."""
        return self.all[0] - self.win[0], self.all[1] - self.win[1]

    @property
    def end_ms(self) -> int:
        """Where the newest window ends (exclusive)."""
        return (self.head + 1) * self.width_ms

    def state(self) -> list[Any]:
        """Compact JSON: [head, [[offset back from head, matching, base], ...]] for buckets
        that hold anything."""
        head, span = self.head, self.span
        if head < 0 or not (self.all[0] or self.all[1]):
            return [head, []]
        matching, base = self.matching, self.base
        held = [i for i, (m, n) in enumerate(zip(matching, base, strict=True)) if m or n]
        # slot i holds bucket head - ((head - i) % span)
        return [head, [[(head - i) % span, matching[i], base[i]] for i in held]]

    @classmethod
    def restored(cls, window_s: int, windows: int, raw: list[Any]) -> Buckets:
        buckets = cls(window_s, windows)
        head, held = raw
        buckets.head = int(head)
        for back, m, n in held:
            back = int(back)
            if not 0 <= back < buckets.span:
                continue
            b = buckets.head - back
            i = b % buckets.span
            buckets.matching[i] = int(m)
            buckets.base[i] = int(n)
            buckets.all[0] += int(m)
            buckets.all[1] += int(n)
            if back < buckets.per_window:
                buckets.win[0] += int(m)
                buckets.win[1] += int(n)
        return buckets


def _ring_sum(ring: array[int], first: int, count: int) -> int:
    """The sum of ``count`` slots of ``ring`` from bucket ``first`` on (count <= len(ring))."""
    span = len(ring)
    i = first % span
    if i + count <= span:
        return sum(ring[i : i + count])
    return sum(ring[i:]) + sum(ring[: i + count - span])


def _ring_zero(ring: array[int], first: int, count: int) -> None:
    span = len(ring)
    i = first % span
    if i + count <= span:
        ring[i : i + count] = array("I", bytes(4 * count))
    else:
        ring[i:] = array("I", bytes(4 * (span - i)))
        ring[: i + count - span] = array("I", bytes(4 * (i + count - span)))
