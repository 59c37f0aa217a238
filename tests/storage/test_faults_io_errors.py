"""A failed write or fsync makes the store read-only (DESIGN.md, "The log" 4, 6).

``OSError`` (ENOSPC, EIO) is injected through ``Options.files`` at every
write-path operation that a few appends perform, segment roll included:
the append in flight fails with ``NotWritableError``, so does every later
one, nothing unacknowledged is reported as stored, reads keep working, and
after a restart with real files every acknowledged event is there.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, NotWritableError, Options, StorageError


@dataclasses.dataclass(frozen=True)
class Scenario:
    options: Options
    prefill: tuple[int, ...]
    """Request sizes appended before the faulty run."""
    requests: tuple[int, ...]
    """Request sizes appended while faults are armed."""


SCENARIOS = {
    "plain_appends": Scenario(Options(), (3, 3), (3, 1, 5)),
    "segment_roll": Scenario(Options(segment_bytes=4096), (4, 4, 3), (4, 4, 4)),
}
MODES = {
    "enospc": {"error": errno.ENOSPC, "sticky": False},
    "eio": {"error": errno.EIO, "sticky": False},
    "eio_sticky": {"error": errno.EIO, "sticky": True},
}


def numbered_requests(sizes: Sequence[int], first: int) -> list[list[Event]]:
    requests, n = [], first
    for size in sizes:
        requests.append([faults.make_event(i) for i in range(n, n + size)])
        n += size
    return requests


def build_prestate(path: Path, scenario: Scenario) -> list[Event]:
    stored: dict[str, Event] = {}
    n = 1
    with EventLog.open(path, scenario.options) as log:
        for size in scenario.prefill:
            stored |= faults.append_numbers(log, range(n, n + size))
            n += size
    return list(stored.values())


def count_operations(prestate: Path, store: Path, scenario: Scenario, first: int) -> list[str]:
    faults.copy_store(prestate, store)
    files = faults.InjectedFiles()
    with EventLog.open(store, dataclasses.replace(scenario.options, files=files)) as log:
        files.armed = True
        for request in numbered_requests(scenario.requests, first):
            log.append(request)
        files.armed = False
    return files.ops


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scenario_name", sorted(SCENARIOS))
def test_injected_io_error_at_every_append_operation_makes_store_read_only(
    tmp_path: Path, scenario_name: str, mode: str
) -> None:
    scenario = SCENARIOS[scenario_name]
    prestate = tmp_path / "prestate"
    before = build_prestate(prestate, scenario)
    first = len(before) + 1
    ops = count_operations(prestate, tmp_path / "probe", scenario, first)
    segments_before = len(faults.segment_paths(prestate))
    if scenario_name == "segment_roll":
        assert len(faults.segment_paths(tmp_path / "probe")) > segments_before, "no roll"
        assert any(op.startswith("open_for_append") for op in ops), ops
    assert any(op.startswith("fsync") for op in ops), f"appends never fsync: {ops}"

    for fail_at in range(1, len(ops) + 1):
        check_one_fault(
            prestate,
            tmp_path / f"fault-{fail_at}",
            scenario,
            before,
            faults.InjectedFiles(fail_at, **MODES[mode]),
            ops,
        )


def check_one_fault(
    prestate: Path,
    store: Path,
    scenario: Scenario,
    before: list[Event],
    files: Any,
    probe_ops: list[str],
) -> None:
    where = f"fault at operation {files.fail_at} ({probe_ops[files.fail_at - 1]})"
    faults.copy_store(prestate, store)
    first = len(before) + 1
    acked: dict[str, Event] = {}
    failed: list[list[Event]] = []
    error: NotWritableError | None = None
    log = EventLog.open(store, dataclasses.replace(scenario.options, files=files))
    try:
        files.armed = True
        for request in numbered_requests(scenario.requests, first):
            fired_before = len(files.fired)
            try:
                results = log.append(request)
            except NotWritableError as e:
                error = error or e
                failed.append(request)
                continue
            swallowed = [f for f in files.fired[fired_before:] if " close " not in f]
            assert not swallowed, f"{where}: append acknowledged despite {swallowed}"
            assert error is None, f"{where}: append acknowledged after the store failed"
            assert [r.position for r in results] == list(
                range(len(before) + len(acked) + 1, len(before) + len(acked) + len(request) + 1)
            ), f"{where}: positions {results}"
            for event, result in zip(request, results, strict=True):
                acked[event.id] = faults.as_stored(event, result.position, result.recorded_at_ms)
        files.armed = False

        if error is not None:
            assert error.errno == files.error, f"{where}: errno {error.errno}"
            assert error.disk_full == (files.error == errno.ENOSPC), where
            assert log.stats().writable is False, where
            assert log.last_position == len(before) + len(acked), (
                f"{where}: an unacknowledged append is reported as stored"
            )
            for request in failed:
                for event in request:
                    assert log.get(event.id, account_id=event.account_id) is None, (
                        f"{where}: unacknowledged {event.id} is readable"
                    )
            for expected in [*before, *acked.values()]:
                got = log.get(expected.id, account_id=expected.account_id)
                assert faults.event_diff(got, expected) == [], f"{where}: reads stopped working"
            later = [faults.make_event(900)]
            with pytest.raises(NotWritableError):
                log.append(later)
            with pytest.raises(NotWritableError):
                log.submit(later).result(timeout=30)
    finally:
        files.armed = False
        log.close()

    with EventLog.open(store, scenario.options) as log:
        events = faults.check_log(log)
        present = {e.id: e for e in events}
        for expected in [*before, *acked.values()]:
            assert faults.event_diff(present.get(expected.id), expected) == [], where
        for request in failed:
            stored = [present.get(e.id) for e in request]
            assert all(stored) or not any(stored), f"{where}: a failed request is partly stored"
            for got, sent in zip(stored, request, strict=True):
                if got is not None:
                    expected = faults.as_stored(sent, got.position, got.recorded_at_ms)
                    assert faults.event_diff(got, expected) == [], where
        assert set(present) <= {e.id for e in before} | {
            e.id for request in numbered_requests(scenario.requests, first) for e in request
        }
        assert faults.query_mismatches(log, events, scans=2) == [], where
        [fresh] = log.append([faults.make_event(1000)])
        assert fresh.position == len(events) + 1, where
    with EventLog.open(store, scenario.options) as log:
        assert faults.check_log(log)[-1].id == faults.event_id(1000), where


@pytest.mark.parametrize("fail_at", [1, 2, 5, 9, 14])
def test_concurrent_appenders_get_no_acknowledgement_after_an_injected_error(
    tmp_path: Path, fail_at: int
) -> None:
    store = tmp_path / "store"
    files = faults.InjectedFiles(fail_at, error=errno.EIO)
    options = Options(segment_bytes=8192, files=files)
    outcomes: dict[int, list[tuple[list[Event], object]]] = {t: [] for t in range(4)}
    start = threading.Barrier(4)

    def appender(thread_no: int) -> None:
        start.wait()
        for i in range(12):
            base = thread_no * 10_000 + i * 10 + 1
            request = [faults.make_event(n) for n in range(base, base + 1 + (base % 5))]
            try:
                outcomes[thread_no].append((request, log.append(request)))
            except NotWritableError as e:
                outcomes[thread_no].append((request, e))

    with EventLog.open(store, options) as log:
        files.armed = True
        threads = [threading.Thread(target=appender, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        files.armed = False
        assert files.fired, "the fault was never reached"
        acked: dict[str, Event] = {}
        for thread_no, results in outcomes.items():
            kinds = [isinstance(r, NotWritableError) for _, r in results]
            assert kinds == sorted(kinds), f"thread {thread_no} was acknowledged after a failure"
            for request, result in results:
                if isinstance(result, NotWritableError):
                    assert result.errno == errno.EIO
                    continue
                assert isinstance(result, list)
                for event, r in zip(request, result, strict=True):
                    acked[event.id] = faults.as_stored(event, r.position, r.recorded_at_ms)
        assert any(isinstance(r, NotWritableError) for rs in outcomes.values() for _, r in rs)
        with pytest.raises(NotWritableError):
            log.append([faults.make_event(99_999)])
        assert log.last_position == len(acked)
    with EventLog.open(store, Options(segment_bytes=8192)) as log:
        present = {e.id: e for e in faults.check_log(log)}
        for expected in acked.values():
            assert faults.event_diff(present.get(expected.id), expected) == []


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC], ids=["eio", "enospc"])
def test_injected_io_error_during_recovery_never_leaves_a_broken_log(tmp_path: Path, error: int) -> None:
    """Truncating a torn tail on open goes through ``Files`` too: it may fail."""
    prestate = tmp_path / "prestate"
    before = build_prestate(prestate, Scenario(Options(), (2, 3), ()))
    [segment] = faults.segment_paths(prestate)
    with open(segment, "ab") as f:
        f.write(b"LT\x01\x81" + bytes(30))  # a torn record
    probe = faults.copy_store(prestate, tmp_path / "probe")
    counting = faults.InjectedFiles()
    counting.armed = True
    with EventLog.open(probe, Options(files=counting)) as log:
        counting.armed = False
    assert any(op.startswith("truncate") for op in counting.ops), counting.ops

    for fail_at in range(1, len(counting.ops) + 1):
        where = f"fault at operation {fail_at} ({counting.ops[fail_at - 1]})"
        store = faults.copy_store(prestate, tmp_path / f"fault-{fail_at}")
        files = faults.InjectedFiles(fail_at, error=error)
        files.armed = True
        acked: list[Event] = []
        try:
            log = EventLog.open(store, Options(files=files))
        except StorageError:
            pass  # refusing to open is fine; leaking an OSError or a broken log is not
        else:
            try:
                files.armed = False
                event = faults.make_event(6)
                try:
                    [result] = log.append([event])
                    acked.append(faults.as_stored(event, result.position, result.recorded_at_ms))
                except NotWritableError:
                    pass
            finally:
                log.close()
        with EventLog.open(store) as log:
            events = faults.check_log(log)
            assert events == [*before, *acked], where
            [fresh] = log.append([faults.make_event(7)])
            assert fresh.position == len(events) + 1, where
