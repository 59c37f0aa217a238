"""Recovery on open (DESIGN.md, "The log" 3, 7, 8; FORMAT.md, "Recovery rules").

What a crash can leave at the end of the last segment (a record cut at any
byte, a request cut before its COMMIT record, a half-created next segment)
is truncated on open; hostile tail bytes are rejected without trusting
their length; positions and ``recorded_at`` carry on across restarts.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import CorruptionError, Event, EventFilter, EventLog, Options

MiB = 1024 * 1024


def build_store(data_dir: Path, numbers: list[int], *, small_last: bool = False) -> list[Event]:
    """One append request per event; the last one tiny if asked (fewer offsets to cut)."""
    stored: dict[str, Event] = {}
    with EventLog.open(data_dir) as log:
        for i, n in enumerate(numbers):
            bulky = not (small_last and i == len(numbers) - 1)
            stored |= faults.append_numbers(log, [n], bulky=bulky)
    return list(stored.values())


def ids_of(events: list[Event]) -> list[str]:
    return [e.id for e in events]


@pytest.mark.slow
@pytest.mark.parametrize("request_size", [1, 3], ids=["one_event", "three_event_request"])
def test_torn_tail_is_truncated_on_open_at_every_byte_of_the_last_request(
    tmp_path: Path, request_size: int
) -> None:
    """Cut the file at every offset of the last append request: all of it or none survives."""
    pristine = tmp_path / "pristine"
    with EventLog.open(pristine) as log:
        earlier: list[Event] = []
        for n in (1, 2, 3, 4):
            earlier += faults.append_numbers(log, [n]).values()
        numbers = range(5, 5 + request_size)
        last_request = list(faults.append_numbers(log, numbers, bulky=False).values())
    [segment] = faults.segment_paths(pristine)
    spans = faults.event_spans(segment)
    assert [s.position for s in spans] == list(range(1, 5 + request_size))
    assert spans[-1].commit
    first, end = spans[4].offset, spans[-1].end
    relative = segment.relative_to(pristine)
    failures = []
    for length in range(first, end + 1):
        store = faults.copy_store(pristine, tmp_path / f"cut-{length}")
        os.truncate(store / relative, length)
        complete = length == end
        with EventLog.open(store) as log:
            events = faults.check_log(log)
            if events != (earlier + last_request if complete else earlier):
                failures.append(f"cut at {length}: positions {[e.position for e in events]}")
                continue
            size = (store / relative).stat().st_size
            if size != (end if complete else first):
                failures.append(f"cut at {length}: file is {size} bytes after open")
            if not complete:
                # The index (copied along, ahead of the log) must forget the lost events.
                for lost in last_request:
                    assert log.get(lost.id, account_id=lost.account_id) is None
                    timeline = log.timeline(lost.lead_id, account_id=lost.account_id)
                    assert lost.id not in ids_of(timeline)
                    scanned = faults.scan_all(log, EventFilter(account_id=lost.account_id))
                    assert lost.id not in ids_of(scanned)
                # A retry of the lost request is stored anew, not taken for a duplicate.
                retry = log.append([faults.make_event(n, bulky=False) for n in numbers])
                assert [(r.position, r.duplicate) for r in retry] == [
                    (p, False) for p in range(5, 5 + request_size)
                ], f"cut at {length}: {retry}"
            [fresh] = log.append([faults.make_event(100)])
            assert fresh.position == 5 + request_size, f"cut at {length}: {fresh.position}"
        with EventLog.open(store) as log:
            events = faults.check_log(log)
            assert ids_of(events) == [*ids_of(earlier + last_request), faults.event_id(100)]
            assert faults.query_mismatches(log, events, scans=3) == []
        shutil.rmtree(store)
    assert failures == []


def _huge_length(last_record: bytes) -> bytes:
    return last_record[:4] + b"\xff\xff\xff\xff" + last_record[8:]


def _next_position_bad_crc(last_record: bytes) -> bytes:
    (position,) = struct.unpack_from("<Q", last_record, 8)
    return last_record[:8] + struct.pack("<Q", position + 1) + last_record[16:]


def _flipped_crc(last_record: bytes) -> bytes:
    return last_record[:16] + bytes([last_record[16] ^ 0x01]) + last_record[17:]


def _uncommitted_next(last_record: bytes) -> bytes:
    """A whole, valid record at the next position, from a request cut before COMMIT."""
    (position,) = struct.unpack_from("<Q", last_record, 8)
    return faults.record(faults.KIND_EVENT, position + 1, last_record[20:])


HOSTILE_TAILS: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda _: random.Random(7).randbytes(3000),
    "zeros": lambda _: bytes(4096),
    "partial_header": lambda last: last[:11],
    "header_claiming_length_0xffffffff": _huge_length,
    "huge_length_then_zeros": lambda last: _huge_length(last)[:20] + bytes(64 * 1024),
    "valid_looking_header_bad_crc": _next_position_bad_crc,
    "flipped_crc": _flipped_crc,
    "copy_of_last_record": lambda last: last,
    "record_without_commit": _uncommitted_next,
    "magic_then_garbage": lambda _: b"LT\x01\x81" + random.Random(8).randbytes(500),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TAILS))
def test_hostile_tail_is_truncated_on_open_without_trusting_it(tmp_path: Path, kind: str) -> None:
    store = tmp_path / "store"
    stored = build_store(store, [1, 2, 3])
    [segment] = faults.segment_paths(store)
    last = faults.event_spans(segment)[-1]
    size = segment.stat().st_size
    last_record = segment.read_bytes()[last.offset : last.end]
    with open(segment, "ab") as f:
        f.write(HOSTILE_TAILS[kind](last_record))

    tracemalloc.start()
    started = time.monotonic()
    try:
        with EventLog.open(store) as log:
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert segment.stat().st_size == size, "the hostile tail was not truncated"
            assert faults.check_log(log) == stored
            [fresh] = log.append([faults.make_event(4)])
            assert fresh.position == 4
            appended = faults.as_stored(faults.make_event(4), 4, fresh.recorded_at_ms)
            assert faults.check_log(log) == [*stored, appended]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"opening allocated {peak / MiB:.0f} MiB at peak"
    assert elapsed < 10, f"opening took {elapsed:.1f}s"


ROLL_CRASHES = ("sealed_without_next", "empty_next", "partial_next_header", "next_header_only")


@pytest.mark.parametrize("state", ROLL_CRASHES)
def test_crash_during_segment_roll_is_recovered_on_open(tmp_path: Path, state: str) -> None:
    """The writer seals, creates the next segment, writes its header: a crash at each step."""
    store = tmp_path / "store"
    stored = build_store(store, [1, 2, 3])
    [segment] = faults.segment_paths(store)
    with open(segment, "ab") as f:
        f.write(faults.seal_record(segment))
    header = faults.segment_header(4)
    partial = {"empty_next": b"", "partial_next_header": header[:13], "next_header_only": header}
    if state in partial:
        (store / "log" / f"{4:020d}.log").write_bytes(partial[state])

    with EventLog.open(store) as log:
        assert faults.check_log(log) == stored
        [fresh] = log.append([faults.make_event(4)])
        assert fresh.position == 4
    with EventLog.open(store) as log:
        events = faults.check_log(log)
        assert ids_of(events) == [*ids_of(stored), faults.event_id(4)]
    assert faults.stray_files(store) == []


def test_recorded_at_never_goes_backwards_when_the_clock_steps_back(tmp_path: Path) -> None:
    now = [faults.BASE_MS + 10 * faults.DAY_MS]
    options = Options(clock_ms=lambda: now[0])
    store = tmp_path / "store"
    with EventLog.open(store, options) as log:
        first = log.append([faults.make_event(n) for n in (1, 2, 3)])
        assert {r.recorded_at_ms for r in first} == {now[0]}
        high = now[0]
        now[0] -= faults.DAY_MS  # the wall clock steps back while the store is open
        second = log.append([faults.make_event(4)])
        assert second[0].recorded_at_ms >= high
    now[0] -= 5 * faults.DAY_MS  # and further back across a restart
    with EventLog.open(store, options) as log:
        assert log.last_position == 4
        third = log.append([faults.make_event(5)])
        assert third[0].position == 5
        assert third[0].recorded_at_ms >= high, "recorded_at went back after reopen"
        now[0] = faults.BASE_MS + 20 * faults.DAY_MS
        fourth = log.append([faults.make_event(6)])
        assert fourth[0].recorded_at_ms == now[0], "recorded_at stuck after the clock recovered"
        events = faults.check_log(log)
        assert [e.recorded_at_ms for e in events] == [
            r.recorded_at_ms for r in (*first, *second, *third, *fourth)
        ]


def test_positions_continue_gapless_and_ids_stay_idempotent_across_reopen(tmp_path: Path) -> None:
    store = tmp_path / "store"
    stored: dict[str, Event] = {}
    next_n = 1
    for session in range(4):
        with EventLog.open(store) as log:
            assert log.last_position == len(stored), f"session {session} lost its position"
            for size in (1, 7, 3):
                batch = faults.append_numbers(log, range(next_n, next_n + size))
                assert [e.position for e in batch.values()] == list(
                    range(len(stored) + 1, len(stored) + size + 1)
                )
                stored |= batch
                next_n += size
            retry = log.append([faults.make_event(1), faults.make_event(next_n - 1)])
            assert [(r.position, r.duplicate) for r in retry] == [
                (1, True),
                (stored[faults.event_id(next_n - 1)].position, True),
            ]
            assert faults.check_log(log) == list(stored.values())


def _store_of_small_segments(tmp_path: Path) -> tuple[Path, Options]:
    """60 events in 4 KiB segments: several sealed segments and an active one."""
    store = tmp_path / "store"
    options = Options(segment_bytes=4096)
    with EventLog.open(store, options) as log:
        for start in range(1, 61, 3):
            faults.append_numbers(log, range(start, start + 3))
    return store, options


def test_missing_sealed_segment_is_reported_as_corruption(tmp_path: Path) -> None:
    """FORMAT.md recovery rule 2: a position gap between segments is corruption."""
    store, options = _store_of_small_segments(tmp_path)
    segments = faults.segment_paths(store)
    assert len(segments) >= 4
    segments[1].unlink()  # acknowledged events gone, and retention never ran

    with pytest.raises(CorruptionError) as raised:
        EventLog.open(store, options).close()
    problems = " ".join(raised.value.problems)
    assert any(s.name in problems for s in segments[:3]), problems


def test_missing_first_segment_is_reported_as_corruption(tmp_path: Path) -> None:
    store, options = _store_of_small_segments(tmp_path)
    segments = faults.segment_paths(store)
    segments[0].unlink()
    with pytest.raises(CorruptionError) as raised:
        EventLog.open(store, options).close()
    assert "positions 1.." in " ".join(raised.value.problems)


def test_quarantine_accepts_a_missing_segment_once_and_reports_the_lost_positions(tmp_path: Path) -> None:
    store, options = _store_of_small_segments(tmp_path)
    segments = faults.segment_paths(store)
    lost_from = int(segments[1].name[:20])
    lost_to = int(segments[2].name[:20]) - 1
    segments[1].unlink()
    with EventLog.open(store, replace(options, quarantine=True)) as log:
        report = log.verify()
        assert report.problems == []
        assert any(f"positions {lost_from}..{lost_to}" in line for line in report.quarantined), report
        positions = [e.position for e in log.read_from(1)]
        assert not any(lost_from <= p <= lost_to for p in positions)
        assert positions == sorted(positions)
    # Recorded: the store now opens without --quarantine, and still says what was lost.
    with EventLog.open(store, options) as log:
        assert any(f"positions {lost_from}..{lost_to}" in line for line in log.verify().quarantined)
        assert log.append([faults.make_event(999)])[0].position == log.last_position
