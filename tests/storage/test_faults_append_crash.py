"""A crash at any write-path operation of an append loses nothing acknowledged
(DESIGN.md, "The log" 4, 5, 7; FORMAT.md, "Segment" and "Recovery rules").

A child process appends requests on 4 KiB segments, so that they roll (seal,
create, header, directory fsync), with a ``Files`` that ends the process at
its N-th operation (a failing write first writes half its bytes), for every
N. The store must reopen clean with every acknowledged event and each
request whole or absent, and go on accepting appends.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, Options

SEGMENT_BYTES = 4096
OPTIONS = Options(segment_bytes=SEGMENT_BYTES)
PREFILL = [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11]]
REQUESTS = [[20, 21, 22, 23], [24], [25, 26, 27, 28, 29], [30, 31, 32, 33], [34, 35]]


def run_appends(store: Path, crash_at: int | None) -> tuple[int, list[str], str]:
    child = subprocess.run(
        faults.child_command(
            "appends",
            str(store),
            f"--segment-bytes={SEGMENT_BYTES}",
            f"--requests={json.dumps(REQUESTS)}",
            *([f"--crash-at={crash_at}"] if crash_at is not None else []),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return child.returncode, child.stdout.splitlines(), child.stderr


@pytest.mark.slow
def test_crash_at_every_operation_of_appends_that_roll_segments_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    prestate = tmp_path / "prestate"
    before: list[Event] = []
    with EventLog.open(prestate, OPTIONS) as log:
        for numbers in PREFILL:
            before += faults.append_numbers(log, numbers).values()
    probe = faults.copy_store(prestate, tmp_path / "probe")
    status, lines, stderr = run_appends(probe, None)
    assert status == 0, stderr
    ops = json.loads(lines[-1].removeprefix("OPS "))
    assert len(faults.segment_paths(probe)) > len(faults.segment_paths(prestate)) + 1, "few rolls"

    for crash_at in range(1, len(ops) + 1):
        where = f"crash at operation {crash_at} ({ops[crash_at - 1]})"
        store = faults.copy_store(prestate, tmp_path / f"crash-{crash_at}")
        status, lines, stderr = run_appends(store, crash_at)
        assert status == faults.CRASH_EXIT, f"{where}: exit {status}\n{stderr}"
        acked = {}
        for line in lines:
            for eid, position, recorded_at in json.loads(line.removeprefix("ACK ")):
                expected = faults.make_event(faults.event_number(eid))
                acked[eid] = faults.as_stored(expected, position, recorded_at)
        with EventLog.open(store, OPTIONS) as log:
            events = faults.check_log(log)
            present = {e.id: e for e in events}
            for expected in [*before, *acked.values()]:
                assert faults.event_diff(present.get(expected.id), expected) == [], where
            for numbers in REQUESTS:
                stored = [present.get(faults.event_id(n)) for n in numbers]
                assert all(stored) or not any(stored), f"{where}: request {numbers} partly stored"
                for n, got in zip(numbers, stored, strict=True):
                    if got is not None:
                        expected = faults.as_stored(faults.make_event(n), got.position, got.recorded_at_ms)
                        assert faults.event_diff(got, expected) == [], where
            assert faults.query_mismatches(log, events, scans=2) == [], where
            [fresh] = log.append([faults.make_event(100)])
            assert fresh.position == len(events) + 1, where
        assert faults.stray_files(store) == [], where
        with EventLog.open(store, OPTIONS) as log:
            assert faults.check_log(log)[-1].id == faults.event_id(100), where
