"""The LMDB index file is sized to what it holds.

LMDB reuses freed pages but never shrinks its file: after retention removed
almost every event, ``stats`` reported hundreds of kilobytes an event, and a
rebuild of an untouched store grew the file. Retention and reindex now end with
a compacting copy swapped in place of the index (index_compaction.py); a crash
at any step of it leaves an index that is whole or rebuilt on the next open.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, Options, Outcome, RetentionPolicy, new_event_id
from leadtrail_storage_support import Clock  # loaded by conftest.py

DAY_MS = 86_400_000
T0 = 1_767_225_600_000
SEGMENT_BYTES = 64 * 1024


def index_file(data: Path) -> int:
    return (data / "index" / "data.mdb").stat().st_size


def index_dir_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "index").iterdir())


def make(n: int, account: str) -> Event:
    return Event(
        type=("source.submitted", "recipient.delivered", "filter.rejected")[n % 3],
        lead_id=f"lead-{n // 4}",
        flow_id=f"flow-{n % 7}",
        id=new_event_id(),
        timestamp_ms=T0 + n,
        entity_id=f"buyer-{n % 11}",
        outcome=Outcome(n % 5),
        lead={"step": n},
        account_id=account,
    )


def fill(log: EventLog, count: int, account: str, start: int = 0) -> None:
    for first in range(start, start + count, 1000):
        log.append([make(n, account) for n in range(first, min(first + 1000, start + count))])


def test_retention_leaves_an_index_the_size_of_a_fresh_one(tmp_path: Path) -> None:
    clock = Clock(T0)
    options = Options(segment_bytes=SEGMENT_BYTES, clock_ms=clock)
    data = tmp_path / "data"
    with EventLog.open(data, options) as log:
        fill(log, 30_000, "old")
        clock.now += 2 * DAY_MS
        fill(log, 200, "kept", start=30_000)
        grown = index_file(data)
        log.set_retention_policy(RetentionPolicy("old", max_age_days=1))
        report = log.apply_retention()
        assert report.events_removed == 30_000
        after = index_file(data)
        stats = log.stats()
        assert stats.event_count == 200
        assert stats.index_bytes == index_dir_bytes(data)  # the real files, not a remembered size
        survivors = list(log.read_from(1))
    # A store holding only the survivors, as a new user would compare.
    fresh = tmp_path / "fresh"
    with EventLog.open(fresh, Options(segment_bytes=SEGMENT_BYTES, clock_ms=clock)) as other:
        for first in range(0, len(survivors), 100):
            batch = [e.copy() for e in survivors[first : first + 100]]
            for e in batch:
                e.position = e.recorded_at_ms = 0
            other.append(batch)
    assert after < grown / 10, (grown, after)
    assert after <= 2 * index_file(fresh) + 64 * 1024, (after, index_file(fresh))
    with EventLog.open(data, options) as log:
        assert log.verify().problems == []
        assert [e.id for e in log.read_from(1)] == [e.id for e in survivors]
        assert log.stats().account_events == {"kept": 200}


def test_reindex_does_not_grow_the_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data, Options(segment_bytes=SEGMENT_BYTES)) as log:
        fill(log, 5_000, "default")
        before = index_file(data)
        timeline = log.timeline("lead-7")
        assert log.reindex() == 5_000
        first = index_file(data)
        assert log.reindex() == 5_000
        second = index_file(data)
        assert first <= before and second <= first, (before, first, second)
        assert log.timeline("lead-7") == timeline
        assert log.stats().index_bytes == index_dir_bytes(data)
        fill(log, 100, "default", start=5_000)  # the writer indexes into the new file
        assert log.stats().event_count == 5_100
        assert log.verify().problems == []
    with EventLog.open(data) as log:
        assert log.stats().event_count == 5_100
        assert log.verify().problems == []


def test_reads_continue_while_the_index_is_compacted(tmp_path: Path) -> None:
    import threading

    data = tmp_path / "data"
    with EventLog.open(data, Options(segment_bytes=SEGMENT_BYTES)) as log:
        fill(log, 3_000, "default")
        expected = log.timeline("lead-3")
        failures: list[BaseException] = []
        stop = threading.Event()

        def read() -> None:
            try:
                while not stop.is_set():
                    assert log.timeline("lead-3") == expected
                    assert log.stats().event_count == 3_000
            except BaseException as e:  # reported below
                failures.append(e)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        try:
            for _ in range(3):
                log.reindex()
        finally:
            stop.set()
            for thread in readers:
                thread.join(timeout=60)
        assert not failures, failures
        assert not any(thread.is_alive() for thread in readers)


@pytest.mark.slow
def test_a_crash_at_every_step_of_a_compaction_leaves_a_usable_index(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with EventLog.open(source, Options(segment_bytes=4096)) as log:
        stored = faults.append_numbers(log, range(300))
    expected = sorted(stored.values(), key=lambda e: e.position)

    def run(store: Path, crash_at: int | None) -> subprocess.CompletedProcess[str]:
        args = ["reindex", str(store), "--segment-bytes=4096"]
        if crash_at is not None:
            args.append(f"--crash-at={crash_at}")
        return subprocess.run(faults.child_command(*args), capture_output=True, text=True, timeout=120)

    probe = run(faults.copy_store(source, tmp_path / "probe"), None)
    assert probe.returncode == 0, probe.stderr
    ops = json.loads(probe.stdout)["ops"]
    assert any(op.startswith("rename index") for op in ops), ops
    for crash_at in range(1, len(ops) + 1):
        where = f"crash at operation {crash_at} ({ops[crash_at - 1]})"
        store = faults.copy_store(source, tmp_path / f"crash-{crash_at}")
        crashed = run(store, crash_at)
        assert crashed.returncode == faults.CRASH_EXIT, f"{where}: {crashed.stderr}"
        with EventLog.open(store, Options(segment_bytes=4096)) as log:
            assert faults.check_log(log) == expected, where
            assert faults.query_mismatches(log, expected) == [], where
        assert faults.stray_files(store) == [], where
