"""A crash at any point of retention leaves the old or the new state (DESIGN.md,
"Retention and compaction").

The store holds whole segments of expired events (deleted by retention),
segments mixing expired and kept events (rewritten without the expired
ones; some kept snapshots are deltas against expired ones), an account with
no policy and one under legal hold. A child process applies retention with
a ``Files`` that ends the process (``os._exit``) at its N-th operation, for
every N. After each crash the store must open clean, hold every kept event
and, per segment, either all or none of its expired events; no temporary
file may survive recovery; the indexes must equal a rebuilt copy; and
finishing the retention must reach the state an uninterrupted run reaches.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, Options, RetentionPolicy

SEGMENT_BYTES = 4096
OPTIONS = Options(segment_bytes=SEGMENT_BYTES)
OLD_MS = faults.BASE_MS
NEW_MS = faults.BASE_MS + 10 * faults.DAY_MS
NOW_MS = NEW_MS + 3_600_000
MAX_AGE_DAYS = 5
POLICIES = [
    {"account_id": "default", "max_age_days": MAX_AGE_DAYS},
    {"account_id": "hold", "max_age_days": MAX_AGE_DAYS, "legal_hold": True},
]
MAX_CRASH_POINTS = 80


@dataclasses.dataclass(frozen=True)
class RetentionStore:
    path: Path
    stored: list[Event]
    expired: frozenset[str]
    expired_by_segment: dict[str, frozenset[str]]

    @property
    def kept(self) -> list[Event]:
        return [e for e in self.stored if e.id not in self.expired]


@pytest.fixture(scope="module", params=["json", "wire"])
def retention_store(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> RetentionStore:
    # "json": format 1.1 records, whose snapshots are deltas against earlier ones (which
    # retention must keep readable); "wire": format 1.2, whole snapshots and changes.
    form = request.param
    path = tmp_path_factory.mktemp("retention") / "store"
    clock = [OLD_MS]
    stored: dict[str, Event] = {}

    def append_in_requests(numbers: list[int], size: int) -> None:
        for i in range(0, len(numbers), size):
            stored.update(faults.append_numbers(log, numbers[i : i + size]))

    # One lead of account "default" appended across the old/new boundary:
    # its new snapshots are deltas against old (expired) ones.
    chain = [69 * j + 3 for j in range(20, 28)]
    with EventLog.open(
        path, dataclasses.replace(OPTIONS, clock_ms=lambda: clock[0], record_form=form)
    ) as log:
        append_in_requests(list(range(3000, 3012)), 4)  # a mixed segment first, so that
        append_in_requests(faults.numbers_of_account("default", 1, 45), 3)  # these leave a gap
        clock[0] += 3_600_000
        append_in_requests(list(range(1000, 1036)), 4)  # all three accounts mixed
        append_in_requests(chain[:4], 2)
        clock[0] = NEW_MS
        append_in_requests(chain[4:], 2)
        append_in_requests(list(range(2000, 2061)), 5)
        for policy in POLICIES:
            log.set_retention_policy(RetentionPolicy(**policy))

    events = list(stored.values())
    cutoff = NOW_MS - MAX_AGE_DAYS * faults.DAY_MS
    expired = frozenset(e.id for e in events if e.account_id == "default" and e.recorded_at_ms < cutoff)
    segments = faults.segment_paths(path)
    bases = [faults.segment_base(s) for s in segments]
    by_segment: dict[str, set[str]] = {}
    for e in events:
        if e.id in expired:
            base = max(b for b in bases if b <= e.position)
            by_segment.setdefault(f"{base:020d}.log", set()).add(e.id)

    # The scenario must contain what it claims to test.
    kinds = set()
    for segment in segments[:-1]:
        positions = {s.position for s in faults.event_spans(segment)}
        ids = {e.id for e in events if e.position in positions}
        kinds.add("all expired" if ids <= expired else "mixed" if ids & expired else "kept")
    assert {"all expired", "mixed"} <= kinds, kinds
    by_position = {e.position: e for e in events}
    delta_on_expired = [
        s.position
        for segment in segments
        for s in faults.event_spans(segment)
        if by_position[s.position].id not in expired
        and by_position.get(faults.delta_base(segment, s), by_position[s.position]).id in expired
    ]
    # Both forms: a 1.1 snapshot delta and a 1.3 body compressed against a base alike.
    assert delta_on_expired, "a kept record's base is an expired one"
    return RetentionStore(path, events, expired, {k: frozenset(v) for k, v in by_segment.items()})


def test_retention_removes_exactly_the_expired_events_and_keeps_positions(
    retention_store: RetentionStore, tmp_path: Path
) -> None:
    store = faults.copy_store(retention_store.path, tmp_path / "store")
    with EventLog.open(store, OPTIONS) as log:
        report = log.apply_retention(NOW_MS)
        assert report.events_removed == len(retention_store.expired)
        assert report.segments_deleted >= 1
        assert report.segments_rewritten >= 1
        assert report.bytes_freed > 0
        events = faults.check_log(log, gapless=False)
        assert events == retention_store.kept
        for e in retention_store.stored:
            got = log.get(e.id, account_id=e.account_id)
            assert got == (None if e.id in retention_store.expired else e)
        assert faults.query_mismatches(log, events) == []
        assert log.apply_retention(NOW_MS).events_removed == 0
    with EventLog.open(store, OPTIONS) as log:
        assert faults.check_log(log, gapless=False) == retention_store.kept
    assert faults.stray_files(store) == []


def run_retention_child(store: Path, crash_at: int | None) -> subprocess.CompletedProcess[str]:
    args = ["retention", str(store), f"--now-ms={NOW_MS}", f"--segment-bytes={SEGMENT_BYTES}"]
    args.append(f"--policies={json.dumps(POLICIES)}")
    if crash_at is not None:
        args.append(f"--crash-at={crash_at}")
    return subprocess.run(
        faults.child_command(*args), capture_output=True, text=True, timeout=120, check=False
    )


def crash_points(total: int) -> list[int]:
    if total <= MAX_CRASH_POINTS:
        return list(range(1, total + 1))
    step = total / (MAX_CRASH_POINTS - 20)
    middle = {min(int(10 + i * step), total) for i in range(MAX_CRASH_POINTS - 20)}
    return sorted({*range(1, 11), *middle, *range(total - 9, total + 1)})


def check_after_crash(store: RetentionStore, path: Path, reindexed: Path, where: str) -> None:
    ids = [(e.account_id, e.id) for e in store.stored]
    with EventLog.open(path, OPTIONS) as log:
        events = faults.check_log(log, gapless=False)
        present = {e.id: e for e in events}
        assert set(present) <= {e.id for e in store.stored}, f"{where}: unknown events"
        for e in store.stored:
            if e.id in present:
                assert faults.event_diff(present[e.id], e) == [], where
            else:
                assert e.id in store.expired, f"{where}: kept event {e.id} (position {e.position}) lost"
            got = log.get(e.id, account_id=e.account_id)
            assert got == present.get(e.id), f"{where}: get({e.id}) disagrees with the log"
        for segment, expired in sorted(store.expired_by_segment.items()):
            left = len(expired & present.keys())
            assert left in (0, len(expired)), (
                f"{where}: {segment} is half compacted: {left} of {len(expired)} expired remain"
            )
        seen = faults.query_results(log, ids)
    assert faults.stray_files(path) == [], f"{where}: leftovers after recovery"

    faults.copy_store(path, reindexed)
    with EventLog.open(reindexed, OPTIONS) as log:
        log.reindex()
        rebuilt = faults.query_results(log, ids)
    differences = faults.result_differences(seen, rebuilt)
    assert differences == [], f"{where}: indexes differ from a rebuilt copy: {differences[:5]}"

    with EventLog.open(path, OPTIONS) as log:
        log.apply_retention(NOW_MS)
        assert faults.check_log(log, gapless=False) == store.kept, f"{where}: resumed retention"
    assert faults.stray_files(path) == []


@pytest.mark.slow
def test_crash_at_every_file_operation_of_retention_leaves_old_or_new_state(
    retention_store: RetentionStore, tmp_path: Path
) -> None:
    probe = faults.copy_store(retention_store.path, tmp_path / "probe")
    done = run_retention_child(probe, None)
    assert done.returncode == 0, done.stderr
    ops = json.loads(done.stdout)["ops"]
    assert any(op.startswith("remove") for op in ops), f"no segment deleted: {ops}"
    assert any(op.startswith("rename") for op in ops), f"no segment rewritten: {ops}"

    for crash_at in crash_points(len(ops)):
        where = f"crash at operation {crash_at} ({ops[crash_at - 1]})"
        path = faults.copy_store(retention_store.path, tmp_path / f"crash-{crash_at}")
        child = run_retention_child(path, crash_at)
        assert child.returncode in (faults.CRASH_EXIT, 0), f"{where}: {child.stderr}"
        check_after_crash(retention_store, path, tmp_path / f"reindexed-{crash_at}", where)


def test_positions_are_never_reused_after_retention_removes_the_newest_events(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    clock = [OLD_MS]
    options = dataclasses.replace(OPTIONS, clock_ms=lambda: clock[0])
    with EventLog.open(store, options) as log:
        for start in range(1, 91, 9):
            faults.append_numbers(log, faults.numbers_of_account("default", start, 3))
        last = log.last_position
        log.set_retention_policy(RetentionPolicy("default", max_age_days=MAX_AGE_DAYS))
    clock[0] = NOW_MS
    with EventLog.open(store, options) as log:
        assert log.apply_retention(NOW_MS).events_removed == last
        assert faults.check_log(log, gapless=False) == []
        assert log.last_position == last
    with EventLog.open(store, options) as log:
        assert log.last_position == last, "the position counter went back after a restart"
        [fresh] = log.append([faults.make_event(300)])
        assert (fresh.position, fresh.duplicate) == (last + 1, False)
    with EventLog.open(store, options) as log:
        [event] = faults.check_log(log, gapless=False)
        assert event.position == last + 1
        [again] = log.append([faults.make_event(303)])
        assert again.position == last + 2
