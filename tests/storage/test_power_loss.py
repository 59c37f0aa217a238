"""Power loss at every write-path operation loses nothing acknowledged (issue 19).

A killed process keeps what it wrote in the page cache; a power cut does not. Each
scenario below runs a workload on a copy of a prepared store through ``PowerFiles``
(powerloss.py), once to count its operations and record what each step leaves, then
once per operation with the power cut there. At each cut, a seeded sample of the disk
states the recorded history allows (unsynced data dropped, kept, torn at a sector,
missing any of the last write's sectors, reordered;
unsynced directory changes undone; the index as it is, removed or truncated) is
opened and checked:

- the store opens (recovery may repair; nothing here is damage FORMAT.md lets it refuse);
- every event of a step acknowledged before the cut is there and equal, nothing is
  there that neither the last acknowledged step nor the step under way left, and an
  append request is whole or absent;
- retention and field policies are those of one of the two steps;
- ``verify()`` and ``verify_chain()`` are clean and the index answers as the log does.

Scenarios: the append path (segment rolls, dictionary publication, index commits;
group commits from four threads), recovery of a torn tail and a reindex, retention
(segments removed and rewritten, retired.json, retirements.json, recorded_at.json),
erasure, the metadata files of a new store (its directory, STORE_ID, signing.key,
search.key, retention.json, fields.json), a backup directory brought up to date
(storage/backup.py), and the server's files: API keys (keys.py), consumer positions
(consumers/position.py: sink and alert state) and configuration books
(configbook.py: alert rules, sinks, export jobs).

CI checks ``LEADTRAIL_POWERLOSS_STATES`` (default 2: everything unsynced dropped, and
one drawn at random; and the first sector of each last write lost, where it spans two)
states per cut point with seed ``LEADTRAIL_POWERLOSS_SEED``
(default 19), about 30 s in all; a longer run (12 states a point: ~5,000 states,
about 1.5 minutes)::

    LEADTRAIL_POWERLOSS_STATES=12 python -m pytest -q -s tests/storage/test_power_loss.py -p no:cacheprovider

``-s`` prints each scenario's cut points and states checked.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import leadtrail_storage_faults as faults  # loaded by conftest.py
import leadtrail_storage_powerloss as powerloss  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, FieldPolicy, Files, Options, RetentionPolicy
from leadtrail.storage.backup import BackupDirectory, manifest_json, read_manifest, restore

PowerFiles = powerloss.PowerFiles
PowerCut = powerloss.PowerCut

STATES = int(os.environ.get("LEADTRAIL_POWERLOSS_STATES", "2"))
SEED = int(os.environ.get("LEADTRAIL_POWERLOSS_SEED", "19"))
NOW_MS = faults.BASE_MS + 40 * faults.DAY_MS


def clock() -> int:
    return NOW_MS


def options(files: Files | None = None, **kw: Any) -> Options:
    settings: dict[str, Any] = {
        "segment_bytes": 4096,
        "dictionary_training_samples": 12,
        "dictionary_bytes": 2048,
        "clock_ms": clock,
        "files": files or Files(),
    }
    return Options(**(settings | kw))


Step = Callable[[EventLog], object]


@dataclasses.dataclass
class Seen:
    """What a store holds after a step: events by position, policies."""

    events: dict[int, Event]
    policies: list[RetentionPolicy]
    fields: FieldPolicy


def seen(log: EventLog) -> Seen:
    events = {e.position: e for e in faults.check_log(log, gapless=False)}
    return Seen(events, log.retention_policies(), log.fields.get("acme"))


def comparable(event: Event) -> Event:
    # The store names its own audit events with random ids.
    return dataclasses.replace(event, id="") if event.type.startswith("audit.") else event


@dataclasses.dataclass
class Scenario:
    name: str
    prepare: Callable[[Path], None]
    steps: list[tuple[str, Step]]
    appends: set[int] = dataclasses.field(default_factory=set)
    """Steps that are one append request: whole or absent."""
    store: str = "."
    """Where the store is under the directory the power cut covers (a new store: a
    directory its first open makes)."""


def run(root: Path, files: Any, scenario: Scenario) -> tuple[int, bytes | None]:
    """Open and run the steps until the power goes; (steps acknowledged, -1 for not even
    the open; the public key the run saw)."""
    done = -1
    key = None
    log = None
    try:
        log = EventLog.open(root / scenario.store, options(files))
        key = log.public_key
        done = 0
        for _, step in scenario.steps:
            step(log)
            done += 1
    except BaseException:
        if files.fired is None:
            raise
    finally:
        files.drain()
        if log is not None:
            try:
                log.close()
            except BaseException:
                if files.fired is None:
                    raise
    return done, key


def check_state(
    where: str, state: Path, before: Seen, after: Seen, new_request: bool, key: bytes | None
) -> None:
    if not state.is_dir():
        # The power went before the store was made: nothing was acknowledged.
        assert not before.events, f"{where}: the store is gone"
        return
    with EventLog.open(state, options()) as log:
        got = seen(log)
        for position, event in got.events.items():
            allowed = [s.events[position] for s in (before, after) if position in s.events]
            assert allowed, f"{where}: position {position} ({event.id}) was never stored"
            assert comparable(event) in [comparable(e) for e in allowed], (
                f"{where}: position {position}: {faults.event_diff(event, allowed[-1])}"
            )
        for position, event in before.events.items():
            if after.events.get(position) == event:
                assert position in got.events, f"{where}: acknowledged {event.id} at {position} lost"
        new = [p for p in after.events if p not in before.events]
        if new_request:
            present = [p for p in new if p in got.events]
            assert present in ([], new), f"{where}: request partly stored: {present} of {new}"
        assert got.policies in (before.policies, after.policies), f"{where}: policies {got.policies}"
        assert got.fields in (before.fields, after.fields), f"{where}: field policy {got.fields}"
        if key is not None:
            assert log.public_key == key, f"{where}: the signing key changed"
        assert log.verify_chain().problems == [], f"{where}: chain {log.verify_chain().problems}"
        events = list(got.events.values())
        assert faults.query_mismatches(log, events, scans=2) == [], where
        # The store goes on: an append after recovery is acknowledged and read back.
        [fresh] = log.append([faults.make_event(9_999)])
        assert log.get(fresh.id, account_id=faults.make_event(9_999).account_id) is not None, where


def power_cut_everywhere(tmp_path: Path, scenario: Scenario) -> tuple[int, int]:
    """Cut at every operation of the scenario; (cut points, states checked)."""
    prestate = tmp_path / "prestate"
    scenario.prepare(prestate)
    probe = faults.copy_store(prestate, tmp_path / "probe")
    files = PowerFiles(probe)
    snapshots: list[Seen] = []
    with EventLog.open(probe / scenario.store, options(files)) as log:
        snapshots.append(seen(log))
        for _, step in scenario.steps:
            step(log)
            snapshots.append(seen(log))
    total = len(files.ops)
    shutil.rmtree(probe)
    checked = 0
    for at in range(1, total + 1):
        root = faults.copy_store(prestate, tmp_path / f"cut-{at}")
        files = PowerFiles(root)
        files.cut(at)
        done, key = run(root, files, scenario)
        if files.fired is None:
            # The run did fewer operations this time (a dictionary trained later): nothing to cut.
            shutil.rmtree(root)
            continue
        step = done + 1 if done >= 0 else 0
        before = snapshots[max(done, 0)]
        after = snapshots[min(step, len(snapshots) - 1)]
        name = scenario.steps[step - 1][0] if 0 < step <= len(scenario.steps) else "open"
        for description, state in files.states(SEED * 100_003 + at, STATES):
            where = f"{scenario.name}: power cut at {files.fired} during {name!r}, {description}"
            check_state(where, state / scenario.store, before, after, step in scenario.appends, key)
            shutil.rmtree(state)
            checked += 1
        shutil.rmtree(root)
    print(f"{scenario.name}: {total} cut points, {checked} states checked")
    return total, checked


# -- scenarios ------------------------------------------------------------------------------------


def append_request(numbers: Sequence[int]) -> Step:
    return lambda log: faults.append_numbers(log, numbers)


def prepare_small(path: Path) -> None:
    with EventLog.open(path, options()) as log:
        faults.append_numbers(log, [1, 2, 3])


def test_power_cut_at_every_operation_of_appends_that_roll_segments_and_publish_a_dictionary(
    tmp_path: Path,
) -> None:
    requests = [[10, 11, 12, 13], [14], [15, 16, 17, 18, 19], [20, 21, 22]]
    scenario = Scenario(
        "append",
        prepare_small,
        [(f"append {r}", append_request(r)) for r in requests],
        appends={1, 2, 3, 4},
    )
    total, checked = power_cut_everywhere(tmp_path, scenario)
    assert total > 20 and checked >= total


def prepare_aged(path: Path) -> None:
    # Old events (their timestamps 40 days back) in sealed segments, a recent few after.
    with EventLog.open(path, options(clock_ms=lambda: faults.BASE_MS)) as log:
        for start in range(1, 19, 6):
            faults.append_numbers(log, range(start, start + 6))
        log.set_retention_policy(RetentionPolicy(account_id="acme", max_age_days=30))
        # Personal values erased from old events of another account: segments rewritten.
        log.set_retention_policy(RetentionPolicy(account_id="default", pii_max_age_days=10))
    with EventLog.open(path, options()) as log:
        faults.append_numbers(log, [40, 41, 42])


def test_power_cut_at_every_operation_of_retention(tmp_path: Path) -> None:
    scenario = Scenario("retention", prepare_aged, [("retention", lambda log: log.apply_retention(NOW_MS))])
    total, checked = power_cut_everywhere(tmp_path, scenario)
    assert total > 5 and checked >= total


def test_power_cut_at_every_operation_of_an_erasure(tmp_path: Path) -> None:
    lead = faults.make_event(4)
    scenario = Scenario(
        "erasure",
        prepare_aged,
        [("erase", lambda log: log.erase_lead(lead.lead_id, lead.account_id, requested_by="test"))],
    )
    total, checked = power_cut_everywhere(tmp_path, scenario)
    assert total > 5 and checked >= total


def test_power_cut_at_every_operation_of_a_new_store_and_its_policies(tmp_path: Path) -> None:
    scenario = Scenario(
        "metadata",
        lambda path: path.mkdir(),
        [
            ("retention policy", lambda log: log.set_retention_policy(RetentionPolicy("acme", 30))),
            ("field policy", lambda log: log.set_field_policy(FieldPolicy("acme", secret=("ssn",)))),
            ("append", append_request([1, 2])),
            ("retention policy 2", lambda log: log.set_retention_policy(RetentionPolicy("acme", 60))),
        ],
        appends={3},
    )
    total, checked = power_cut_everywhere(tmp_path, scenario)
    assert total > 5 and checked >= total


def test_power_cut_at_every_operation_of_a_new_store_that_publishes_its_first_dictionary(
    tmp_path: Path,
) -> None:
    # The dictionaries directory is made by the first open of the store.
    requests = [list(range(start, start + 5)) for start in range(1, 21, 5)]
    scenario = Scenario(
        "new store",
        lambda path: path.mkdir(),
        [(f"append {r}", append_request(r)) for r in requests],
        appends={1, 2, 3, 4},
        store="store",
    )
    total, checked = power_cut_everywhere(tmp_path, scenario)
    assert total > 20 and checked >= total


def prepare_torn(path: Path) -> None:
    """A store a crash left mid-append: a torn record after the last commit, a leftover
    temporary file, and no index."""
    prepare_small(path)
    with EventLog.open(path, options()) as log:
        faults.append_numbers(log, [4, 5])
    last = faults.segment_paths(path)[-1]
    whole = faults.record(faults.KIND_EVENT | faults.FLAG_COMMIT, 6, bytes(range(256)) * 4)
    with open(last, "ab") as f:
        f.write(whole[: len(whole) // 2])
    (path / "retention.json.tmp").write_bytes(b"{half")
    shutil.rmtree(path / "index")


def test_power_cut_at_every_operation_of_recovery_and_a_reindex(tmp_path: Path) -> None:
    scenario = Scenario(
        "recovery",
        prepare_torn,
        [
            ("append [30, 31]", append_request([30, 31])),
            ("reindex", lambda log: log.reindex()),
            ("append [32]", append_request([32])),
        ],
        appends={1, 3},
    )
    total, checked = power_cut_everywhere(tmp_path, scenario)
    assert total > 10 and checked >= total


# -- backup -------------------------------------------------------------------------------------------

Stream = tuple[list[tuple[str, int, str, bytes]], bytes]


def stream_of(log: EventLog) -> Stream:
    """What a Backup call sends: every file of a snapshot, and the manifest."""
    snapshot = log.backup_snapshot()
    try:
        sent = []
        for file in snapshot.files:
            data = b"".join(snapshot.read(file, offset) for offset in range(0, file.size, 1 << 20))
            sent.append((file.name, file.size, snapshot.sha256(file), data))
        digests = {name: digest for name, _, digest, _ in sent}
        return sent, manifest_json(snapshot, digests, None, "2026-12-03T00:00:00.000Z")
    finally:
        snapshot.close()


def receive(directory: Path, stream: Stream, files: Files) -> None:
    """What ``leadtrail backup`` does: the files the directory does not hold, then the manifest."""
    target = BackupDirectory(str(directory), files)
    held = target.held()
    try:
        for name, size, digest, data in stream[0]:
            if held.get(name) == (size, digest):
                continue
            receiver = target.receive(name, size, digest)
            receiver.write(data[: size // 2])
            receiver.write(data[size // 2 :])
            receiver.finish()
        target.finish(stream[1])
    except BaseException:
        target.abandon()
        raise


def restored_events(backup: Path, target: Path) -> tuple[int, list[Event]]:
    manifest = restore(str(backup), str(target))
    with EventLog.open(target, options()) as log:
        events = faults.check_log(log)
        assert log.last_position == manifest.position
        assert log.verify_chain().problems == []
    return manifest.position, events


def test_power_cut_at_every_operation_of_a_backup_into_a_directory_holding_an_older_one(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    with EventLog.open(live, options()) as log:
        for start in range(1, 16, 5):
            faults.append_numbers(log, range(start, start + 5))
        old = stream_of(log)
        for start in range(16, 31, 5):
            faults.append_numbers(log, range(start, start + 5))
        log.set_retention_policy(RetentionPolicy("acme", 30))
        new = stream_of(log)
        expected = list(log.read_from(1))
    prestate = tmp_path / "prestate"
    receive(prestate, old, Files())
    old_position = read_manifest(str(prestate)).position
    probe = faults.copy_store(prestate, tmp_path / "probe")
    files = PowerFiles(probe)
    receive(probe, new, files)
    new_position = read_manifest(str(probe)).position
    assert new_position > old_position
    total = len(files.ops)
    checked = 0
    for at in range(1, total + 1):
        root = faults.copy_store(prestate, tmp_path / f"cut-{at}")
        files = PowerFiles(root)
        files.cut(at)
        acknowledged = False
        try:
            receive(root, new, files)
            acknowledged = True
        except PowerCut:
            pass
        files.drain()
        for description, state in files.states(SEED * 100_003 + at, STATES):
            where = f"backup: power cut at {files.fired}, {description}"
            restored = tmp_path / "restored"
            position, events = restored_events(state, restored)
            assert position in ((new_position,) if acknowledged else (old_position, new_position)), where
            assert events == expected[:position], where
            # The next backup into the directory finishes or redoes this one.
            receive(state, new, Files())
            assert restored_events(state, tmp_path / "again")[0] == new_position, where
            shutil.rmtree(restored)
            shutil.rmtree(tmp_path / "again")
            shutil.rmtree(state)
            checked += 1
        shutil.rmtree(root)
    print(f"backup: {total} cut points, {checked} states checked")
    assert total > 10 and checked >= total


# -- regressions: the states that lost acknowledged events ----------------------------------------


def dropped_state(tmp_path: Path, files: Any) -> Path:
    """The state where the power went now and nothing unsynced reached the disk."""
    files.cut(1)
    with pytest.raises(PowerCut):
        files.fsync_dir(str(tmp_path))
    files.drain()
    [(_, state)] = list(files.states(SEED, 1))
    return state


def test_a_new_store_directory_survives_a_power_cut_once_an_event_is_acknowledged(tmp_path: Path) -> None:
    # The store's directory was made with os.makedirs and its parent never fsynced: a power
    # cut took the whole store, acknowledged events and all, out of its parent.
    parent = tmp_path / "parent"
    parent.mkdir()
    files = PowerFiles(parent)
    with EventLog.open(parent / "store", options(files)) as log:
        stored = faults.append_numbers(log, [1])
    state = dropped_state(tmp_path, files)
    assert (state / "store").is_dir(), "the new store's directory was lost"
    with EventLog.open(state / "store", options()) as log:
        assert [e.id for e in log.read_from(1)] == list(stored)


def test_a_dictionaries_directory_made_by_an_open_survives_a_power_cut(tmp_path: Path) -> None:
    # A store without a dictionaries directory (made before any was published, or by a
    # release that did not make it): the open made it with os.makedirs, the dictionary
    # written in it was fsynced with its directory, but the directory's own entry was not.
    store = tmp_path / "store"
    with EventLog.open(store, options()) as log:
        faults.append_numbers(log, [1])
    shutil.rmtree(store / "dictionaries")
    files = PowerFiles(store)
    with EventLog.open(store, options(files)) as log:
        for start in range(2, 22, 5):
            faults.append_numbers(log, range(start, start + 5))
    assert list((store / "dictionaries").glob("*.zdict")), "no dictionary was published"
    state = dropped_state(tmp_path, files)
    assert list((state / "dictionaries").glob("*.zdict")), "the published dictionary was lost"
    with EventLog.open(state, options()) as log:
        assert len(faults.check_log(log)) == 21


# -- the server's key file ---------------------------------------------------------------------------


def test_power_cut_at_every_operation_of_api_key_changes(tmp_path: Path) -> None:
    from leadtrail.server.keys import KeyStore

    def changes(store: Any, done: list[list[str]]) -> None:
        """Create two keys and revoke the first; ``done``: the key ids after each change."""
        _, first = store.create("acme", "writer", NOW_MS)
        done.append([first.key_id])
        _, second = store.create("acme", "reader", NOW_MS)
        done.append([first.key_id, second.key_id])
        store.revoke(first.key_id, NOW_MS + 1)
        done.append([first.key_id, second.key_id, "revoked"])

    def observed(data: Path) -> list[str]:
        keys = KeyStore(str(data)).list_keys()
        return sorted([k.key_id for k in keys] + (["revoked"] if any(k.revoked for k in keys) else []))

    probe = tmp_path / "probe"
    probe.mkdir()
    files = PowerFiles(probe)
    changes(KeyStore(str(probe), files), [])
    total = len(files.ops)
    checked = 0
    for at in range(1, total + 1):
        root = tmp_path / f"cut-{at}"
        root.mkdir()
        files = PowerFiles(root)
        files.cut(at)
        done: list[list[str]] = [[]]
        with pytest.raises(PowerCut):
            changes(KeyStore(str(root), files), done)
        files.drain()
        for description, state in files.states(SEED * 100_003 + at, STATES):
            where = f"keys: power cut at {files.fired}, {description}"
            got = observed(state)
            ids, acked = set(got) - {"revoked"}, set(done[-1]) - {"revoked"}
            # The last change acknowledged, or the one under way (whose key id the caller
            # never saw: one key more than acknowledged, or the revocation).
            whole = got == sorted(done[-1])
            creating = ids >= acked and len(ids) == len(acked) + 1 and "revoked" not in got
            revoking = ids == acked and len(done) == 3 and "revoked" in got
            assert whole or creating or revoking, f"{where}: {got}, acknowledged {done[-1]}"
            shutil.rmtree(state)
            checked += 1
        shutil.rmtree(root)
    print(f"api keys: {total} cut points, {checked} states checked")
    assert total > 10 and checked >= total


# -- the server's consumer positions and configuration books -----------------------------------------


def power_cut_sequence(
    tmp_path: Path,
    name: str,
    changes: Callable[[Any, Path, list[object]], None],
    observe: Callable[[Path], object],
) -> int:
    """Cut at every operation of ``changes(files, root, done)`` (which appends what
    ``observe`` must see after each change it made); each state must show the last change
    acknowledged or the one under way. The states checked."""
    probe = tmp_path / "probe"
    probe.mkdir()
    files = PowerFiles(probe)
    expected: list[object] = [observe(probe)]
    changes(files, probe, expected)
    total = len(files.ops)
    checked = 0
    for at in range(1, total + 1):
        root = tmp_path / f"cut-{at}"
        root.mkdir()
        files = PowerFiles(root)
        files.cut(at)
        done: list[object] = [expected[0]]
        with pytest.raises(PowerCut):
            changes(files, root, done)
        files.drain()
        acked = len(done) - 1
        for description, state in files.states(SEED * 100_003 + at, STATES):
            got = observe(state)
            assert got in expected[acked : acked + 2], (
                f"{name}: power cut at {files.fired}, {description}: {got!r}, acknowledged {done[-1]!r}"
            )
            shutil.rmtree(state)
            checked += 1
        shutil.rmtree(root)
    print(f"{name}: {total} cut points, {checked} states checked")
    assert total > 10 and checked >= total
    return checked


def test_power_cut_at_every_operation_of_consumer_position_saves(tmp_path: Path) -> None:
    from leadtrail.server.consumers.position import ConsumerPosition

    def changes(files: Any, root: Path, done: list[object]) -> None:
        position = ConsumerPosition(str(root), "export.daily", files)
        position.load()
        for n in (5, 9, 14):
            position.save(n, {"sent": n * 2})
            done.append((n, {"sent": n * 2}))
        position.remove()
        done.append(None)

    def observe(root: Path) -> object:
        saved = ConsumerPosition(str(root), "export.daily").load()
        return None if saved is None else (saved.position, saved.state)

    power_cut_sequence(tmp_path, "consumer position", changes, observe)


def test_power_cut_at_every_operation_of_a_configuration_file(tmp_path: Path) -> None:
    from leadtrail.server.configbook import ConfigFile

    def path(root: Path) -> str:
        return str(root / "alerts" / "rules.json")

    def changes(files: Any, root: Path, done: list[object]) -> None:
        book = ConfigFile(path(root), files, mode=0o600)
        book.load(lambda raw: raw)
        for n in range(3):
            book.store({"rules": list(range(n + 1))})
            done.append(list(range(n + 1)))

    def observe(root: Path) -> object:
        loaded = ConfigFile(path(root), Files()).load(lambda raw: raw["rules"])
        return loaded

    power_cut_sequence(tmp_path, "configuration file", changes, observe)


# -- group commit: requests from several threads -----------------------------------------------------


def test_power_cut_at_every_operation_of_group_commits_from_several_threads(tmp_path: Path) -> None:
    """Requests that share an fsync: whatever order the threads take, every request
    acknowledged is there and equal, every request is whole or absent, and nothing is there
    that was not sent."""
    import threading

    # Thread t sends requests r = 0, 1, 2 of 1 to 3 events numbered 100 * t + 10 * r + k.
    requests = [[100 * t + 10 * r + k for k in range(1 + (t + r) % 3)] for r in range(3) for t in range(1, 5)]
    by_thread = [requests[t::4] for t in range(4)]
    prestate = tmp_path / "prestate"
    prepare_small(prestate)
    with EventLog.open(prestate, options()) as log:
        before = {e.id: e for e in log.read_from(1)}

    def run_threads(root: Path, files: Any) -> dict[str, Event]:
        acked: dict[str, Event] = {}
        lock = threading.Lock()
        try:
            log = EventLog.open(root, options(files))
        except PowerCut:
            files.drain()
            return acked

        def worker(mine: list[list[int]]) -> None:
            for numbers in mine:
                try:
                    stored = faults.append_numbers(log, numbers)
                except BaseException:
                    if files.fired is None:
                        raise
                    return
                with lock:
                    acked.update(stored)

        threads = [threading.Thread(target=worker, args=(mine,)) for mine in by_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        files.drain()
        try:
            log.close()
        except PowerCut:
            pass  # the cut came at the close's own fsync
        return acked

    probe = faults.copy_store(prestate, tmp_path / "probe")
    files = PowerFiles(probe)
    run_threads(probe, files)
    total = len(files.ops)
    checked = 0
    for at in range(1, total + 1):
        root = faults.copy_store(prestate, tmp_path / f"cut-{at}")
        files = PowerFiles(root)
        files.cut(at)
        acked = run_threads(root, files)
        for description, state in files.states(SEED * 100_003 + at, STATES):
            where = f"group commit: power cut at {files.fired}, {description}"
            try:
                log = EventLog.open(state, options())
            except Exception as e:
                raise AssertionError(f"{where}: {e}") from e
            with log:
                events = faults.check_log(log)
                present = {e.id: e for e in events}
                for expected in [*before.values(), *acked.values()]:
                    assert faults.event_diff(present.get(expected.id), expected) == [], where
                for numbers in requests:
                    stored = [present.get(faults.event_id(n)) for n in numbers]
                    assert all(stored) or not any(stored), f"{where}: request {numbers} partly stored"
                    for n, got in zip(numbers, stored, strict=True):
                        if got is not None:
                            sent = faults.as_stored(faults.make_event(n), got.position, got.recorded_at_ms)
                            assert faults.event_diff(got, sent) == [], where
                sent_ids = {faults.event_id(n) for numbers in requests for n in numbers} | set(before)
                assert set(present) <= sent_ids, f"{where}: events never sent are stored"
                assert log.verify().problems == [], where
                assert log.verify_chain().problems == [], where
                assert faults.query_mismatches(log, events, scans=2) == [], where
            shutil.rmtree(state)
            checked += 1
        shutil.rmtree(root)
    print(f"group commit: {total} cut points, {checked} states checked")
    assert total > 10 and checked >= total


def test_a_seal_is_written_only_after_the_records_before_it_are_durable(tmp_path: Path) -> None:
    # A group that filled the segment wrote its first requests, then the seal, then one
    # fsync for both: a power cut could keep the seal's sector and not the records' before
    # it (group commit: power cut at #17 fsync, log/...9.log: 1/2 unsynced ops kept), and
    # recovery refused the store ("damaged bytes at offset 3232..4808, positions 15..15").
    class SealWatch(PowerFiles):
        seals_after_unsynced: list[int] = []
        seals = 0

        def write(self, fd: int, data: bytes | memoryview) -> None:
            head = bytes(data[:4])
            if head[:2] == b"LT" and head[3] & 0x0F == faults.KIND_SEAL:
                self.seals += 1
                if self.unsynced(fd):
                    self.seals_after_unsynced.append(self.unsynced(fd))
            super().write(fd, data)

    store = tmp_path / "store"
    prepare_small(store)
    files = SealWatch(store)
    with EventLog.open(store, options(files)) as log:
        # Queued together, requests make groups that fill a segment part-way through.
        futures = [
            log.submit([faults.make_event(n) for n in range(100 + 3 * i, 103 + 3 * i)]) for i in range(20)
        ]
        for future in futures:
            future.result()
    assert files.seals > 3
    assert files.seals_after_unsynced == [], "a seal was written after unsynced records"
