"""A power cut during the last write keeps its sectors in any combination (FORMAT.md,
"Recovery rules" 1).

One group is one write and one fsync. Its sectors reach the disk in no promised order,
and one that did not reads as zeros (the file was extended over it), so the last
request's COMMIT record can survive a lost sector before it. Nothing in that write was
acknowledged: it is cut back to the COMMIT record before it, like a torn tail. A valid
later group, a seal, a second COMMIT record or damage that is not a lost sector (a
flipped bit, zeros that fill no sector) says the damaged bytes were fsynced before:
refused as corruption, naming the offset, the file left as it was.

The store below: request [1, 2, 3] acknowledged, then the request [4, 5, 6, 7] whose
write is torn; its records at offsets 1658 (4), 2209 (5), 2782 (6), 3301 (7, COMMIT).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import leadtrail_storage_powerloss as powerloss  # loaded by conftest.py
import pytest
from leadtrail.storage import CorruptionError, Event, EventLog, Options

SECTOR = 512


def build(
    path: Path, *later: list[int], clock: Callable[[], int] | None = None
) -> tuple[list[Event], Path, list[faults.RecordSpan]]:
    """The acknowledged events 1..3, the last write's records (4..7), and any later requests."""
    with EventLog.open(path, Options(clock_ms=clock) if clock else None) as log:
        acknowledged = list(faults.append_numbers(log, [1, 2, 3]).values())
        faults.append_numbers(log, [4, 5, 6, 7])
        for numbers in later:
            faults.append_numbers(log, numbers)
    [segment] = faults.segment_paths(path)
    spans = [s for s in faults.event_spans(segment) if 4 <= s.position <= 7]
    assert spans[-1].commit and not any(s.commit for s in spans[:-1])
    return acknowledged, segment, spans


def overwrite(segment: Path, offset: int, data: bytes) -> None:
    with open(segment, "r+b") as f:
        f.seek(offset)
        f.write(data)


def first_whole_sector(start: int) -> int:
    return -(-start // SECTOR) * SECTOR


def lose(segment: Path, spans: list[faults.RecordSpan], how: str) -> None:
    """A sector of the write at ``spans`` that never reached the disk."""
    start = spans[0].offset
    if how == "whole sector":
        # Inside records 4 and 5: records 6 and 7 (COMMIT) survive.
        sector = first_whole_sector(start)
        assert sector + SECTOR <= spans[2].offset
        overwrite(segment, sector, bytes(SECTOR))
    elif how == "first sector":
        # The sector the write began in: its durable beginning (request [1, 2, 3]'s end)
        # stayed, the rest of it is zeros.
        overwrite(segment, start, bytes(first_whole_sector(start) - start))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["whole sector", "first sector"])
def test_a_lost_sector_before_the_surviving_commit_record_of_the_last_write_is_a_torn_write(
    tmp_path: Path, how: str
) -> None:
    store = tmp_path / "store"
    acknowledged, segment, spans = build(store)
    lose(segment, spans, how)
    kept = segment.read_bytes()[: spans[0].offset]

    with EventLog.open(store) as log:
        assert segment.read_bytes() == kept, "the torn write was not cut back to the last COMMIT record"
        assert faults.check_log(log) == acknowledged
        assert log.verify().problems == []
        assert log.verify_chain().problems == []
        [fresh] = log.append([faults.make_event(8)])
        assert fresh.position == 4
        appended = faults.as_stored(faults.make_event(8), 4, fresh.recorded_at_ms)
        assert faults.check_log(log) == [*acknowledged, appended]
    with EventLog.open(store) as log:
        assert faults.check_log(log) == [*acknowledged, appended]
        assert log.verify().problems == []
        assert log.verify_chain().problems == []


def refused(store: Path, segment: Path, offset: int) -> None:
    """The open refuses, naming the segment and the damaged offset, and changes nothing."""
    damaged = segment.read_bytes()
    with pytest.raises(CorruptionError) as raised:
        EventLog.open(store)
    problems = raised.value.problems
    assert any(f"segment {segment.name}: damaged bytes at offset {offset}.." in p for p in problems), problems
    assert segment.read_bytes() == damaged, "damage before an acknowledged group was truncated away"


@pytest.mark.parametrize("later", ["a whole group", "a torn group"])
def test_a_lost_sector_followed_by_a_later_group_is_corruption(tmp_path: Path, later: str) -> None:
    # The group [4..7] was fsynced before [8, 9] was written: its zeros are damage to
    # acknowledged events, never a torn write.
    store = tmp_path / "store"
    acknowledged, segment, spans = build(store, [8, 9])
    last = faults.event_spans(segment)[-1]
    lose(segment, spans, "whole sector")
    if later == "a torn group":
        # None of the later group's sectors reached the disk but the file grew over them:
        # the first group's COMMIT record is the only one after the damage, but it does not
        # end the file.
        overwrite(segment, spans[-1].end, bytes(last.end - spans[-1].end))
    refused(store, segment, spans[0].offset)
    with EventLog.open(store, Options(quarantine=True)) as log:
        events = faults.check_log(log, gapless=False)
        assert events[:3] == acknowledged
        positions = [e.position for e in events]
        assert 6 in positions and 7 in positions and 4 not in positions


