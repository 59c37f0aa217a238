"""Client-side event ids: ``evt_`` + a 26-character ULID in Crockford base32.

The background appender names every event before it leaves the caller's
thread, so a batch re-sent after a lost connection carries the same ids and the
server's idempotent append stores each event once. A ULID is 48 bits of Unix
time in milliseconds followed by 80 random bits; within one millisecond the
random part counts up, so ids made by one process sort in creation order.
"""

from __future__ import annotations

import base64
import os
import threading
import time

PREFIX = "evt_"

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's "extended hex" base32 (0-9A-V) maps digit for digit onto Crockford's,
# and the C encoder is several times faster than a Python loop over 26 digits.
_TO_CROCKFORD = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", _ALPHABET.encode())
_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1
_TIME_MASK = (1 << 48) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int) -> str:
    # 20 bytes are 32 base32 digits; a 128-bit value leaves the first 6 zero.
    return base64.b32hexencode(value.to_bytes(20, "big"))[6:].translate(_TO_CROCKFORD).decode()


def new_event_id(now_ms: int | None = None) -> str:
    """A new event id, strictly greater than every id made before it in this process."""
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            # The top random bit starts clear so a millisecond has room to count up.
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1
        else:
            # Same millisecond, or the wall clock stepped back: stay monotonic.
            _last_random += 1
            if _last_random > _RANDOM_MASK:
                _last_ms += 1
                _last_random = 0
        ms, rnd = _last_ms, _last_random
    return PREFIX + _encode(((ms & _TIME_MASK) << _RANDOM_BITS) | rnd)


def event_id_time_ms(event_id: str) -> int:
    """The creation time in Unix milliseconds encoded in an id."""
    digits = event_id[len(PREFIX) : len(PREFIX) + 10]
    value = 0
    for char in digits:
        value = value * 32 + _ALPHABET.index(char)
    return value
