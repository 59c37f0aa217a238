"""The LMDB indexes are derived state (DESIGN.md, "Indexes").

They are rebuilt from the log whenever they are missing, behind, or belong
to another store, and ``reindex()`` produces exactly what the incremental
indexing produced: every lookup, timeline and scan page reads the same.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, Options, RetentionPolicy

SMALL = Options(segment_bytes=8192)


def append_range(data_dir: Path, numbers: range, options: Options = SMALL) -> list[Event]:
    """Append ``numbers`` in requests of random sizes; the stored events."""
    rng = random.Random(numbers.start)
    stored: dict[str, Event] = {}
    with EventLog.open(data_dir, options) as log:
        i = numbers.start
        while i < numbers.stop:
            size = min(rng.randint(1, 20), numbers.stop - i)
            stored |= faults.append_numbers(log, range(i, i + size))
            i += size
    return list(stored.values())


def lookups(*ranges: range) -> list[tuple[str, str]]:
    """(account, id) of every event numbered in ``ranges``, plus ids never stored."""
    pairs = [(faults.make_event(n).account_id, faults.event_id(n)) for r in ranges for n in r]
    return [*pairs, ("default", faults.event_id(999_999)), ("acme", faults.event_id(3))]


def results_of(data_dir: Path, ids: list[tuple[str, str]]) -> dict[str, object]:
    with EventLog.open(data_dir, SMALL) as log:
        return faults.query_results(log, ids)


def test_deleted_index_is_rebuilt_on_open(tmp_path: Path) -> None:
    store = tmp_path / "store"
    stored = append_range(store, range(1, 201))
    ids = lookups(range(1, 201))
    before = results_of(store, ids)
    shutil.rmtree(store / "index")
    with EventLog.open(store, SMALL) as log:
        assert faults.result_differences(faults.query_results(log, ids), before) == []
        events = faults.check_log(log)
        assert events == stored
        assert faults.query_mismatches(log, events) == []
        [fresh] = log.append([faults.make_event(201)])
        assert fresh.position == 201
    assert (store / "index").is_dir()


def test_index_behind_the_log_catches_up_on_open(tmp_path: Path) -> None:
    store = tmp_path / "store"
    append_range(store, range(1, 101))
    shutil.copytree(store / "index", tmp_path / "old-index")
    stored = append_range(store, range(101, 251))
    ids = lookups(range(1, 251))
    current = results_of(store, ids)
    shutil.rmtree(store / "index")
    shutil.copytree(tmp_path / "old-index", store / "index")
    with EventLog.open(store, SMALL) as log:
        assert faults.result_differences(faults.query_results(log, ids), current) == []
        assert [e.id for e in faults.check_log(log)][100:] == [e.id for e in stored]


def test_index_of_another_store_is_rebuilt_on_open(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    append_range(ours, range(1, 121))
    append_range(theirs, range(5000, 5160))
    ids = lookups(range(1, 121), range(5000, 5160))
    expected = results_of(ours, ids)
    shutil.rmtree(ours / "index")
    shutil.copytree(theirs / "index", ours / "index")
    with EventLog.open(ours, SMALL) as log:
        differences = faults.result_differences(faults.query_results(log, ids), expected)
        assert differences == [], f"a foreign index was trusted: {differences[:5]}"
        [fresh] = log.append([faults.make_event(121)])
        assert fresh.position == 121


def test_reindex_matches_the_incremental_index(tmp_path: Path) -> None:
    store = tmp_path / "store"
    clock = [faults.BASE_MS]
    options = Options(segment_bytes=8192, clock_ms=lambda: clock[0])
    append_range(store, range(1, 151), options)
    clock[0] += 10 * faults.DAY_MS
    append_range(store, range(151, 301), options)
    ids = lookups(range(1, 301))
    with EventLog.open(store, options) as log:
        retries = log.append([faults.make_event(1), faults.make_event(2)])
        assert [(r.position, r.duplicate) for r in retries] == [(1, True), (2, True)]
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=5))
        assert log.apply_retention(clock[0]).events_removed > 0
        incremental = faults.query_results(log, ids)
        events = faults.check_log(log, gapless=False)
        assert faults.query_mismatches(log, events) == []
        assert log.reindex() == len(events)
        rebuilt = faults.query_results(log, ids)
        assert faults.result_differences(incremental, rebuilt) == []
    with EventLog.open(store, options) as log:
        assert faults.result_differences(faults.query_results(log, ids), incremental) == []


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_unreadable_index_is_rebuilt_on_open(tmp_path: Path, damage: str) -> None:
    """The index is derived: damage to it must cost a rebuild, never the store.

    Opened in a child process, since a damaged memory map can kill the process.
    """
    store = tmp_path / "store"
    append_range(store, range(1, 121))
    with EventLog.open(store, SMALL) as log:
        expected = faults.results_digest(log, range(1, 121))
    data = store / "index" / "data.mdb"
    size = data.stat().st_size
    if damage == "empty":
        data.write_bytes(b"")
    elif damage == "garbage":
        data.write_bytes(random.Random(1).randbytes(size))
    else:
        os.truncate(data, size // 2)
    child = subprocess.run(
        faults.child_command("digest", str(store), "--numbers=1:121"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, (
        f"opening with a {damage} index: exit status {child.returncode}\n{child.stderr[-1500:]}"
    )
    assert child.stdout.strip() == expected


def test_a_query_in_flight_during_a_reset_does_not_bring_back_old_numbers(tmp_path: Path) -> None:
    # Names (accounts, types, ...) are numbered anew by a rebuild. A reader whose
    # transaction began before the reset still sees the old numbers; had it put
    # them back into the shared cache, the next account would get a number that
    # the cache already gives another account, and two tenants would mix.
    from leadtrail.storage import new_event_id
    from leadtrail.storage.index import KIND_ACCOUNT, Index, Located

    def event(account: str, position: int) -> Event:
        return Event(
            type="lead.submitted", lead_id="l", flow_id="f", id=new_event_id(), timestamp_ms=1,
            account_id=account, position=position, recorded_at_ms=1,
        )  # fmt: skip

    index = Index(str(tmp_path / "index"), 1 << 26)
    try:
        index.reset(b"store")
        index.add([Located(event("acme", 1), 1, 24), Located(event("globex", 2), 1, 60)], 2)
        reader = index.env.begin()  # a query in flight
        index.reset(b"store")  # a rebuild starts
        assert index.number(reader, KIND_ACCOUNT, "globex", False) == 2  # as its snapshot says
        reader.abort()
        index.add([Located(event("initech", 3), 3, 24)], 3)  # the first account after the reset
        index.add([Located(event("globex", 4), 3, 60)], 4)
        with index.env.begin() as txn:
            numbers = {a: index.number(txn, KIND_ACCOUNT, a, False) for a in ("initech", "globex")}
            stored = {a: txn.get(b"a" + a.encode(), db=index.dbs["names"]) for a in numbers}
        assert numbers["initech"] != numbers["globex"]
        assert all(
            stored[a] is not None and int.from_bytes(stored[a], "big") == n for a, n in numbers.items()
        )
    finally:
        index.close()
