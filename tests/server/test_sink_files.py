"""The files target alone against a real directory: files rotate by events and by time, are
named by the positions they hold, read back equal to the events handed on (pyarrow for
Parquet), and are complete or absent: a failed or crashed write lists no file, a redelivery
rewrites the same file and never puts an event in two."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from leadtrail.server.sinks import FileFormat, FilesSpec, TargetError
from leadtrail.server.sinks.files import FilesTarget
from leadtrail.storage import Event, Outcome
from leadtrail.storage.fs import Files

T0 = 1_764_000_000_000


def event(position: int) -> Event:
    return Event(
        type="buyer.delivered",
        lead_id=f"lead-{position % 3}",
        flow_id="flow-f",
        id=f"ev-{position:04d}",
        timestamp_ms=T0 + position * 1000 + 7,
        entity_id="buyer-1",
        outcome=Outcome.SUCCESS,
        reason="",
        duration_ms=position,
        integration="hubspot",
        response_code=200,
        price=["25.00", "-3.5", ""][position % 3],
        details={"attempt": position},
        lead={"email": f"p{position}@example.com", "zip": 90000 + position},
        account_id="acme",
        position=position,
        recorded_at_ms=T0 + position * 1000 + 9,
    )


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def listed(directory: Path) -> list[str]:
    """What a loader sees: the complete files."""
    return sorted(p.name for p in directory.glob("events-*"))


def every_name(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def target(
    directory: Path, fmt: FileFormat = FileFormat.JSONL, *, rotate_events: int = 3, **options: Any
) -> FilesTarget:
    fields: tuple[str, ...] = options.pop("fields", ())
    spec = FilesSpec(
        directory="out", format=fmt, rotate_events=rotate_events, rotate_seconds=60, fields=fields
    )
    return FilesTarget(spec, str(directory), **options)


def run(*steps: Any) -> None:
    async def main() -> None:
        for step in steps:
            await step()

    asyncio.run(main())


def deliver(t: FilesTarget, positions: Sequence[int]) -> Any:
    return lambda: t.deliver([event(p) for p in positions])


def jsonl_positions(path: Path) -> list[int]:
    return [json.loads(line)["position"] for line in path.read_text().splitlines()]


def test_files_rotate_by_events_and_by_time_named_by_their_positions(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    clock = Clock()
    t = target(directory, clock_ms=clock, slice_events=2)
    run(t.open, deliver(t, [1, 2]), deliver(t, [3, 4, 5, 6, 7]))
    assert listed(directory) == [
        "events-00000000000000000001-00000000000000000003.jsonl",
        "events-00000000000000000004-00000000000000000006.jsonl",
    ]
    assert t.pending_from() == 7
    clock.ms += 59_999
    run(lambda: t.flush(clock.ms))
    assert t.pending_from() == 7 and len(listed(directory)) == 2  # not yet a minute old
    clock.ms += 1
    run(lambda: t.flush(clock.ms), t.close)
    assert t.pending_from() is None
    names = listed(directory)
    assert names[-1] == "events-00000000000000000007-00000000000000000007.jsonl"
    assert [jsonl_positions(directory / name) for name in names] == [[1, 2, 3], [4, 5, 6], [7]]
    assert every_name(directory) == names  # no temporary file left


def test_jsonl_lines_are_export_lines(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    t = target(directory)
    run(t.open, deliver(t, [1, 2, 3]))
    (name,) = listed(directory)
    first = json.loads((directory / name).read_text().splitlines()[0])
    assert first == {
        "id": "ev-0001",
        "position": 1,
        "type": "buyer.delivered",
        "timestamp": "2025-11-24T16:00:01.007Z",
        "recorded_at": "2025-11-24T16:00:01.009Z",
        "account_id": "acme",
        "lead_id": "lead-1",
        "flow_id": "flow-f",
        "entity_id": "buyer-1",
        "outcome": "SUCCESS",
        "reason": "",
        "duration_ms": 1,
        "integration": "hubspot",
        "response_code": 200,
        "price": "-3.5",
        "details": {"attempt": 1},
        "lead": {"email": "p1@example.com", "zip": 90001},
    }


def test_csv_files_have_a_header_and_the_chosen_columns(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    t = target(directory, FileFormat.CSV, fields=("id", "position", "price", "lead.email"), slice_events=2)
    run(t.open, deliver(t, [1, 2, 3, 4, 5, 6]))
    rows = [list(csv.reader(io.StringIO((directory / name).read_text()))) for name in listed(directory)]
    assert [r[0] for r in rows] == [["id", "position", "price", "lead.email"]] * 2
    assert rows[1][1:] == [
        ["ev-0004", "4", "-3.5", "p4@example.com"],
        ["ev-0005", "5", "", "p5@example.com"],
        ["ev-0006", "6", "25.00", "p6@example.com"],
    ]


def test_parquet_files_read_back_equal_to_the_events(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    columns = ("lead.email", "lead.zip")
    t = target(directory, FileFormat.PARQUET, rotate_events=4, fields=columns, slice_events=2)
    run(t.open, deliver(t, [1, 2, 3]), deliver(t, [4, 5, 6, 7, 8]))
    names = listed(directory)
    # Held compact as they came: slices of two (a row group each), the rest at completion.
    assert [pq.read_metadata(directory / n).num_row_groups for n in names] == [2, 2]
    assert [n.rsplit("-", 1)[1] for n in names] == [
        "00000000000000000004.parquet",
        "00000000000000000008.parquet",
    ]
    rows = pq.read_table(directory).to_pylist()  # the directory as a dataset, as a warehouse reads it
    assert len(rows) == 8
    for row, position in zip(rows, range(1, 9), strict=True):
        e = event(position)
        assert row == {
            "id": e.id,
            "position": position,
            "type": e.type,
            "timestamp": datetime.fromtimestamp((T0 + position * 1000 + 7) / 1000, UTC),
            "recorded_at": datetime.fromtimestamp((T0 + position * 1000 + 9) / 1000, UTC),
            "account_id": "acme",
            "lead_id": e.lead_id,
            "flow_id": "flow-f",
            "entity_id": "buyer-1",
            "outcome": "SUCCESS",
            "reason": "",
            "duration_ms": position,
            "integration": "hubspot",
            "response_code": 200,
            "price": Decimal(e.price) if e.price else None,
            "price_text": e.price,
            "details": json.dumps({"attempt": position}, separators=(",", ":")),
            "lead": json.dumps(dict(e.lead), separators=(",", ":")),
            "lead.email": f"p{position}@example.com",
            "lead.zip": str(90000 + position),
        }


def test_a_restarted_target_skips_what_its_files_hold(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    first = target(directory)
    run(first.open, deliver(first, [1, 2, 3, 4, 5]), first.close)  # 4 and 5 were pending: lost
    again = target(directory)
    # The sink hands over again from its saved position (before 4), or from further back.
    run(again.open, deliver(again, [2, 3, 4, 5]), deliver(again, [6, 7]))
    names = listed(directory)
    assert [jsonl_positions(directory / name) for name in names] == [[1, 2, 3], [4, 5, 6]]
    assert again.pending_from() == 7


class FailingFiles(Files):
    """The real file system, failing chosen operations a number of times."""

    def __init__(self, **failures: int) -> None:
        self.failures = failures

    def _maybe_fail(self, operation: str) -> None:
        if self.failures.get(operation, 0) > 0:
            self.failures[operation] -= 1
            raise OSError(28, "No space left on device")

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self._maybe_fail("fsync_dir")
        super().fsync_dir(path)


def test_a_failed_write_lists_no_file_and_the_retry_writes_it(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    files = FailingFiles(fsync=1)
    t = target(directory, files=files, slice_events=2)
    run(t.open)
    with pytest.raises(TargetError, match=r"'out': cannot write a file \(No space left on device\)"):
        run(deliver(t, [1, 2, 3]))
    assert every_name(directory) == []
    assert t.pending_from() == 1  # still held for the retry, none acknowledged
    run(deliver(t, [1, 2, 3]))  # the sink's retry: the same events
    assert [jsonl_positions(directory / n) for n in every_name(directory)] == [[1, 2, 3]]


def test_a_redelivery_after_a_failure_past_the_rename_rewrites_the_same_file(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    t = target(directory, files=FailingFiles(fsync_dir=1))
    run(t.open, deliver(t, [1]))
    with pytest.raises(TargetError):
        run(deliver(t, [2, 3]))  # renamed, but not known durable: not acknowledged
    run(deliver(t, [2, 3]), deliver(t, [4, 5, 6]))
    names = every_name(directory)
    assert names == [
        "events-00000000000000000001-00000000000000000003.jsonl",
        "events-00000000000000000004-00000000000000000006.jsonl",
    ]
    assert [jsonl_positions(directory / n) for n in names] == [[1, 2, 3], [4, 5, 6]]


class Crash(BaseException):
    """The process dies at this operation: nothing after it runs."""


class CrashingFiles(Files):
    def rename(self, src: str, dst: str) -> None:
        raise Crash


def test_a_crash_mid_write_leaves_no_listed_file_and_the_next_open_clears_it(tmp_path: Path) -> None:
    directory = tmp_path / "out"
    t = target(directory, FileFormat.PARQUET, files=CrashingFiles())
    with pytest.raises(Crash):
        run(t.open, deliver(t, [1, 2, 3]))
    assert listed(directory) == [] and len(every_name(directory)) == 1  # the temporary file only
    restarted = target(directory, FileFormat.PARQUET)
    run(restarted.open)
    assert every_name(directory) == []
    run(deliver(restarted, [1, 2, 3]))
    (name,) = every_name(directory)
    assert pq.read_table(directory / name).column("position").to_pylist() == [1, 2, 3]


def test_a_directory_that_cannot_be_made_is_a_target_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file, not a directory")
    t = target(tmp_path / "out")
    with pytest.raises(TargetError, match="'out': cannot prepare the directory"):
        run(t.open)
