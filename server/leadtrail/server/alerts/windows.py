"""Bounded sliding windows of event counts, bucketed by event time.

A window of ``window_s`` seconds is cut into ``per_window`` buckets of a whole number
of seconds that divides the window: the largest count of at most 60 (``bucket_width_ms``;
one bucket of ``window_s`` when the window is a prime number of seconds above 60). The
window is the last ``per_window`` whole buckets, the newest one still filling: it reaches
back between ``window_s - width`` and ``window_s`` from the newest event, never further.
A rule that compares the current window with earlier ones (DROP) keeps
``1 + baseline_windows`` windows of buckets; every other rule keeps one. Each bucket
holds two counts: the events the rule's ``filter`` matched and the events its ``base``
matched.

The buckets are a ring of two ``array('I')`` (4 bytes a count) indexed by the
bucket number modulo the span, with running totals of the newest window and of the
whole span, so adding an event costs O(1) whatever the window's length, and a group
of a one-window rule holds at most 60 x 8 bytes of counts (plus ~250 bytes of object
overhead). An event older than the span is outside every window the rule looks at
and is not counted.

The saved form (``state``) is the head and the two rings as bytes, deflated: copied and
compressed in C, whatever the number of buckets, rather than walked over in Python.
"""

from __future__ import annotations

import base64
import zlib
from array import array
from typing import Any

MAX_BUCKETS_PER_WINDOW = 60
MIN_BUCKET_MS = 1000


def buckets_per_window(window_s: int) -> int:
    """The largest count of at most ``MAX_BUCKETS_PER_WINDOW`` that divides ``window_s``
    (so every bucket is a whole number of seconds, and whole buckets make the window)."""
    if window_s <= 0:
        return 1
    for n in range(min(MAX_BUCKETS_PER_WINDOW, window_s), 0, -1):
        if window_s % n == 0:
            return n
    return 1


def bucket_width_ms(window_s: int) -> int:
    if window_s <= 0:
        return MIN_BUCKET_MS
    return window_s * 1000 // buckets_per_window(window_s)


class Buckets:
    """Counts of one rule and group over ``windows`` consecutive windows of ``window_s``."""

    __slots__ = ("all", "base", "head", "matching", "per_window", "span", "width_ms", "win")

    def __init__(self, window_s: int, windows: int = 1) -> None:
        self.width_ms = bucket_width_ms(window_s)
        self.per_window = buckets_per_window(window_s)
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

    def clear(self) -> None:
        """Forget every count (the newest event is older than the window: none is in it)."""
        if self.all[0] or self.all[1]:
            self.matching = array("I", bytes(4 * self.span))
            self.base = array("I", bytes(4 * self.span))
        self.win = [0, 0]
        self.all = [0, 0]

    def state(self) -> list[Any]:
        """Compact JSON: [head, the two rings as bytes, zlib-compressed, base64] ("" when
        every count is 0)."""
        if not (self.all[0] or self.all[1]):
            return [self.head, ""]
        # Raw deflate with a small window and little memory: ~3 us for 60 buckets, ~30 us for
        # 1,500 (zlib.compress's defaults cost ~70 us whatever the size, for setting up).
        packer = zlib.compressobj(1, zlib.DEFLATED, -12, 4)
        raw = packer.compress(self.matching.tobytes() + self.base.tobytes()) + packer.flush()
        return [self.head, base64.b64encode(raw).decode("ascii")]

    @classmethod
    def restored(cls, window_s: int, windows: int, raw: list[Any]) -> Buckets:
        """The buckets ``state`` saved (empty ones when it does not fit this window)."""
        buckets = cls(window_s, windows)
        head, counts = raw
        buckets.head = int(head)
        if not counts:
            return buckets
        rings = array("I")
        try:
            rings.frombytes(zlib.decompress(base64.b64decode(counts), -15))
        except (ValueError, zlib.error):
            return buckets
        span = buckets.span
        if len(rings) != 2 * span:
            return buckets
        buckets.matching = rings[:span]
        buckets.base = rings[span:]
        buckets.all = [sum(buckets.matching), sum(buckets.base)]
        first, per = buckets.head - buckets.per_window + 1, buckets.per_window
        buckets.win = [_ring_sum(buckets.matching, first, per), _ring_sum(buckets.base, first, per)]
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
