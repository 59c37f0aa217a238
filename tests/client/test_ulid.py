"""Client-assigned event ids are ULIDs the server accepts, in creation order."""

from __future__ import annotations

import base64
import re
import threading
import time

from leadtrail.client import new_event_id
from leadtrail.client._ulid import event_id_time_ms

ID = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def test_ids_are_evt_and_26_crockford_characters() -> None:
    for _ in range(1000):
        assert ID.match(new_event_id())


def test_ids_encode_their_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    event_id = new_event_id()
    after = time.time_ns() // 1_000_000
    assert before <= event_id_time_ms(event_id) <= after
    assert event_id_time_ms(new_event_id(now_ms=1_700_000_000_123)) >= 1_700_000_000_123


def test_ids_within_one_millisecond_count_up() -> None:
    ids = [new_event_id(now_ms=4_102_444_800_000) for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ids_stay_monotonic_when_the_clock_steps_back() -> None:
    later = new_event_id(now_ms=4_102_444_900_000)
    earlier_clock = new_event_id(now_ms=1_000)
    assert earlier_clock > later


def test_ids_made_by_many_threads_are_unique() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        out.extend(new_event_id() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [event_id for out in made for event_id in out]
    assert len(set(everything)) == len(everything)
    for out in made:
        assert out == sorted(out)


def test_ids_are_the_crockford_base32_of_time_and_randomness() -> None:
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    to_crockford = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUV", crockford.encode())
    ms = 4_102_444_801_234
    event_id = new_event_id(now_ms=ms)
    decoded = 0
    for char in event_id[4:]:
        decoded = decoded * 32 + crockford.index(char)
    assert decoded >> 80 >= ms
    # The reference encoding: standard base32hex of the 128 bits, mapped to Crockford's digits.
    reference = base64.b32hexencode(decoded.to_bytes(20, "big"))[6:].translate(to_crockford).decode()
    assert event_id == "evt_" + reference
