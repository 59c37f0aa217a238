"""Bounded sliding windows of event counts, bucketed by event ``timestamp``.

A window of ``window_s`` seconds is cut into buckets of ``width_ms`` = max(1 s,
window_s / 60): at most about 60 buckets a window, whatever its length. A rule that
compares the current window with earlier ones (DROP) keeps ``1 + baseline_windows``
windows of buckets; every other rule keeps one. Each bucket holds two counts: the
events the rule's ``filter`` matched and the events its ``base`` matched.

The buckets are a ring of two ``array('I')`` (4 bytes a count) indexed by the
bucket number modulo the span, with running totals of the newest window and of the
whole span, so adding an event costs O(1) whatever the window's length, and a group
of a one-window rule holds about 60 x 8 bytes of counts (plus ~300 bytes of object
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
        if head < 0 or b - head >= self.span:
            for arr in (self.matching, self.base):
                for i in range(self.span):
                    arr[i] = 0
            self.win = [0, 0]
            self.all = [0, 0]
            self.head = b
            return
        span, per = self.span, self.per_window
        for k in range(head + 1, b + 1):
            j = (k - per) % span  # leaves the newest window (held: per <= span)
            self.win[0] -= self.matching[j]
            self.win[1] -= self.base[j]
            j = k % span  # bucket k - span leaves the span; its slot becomes bucket k
            self.all[0] -= self.matching[j]
            self.all[1] -= self.base[j]
            self.matching[j] = 0
            self.base[j] = 0
        self.head = b

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
        held = []
        span = self.span
        for back in range(span):
            b = self.head - back
            if b < 0:
                break
            i = b % span
            m, n = self.matching[i], self.base[i]
            if m or n:
                held.append([back, m, n])
        return [self.head, held]

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
