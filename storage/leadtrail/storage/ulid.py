"""Event ids: ``evt_`` + a 26-character ULID in Crockford base32 (canonical upper case).

ULIDs start with their creation time in milliseconds, so ids assigned in one
process sort by time and land near each other in the id index.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time

PREFIX = "evt_"
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_PATTERN = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")

_lock = threading.Lock()
_last_ms = 0
_last_random = 0


# base64's "extended hex" base32 (0-9A-V) maps digit for digit onto Crockford's.
_HEX32 = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_TO_CROCKFORD = str.maketrans(_HEX32, _ALPHABET)
_FROM_CROCKFORD = str.maketrans(_ALPHABET, _HEX32)


def _encode(value: int) -> str:
    # 20 bytes are 32 digits; a 128-bit value leaves the first 6 of them zero.
    return base64.b32hexencode(value.to_bytes(20, "big"))[6:].decode().translate(_TO_CROCKFORD)


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
    return int(event_id[len(PREFIX) :].translate(_FROM_CROCKFORD), 32).to_bytes(16, "big")


def is_valid_id(event_id: str) -> bool:
    return ID_PATTERN.match(event_id) is not None
