"""Client-side event ids: ``evt_`` + a 26-character ULID in Crockford base32.

The background appender names every event before it leaves the caller's
thread, so a batch re-sent after a lost connection carries the same ids and the
server's idempotent append stores each event once. A ULID is 48 bits of Unix
time in milliseconds followed by 80 random bits; within one millisecond the
random part counts up, so ids made by one process sort in creation order.
"""

from __future__ import annotations

import os
import threading
import time

PREFIX = "evt_"

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of digits (10 bits): encoding by table lookup is several times faster
# than base64.b32hexencode, which is pure Python and dominated submit()'s cost.
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]
_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1
_TIME_MASK = (1 << 48) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0
_last_prefix = ""


def _encode_time(ms: int) -> str:
    # 48 bits in 10 digits (50 bits, the top two zero).
    pairs = _PAIRS
    return (
        pairs[(ms >> 40) & 1023]
        + pairs[(ms >> 30) & 1023]
        + pairs[(ms >> 20) & 1023]
        + pairs[(ms >> 10) & 1023]
        + pairs[ms & 1023]
    )


def _encode_random(value: int) -> str:
    # 80 bits are exactly 16 digits.
    pairs = _PAIRS
    return (
        pairs[value >> 70]
        + pairs[(value >> 60) & 1023]
        + pairs[(value >> 50) & 1023]
        + pairs[(value >> 40) & 1023]
        + pairs[(value >> 30) & 1023]
        + pairs[(value >> 20) & 1023]
        + pairs[(value >> 10) & 1023]
        + pairs[value & 1023]
    )


def new_event_id(now_ms: int | None = None) -> str:
    """A new event id, strictly greater than every id made before it in this process."""
    global _last_ms, _last_random, _last_prefix
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            # The top random bit starts clear so a millisecond has room to count up.
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1
            # The time digits change once per millisecond: encoded once, reused.
            _last_prefix = PREFIX + _encode_time(ms & _TIME_MASK)
        else:
            # Same millisecond, or the wall clock stepped back: stay monotonic.
            _last_random += 1
            if _last_random > _RANDOM_MASK:
                _last_ms += 1
                _last_random = 0
                _last_prefix = PREFIX + _encode_time(_last_ms & _TIME_MASK)
        prefix, rnd = _last_prefix, _last_random
    return prefix + _encode_random(rnd)


def event_id_time_ms(event_id: str) -> int:
    """The creation time in Unix milliseconds encoded in an id."""
    digits = event_id[len(PREFIX) : len(PREFIX) + 10]
    value = 0
    for char in digits:
        value = value * 32 + _ALPHABET.index(char)
    return value