def test_a_flipped_bit_before_the_surviving_commit_record_is_corruption(tmp_path: Path) -> None:
    # No sector of zeros: not what a lost sector leaves.
    store = tmp_path / "store"
    _, segment, spans = build(store)
    faults.flip_bit(segment, (spans[1].offset + 40) * 8)
    refused(store, segment, spans[1].offset)


def test_zeros_that_fill_no_whole_sector_are_corruption(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, segment, spans = build(store)
    middle = spans[1].offset + 100
    assert middle // SECTOR == (middle + 200) // SECTOR
    overwrite(segment, middle, bytes(200))
    refused(store, segment, spans[1].offset)


def test_a_lost_sector_before_a_valid_seal_is_corruption(tmp_path: Path) -> None:
    # A seal is written only once the records before it are durable (a crash came between
    # sealing and making the next segment): whatever it follows was acknowledged.
    store = tmp_path / "store"
    _, segment, spans = build(store)
    seal = faults.seal_record(segment)
    with open(segment, "ab") as f:
        f.write(seal)
    overwrite(segment, spans[0].offset, bytes(spans[-1].end - spans[0].offset))
    refused(store, segment, spans[0].offset)


def test_zeros_and_a_record_after_a_seal_are_corruption(tmp_path: Path) -> None:
    # Nothing is ever written after a seal: no write of the writer's was torn there.
    store = tmp_path / "store"
    _, segment, spans = build(store)
    seal = faults.seal_record(segment)
    stray = faults.record(faults.KIND_EVENT | faults.FLAG_COMMIT, 8, b"x" * 100)
    with open(segment, "ab") as f:
        f.write(seal + bytes(2 * SECTOR) + stray)
    refused(store, segment, spans[-1].end + len(seal))


def test_the_power_loss_layer_loses_the_first_sector_of_a_last_write_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    # tests/storage/powerloss.py: the state test_power_loss.py checks at every cut point
    # where a file's last unsynced write spans two sectors.
    root = tmp_path / "root"
    root.mkdir()
    (root / "segment").write_bytes(b"")
    files = powerloss.PowerFiles(root)
    fd = files.open_for_append(str(root / "segment"))
    files.write(fd, b"d" * 100)
    files.fsync(fd)
    files.write(fd, b"n" * 1200)
    files.cut(1)
    with pytest.raises(powerloss.PowerCut):
        files.fsync(fd)
    files.drain()
    files.close(fd)
    states = {d.split(" ")[2]: (path / "segment").read_bytes() for d, path in files.states(19, 1)}
    assert states["(drop):"] == b"d" * 100
    assert states["(sectors):"] == b"d" * 100 + bytes(412) + b"n" * (1300 - SECTOR)


def test_a_lost_sector_in_a_write_of_several_requests_is_a_torn_write(tmp_path: Path) -> None:
    # Group commit writes the requests of several callers with one write: each request ends
    # in its COMMIT record, the write in its last record, which alone carries WRITE_END
    # (1.5). Requests [4, 5] and [6, 7] as one write: record 5 ends a request, not the write.
    store = tmp_path / "store"
    # One write is committed at one time: all of its events have one recorded_at.
    acknowledged, segment, _ = build(store, [8, 9], clock=lambda: faults.BASE_MS)
    spans = [s for s in faults.event_spans(segment) if s.position >= 4]
    data = segment.read_bytes()
    for span in spans[:-1]:  # one write: only its very last record ends it
        head = data[span.offset : span.offset + 20]
        payload = data[span.offset + 20 : span.end]
        flags = head[3] & ~faults.FLAG_WRITE_END
        overwrite(segment, span.offset, faults.record(flags, span.position, payload))
    assert [s.commit for s in spans] == [False, False, False, True, False, True]
    lose(segment, spans, "whole sector")
    with EventLog.open(store) as log:
        assert segment.read_bytes() == data[: spans[0].offset]
        assert faults.check_log(log) == acknowledged
        assert log.verify().problems == [] and log.verify_chain().problems == []


def test_every_write_of_the_writer_ends_in_a_marked_record(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _, segment, _ = build(store, [8, 9])
    data = segment.read_bytes()
    ends = [s.position for s in faults.event_spans(segment) if data[s.offset + 3] & faults.FLAG_WRITE_END]
    assert ends == [3, 7, 9]


def test_a_lost_sector_that_took_a_write_end_with_it_is_corruption_when_the_times_differ(
    tmp_path: Path,
) -> None:
    # Zeros over the end of the acknowledged write [4..7] (its WRITE_END record among them),
    # then the whole later write [8, 9]: one write's end after the damage, as in a torn
    # write of several requests. But 4 and 5 were committed at another time than 8 and 9:
    # two writes, so the damaged one was durable. Refused: 4..9 were acknowledged.
    ticks = iter(range(faults.BASE_MS, faults.BASE_MS + 1_000_000, 1000))
    store = tmp_path / "store"
    _, segment, spans = build(store, [8, 9], clock=lambda: next(ticks))
    sector = first_whole_sector(spans[2].offset)
    assert sector + SECTOR <= spans[3].end
    overwrite(segment, sector, bytes(spans[3].end - sector))
    refused(store, segment, spans[2].offset)
