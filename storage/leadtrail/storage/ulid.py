"""Event ids: ``evt_`` + a 26-character ULID in Crockford base32 (canonical upper case).

ULIDs start with their creation time in milliseconds, so ids assigned in one
process sort by time and land near each other in the id index.
"""

from __future__ import annotations

import os
import re
import threading
import time

PREFIX = "evt_"
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_PATTERN = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


# base64's "extended hex" base32 (0-9A-V) maps digit for digit onto Crockford's.
_HEX32 = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_FROM_CROCKFORD = str.maketrans(_ALPHABET, _HEX32)
# Every pair of digits (10 bits): the server names every event sent without an
# id, and a table lookup is several times faster than base64.b32hexencode.
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]
_RANDOM_MASK = (1 << 80) - 1
_last_prefix = ""


def _encode_time(ms: int) -> str:
    # 48 bits in 10 digits (50 bits, the top two zero).
    pairs = _PAIRS
    return (
        pairs[(ms >> 40) & 1023] + pairs[(ms >> 30) & 1023] + pairs[(ms >> 20) & 1023]
        + pairs[(ms >> 10) & 1023] + pairs[ms & 1023]
    )  # fmt: skip


def _encode_random(value: int) -> str:
    # 80 bits are exactly 16 digits.
    pairs = _PAIRS
    return (
        pairs[value >> 70] + pairs[(value >> 60) & 1023] + pairs[(value >> 50) & 1023]
        + pairs[(value >> 40) & 1023] + pairs[(value >> 30) & 1023] + pairs[(value >> 20) & 1023]
        + pairs[(value >> 10) & 1023] + pairs[value & 1023]
    )  # fmt: skip


def new_event_id(now_ms: int | None = None) -> str:
    """A new id, monotonic within this process even within one millisecond."""
    global _last_ms, _last_random, _last_prefix
    ms = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) & ((1 << 48) - 1)
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
            _last_prefix = PREFIX + _encode_time(ms)
        else:  # same millisecond, or the clock stepped back: stay monotonic
            _last_random += 1
            if _last_random > _RANDOM_MASK:
                _last_ms += 1
                _last_random = 0
                _last_prefix = PREFIX + _encode_time(_last_ms)
        prefix, rnd = _last_prefix, _last_random
    return prefix + _encode_random(rnd)


def id_bytes(event_id: str) -> bytes:
    """The 16 bytes of a valid id (checked by validation before this is called)."""
    return int(event_id[len(PREFIX) :].translate(_FROM_CROCKFORD), 32).to_bytes(16, "big")


def is_valid_id(event_id: str) -> bool:
    return ID_PATTERN.fullmatch(event_id) is not None
