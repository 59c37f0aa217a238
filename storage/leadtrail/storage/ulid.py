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
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
ID_PATTERN = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")

_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_event_id(now_ms: int | None = None) -> str:
    """A new id, monotonic within this process even within one millisecond."""
    global _last_ms, _last_random
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _last_random = (_last_random + 1) & ((1 << 80) - 1)
        else:
            _last_ms = ms
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
        rnd = _last_random
    return PREFIX + _encode(((ms & ((1 << 48) - 1)) << 80) | rnd)


def id_bytes(event_id: str) -> bytes:
    """The 16 bytes of a valid id (checked by validation before this is called)."""
    value = 0
    for c in event_id[len(PREFIX) :]:
        value = (value << 5) | _DECODE[c]
    return value.to_bytes(16, "big")


def is_valid_id(event_id: str) -> bool:
    return ID_PATTERN.match(event_id) is not None
