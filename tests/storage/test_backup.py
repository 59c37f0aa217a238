"""Backups of a live store (storage/backup.py): a snapshot consistent at one committed position
while appends go on, a backup directory brought up to date file by file, and a restore that
refuses anything but the bytes the manifest names."""

from __future__ import annotations

import os
import secrets
import sys
import threading
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Event, EventLog, Files, Options, RetentionPolicy
from leadtrail.storage.backup import (
    MANIFEST,
    STAGING_DIR,
    BackupDirectory,
    BackupError,
    Manifest,
    RestoreTargetError,
    Snapshot,
    check_name,
    manifest_json,
    read_manifest,
    restore,
)

Clock = sys.modules["leadtrail_storage_support"].Clock
SMALL_SEGMENTS = Options(segment_bytes=4096)
DAY_MS = 86_400_000


def events(n: int, lead: str = "lead", start: int = 0) -> list[Event]:
    return [
        Event(
            type="source.submitted",
            lead_id=f"{lead}-{(start + i) % 7}",
            flow_id="flow-solar",
            timestamp_ms=1_795_000_000_000 + start + i,
            lead={"email": f"p{start + i}@example.com", "n": start + i, "note": secrets.token_hex(40)},
        )
        for i in range(n)
    ]


def fill(log: EventLog, n: int, lead: str = "lead") -> list[int]:
    """``n`` events appended 10 at a time (a group never spans two segments: small groups fill
    several small segments); their positions."""
    return [r.position for i in range(0, n, 10) for r in log.append(events(min(10, n - i), lead, i))]


Stream = tuple[list[tuple[str, int, str, bytes]], bytes]
"""What a Backup call sends: (name, size, sha256, bytes) of every file, and the manifest."""


def stream_of(snapshot: Snapshot) -> Stream:
    files = []
    for file in snapshot.files:
        data = b"".join(snapshot.read(file, offset) for offset in range(0, file.size, 1 << 20))
        files.append((file.name, file.size, snapshot.sha256(file), data))
    digests = {name: digest for name, _, digest, _ in files}
    return files, manifest_json(snapshot, digests, None, "2026-12-03T00:00:00.000Z")


def receive(directory: Path, stream: Stream, files: Files | None = None) -> int:
    """What ``leadtrail backup`` does with a Backup call's answer: receives the files the
    directory does not hold, then the manifest. Returns the files received."""
    target = BackupDirectory(str(directory), files or Files())
    held = target.held()
    sent = 0
    try:
        for name, size, digest, data in stream[0]:
            if held.get(name) == (size, digest):
                continue
            sent += 1
            receiver = target.receive(name, size, digest)
            receiver.write(data[: size // 2])  # in two pieces, whatever the size: as many steps
            receiver.write(data[size // 2 :])
            receiver.finish()
        target.finish(stream[1])
    except BaseException:
        target.abandon()
        raise
    return sent


def copy_to(snapshot: Snapshot, directory: Path) -> int:
    return receive(directory, stream_of(snapshot))


def restored_position(backup: Path, target: Path) -> int:
    """Restores ``backup`` into ``target`` and opens it: the position it holds (and checks that
    it is the manifest's)."""
    manifest = restore(str(backup), str(target))
    with EventLog.open(target, Options(read_only=True)) as restored:
        assert restored.last_position == manifest.position
        assert len(list(restored.read_from(1))) == manifest.position
    return manifest.position


def test_a_backup_taken_while_appends_go_on_restores_every_event_up_to_its_position(tmp_path: Path) -> None:
    acknowledged: dict[int, str] = {}
    stop = threading.Event()
    with EventLog.open(tmp_path / "live", SMALL_SEGMENTS) as log:
        for i in range(0, 120, 10):
            for result in log.append(events(10, start=i)):
                acknowledged[result.position] = result.id

        def keep_appending() -> None:
            n = 1000
            while not stop.is_set():
                for result in log.append(events(5, "busy", n)):
                    acknowledged[result.position] = result.id
                n += 5

        appender = threading.Thread(target=keep_appending)
        appender.start()
        try:
            with log.backup_snapshot() as snapshot:
                assert snapshot.position >= 120
                copy_to(snapshot, tmp_path / "backup")
                position = snapshot.position
                assert snapshot.chain == log.chain_point(position)  # the chain head when it was taken
        finally:
            stop.set()
            appender.join(30)
        assert log.last_position > position  # appends went on: the backup stops at its position
        assert not os.listdir(tmp_path / "live" / STAGING_DIR)  # the staged links are gone
        sealed = [s for s in log.segments if s.sealed]
        assert len(sealed) >= 3
        stored = {e.position: e for e in log.read_from(1, limit=position)}

    manifest = restore(str(tmp_path / "backup"), str(tmp_path / "restored"))
    assert manifest.position == position
    assert all(name.startswith("log/") or "/" not in name for name in manifest.files)
    assert "STORE_ID" in manifest.files and "search.key" in manifest.files
    assert not any(name.startswith("index") for name in manifest.files)
    with EventLog.open(tmp_path / "restored", Options(read_only=True)) as restored:
        assert restored.last_position == position
        back = list(restored.read_from(1))
        assert [e.position for e in back] == list(range(1, position + 1))
        assert {e.position: e.id for e in back} == {p: i for p, i in acknowledged.items() if p <= position}
        assert back == [stored[p] for p in range(1, position + 1)]
        assert restored.get(stored[position].id) == stored[position]  # the rebuilt index serves it
        assert restored.chain_point(manifest.chain_position).chain_hash == manifest.chain_hash


def test_a_snapshot_keeps_its_bytes_when_retention_deletes_segments_after_it(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000_000)
    options = Options(segment_bytes=4096, clock_ms=clock)
    with EventLog.open(tmp_path / "live", options) as log:
        fill(log, 60, "old")
        clock.now += 90 * DAY_MS
        fill(log, 60)
        with log.backup_snapshot() as snapshot:
            position = snapshot.position
            log.set_retention_policy(RetentionPolicy(account_id="default", max_age_days=30))
            assert log.apply_retention().segments_deleted > 0
            copy_to(snapshot, tmp_path / "backup")
    restore(str(tmp_path / "backup"), str(tmp_path / "restored"))
    with EventLog.open(tmp_path / "restored", Options(read_only=True)) as restored:
        assert restored.last_position == position == 120
        assert [e.lead_id for e in restored.read_from(1, limit=2)] == ["old-0", "old-1"]


def test_a_second_backup_into_the_same_directory_receives_only_what_changed(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    with EventLog.open(tmp_path / "live", SMALL_SEGMENTS) as log:
        fill(log, 150)
        with log.backup_snapshot() as first:
            assert copy_to(first, backup) == len(first.files)
            names = {f.name for f in first.files}
        sealed = [f"log/{s.name}" for s in log.segments if s.sealed]
        inodes = {name: os.stat(backup / name).st_ino for name in sealed}
        log.append(events(3, "later"))
        with log.backup_snapshot() as second:
            sent = copy_to(second, backup)
            assert 0 < sent < len(second.files)
            position = second.position
        assert {name: os.stat(backup / name).st_ino for name in sealed} == inodes  # not written again
        # A file the backup holds that the store no longer has goes with the next manifest.
        (backup / "stray.json").write_text("{}")
        with log.backup_snapshot() as third:
            assert copy_to(third, backup) == 0
    assert names <= set(read_manifest(str(backup)).files)
    assert not (backup / "stray.json").exists()
    restore(str(backup), str(tmp_path / "restored"))
    with EventLog.open(tmp_path / "restored", Options(read_only=True)) as restored:
        assert restored.last_position == position == 153


def test_a_damaged_backup_file_is_refused_by_name_and_nothing_is_restored(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "live", SMALL_SEGMENTS) as log:
        fill(log, 80)
        with log.backup_snapshot() as snapshot:
            copy_to(snapshot, tmp_path / "backup")
            sealed = next(f"log/{s.name}" for s in log.segments if s.sealed)
    damaged = tmp_path / "backup" / sealed
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    target = tmp_path / "restored"
    with pytest.raises(BackupError, match=sealed.replace(".", r"\.") + ": damaged"):
        restore(str(tmp_path / "backup"), str(target))
    assert not target.exists()
    target.mkdir()  # an empty directory given: left empty
    with pytest.raises(BackupError, match=sealed.replace(".", r"\.")):
        restore(str(tmp_path / "backup"), str(target))
    assert os.listdir(target) == []
    # The next backup into the directory sends the damaged file again: the copy is repaired.
    with EventLog.open(tmp_path / "live", SMALL_SEGMENTS) as log, log.backup_snapshot() as snapshot:
        assert copy_to(snapshot, tmp_path / "backup") == 1
    restore(str(tmp_path / "backup"), str(target))
    assert (target / sealed).exists()


def test_restore_refuses_a_target_that_is_not_empty_and_writes_nothing(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "live") as log:
        log.append(events(3))
        with log.backup_snapshot() as snapshot:
            copy_to(snapshot, tmp_path / "backup")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(RestoreTargetError, match="busy is not empty"):
        restore(str(tmp_path / "backup"), str(target))
    assert os.listdir(target) == ["notes.txt"]
    with pytest.raises(BackupError, match=r"no manifest\.json"):
        restore(str(tmp_path / "nothing"), str(tmp_path / "new"))


def test_a_leftover_staging_directory_is_removed_by_the_next_backup(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "live") as log:
        log.append(events(2))
        leftover = tmp_path / "live" / STAGING_DIR / "999"
        leftover.mkdir(parents=True)
        (leftover / "0").write_bytes(b"x")
        with log.backup_snapshot() as snapshot:
            assert not leftover.exists()
            assert os.listdir(tmp_path / "live" / STAGING_DIR) == [os.path.basename(snapshot.staging)]


def test_a_leftover_staging_directory_is_removed_on_open_and_not_counted(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "live") as log:
        log.append(events(2))
        before = log.stats().disk_bytes
        with log.backup_snapshot():
            assert log.stats().disk_bytes == before  # the staged links are not counted twice
    leftover = tmp_path / "live" / STAGING_DIR / "7"
    leftover.mkdir(parents=True)
    (leftover / "0").write_bytes(b"x" * 10_000)
    with EventLog.open(tmp_path / "live") as log:
        assert not (tmp_path / "live" / STAGING_DIR).exists()
        assert len(log.timeline("lead-0")) + len(log.timeline("lead-1")) >= 1


def test_a_backup_refuses_a_directory_that_is_not_a_backup(tmp_path: Path) -> None:
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="neither empty nor a backup directory"):
        BackupDirectory(str(mine))
    assert os.listdir(mine) == ["notes.txt"]
    # What a first backup interrupted before its manifest leaves is no reason to refuse.
    (mine / "notes.txt").unlink()
    (mine / "log").mkdir()
    (mine / "log" / "00000000000000000001.log.part").write_bytes(b"x")
    assert BackupDirectory(str(mine)).held() == {}


@pytest.mark.parametrize(
    "name",
    ["", "../etc/passwd", "/abs", "log//x", "log/../x", "a/", MANIFEST, MANIFEST + ".tmp", "a/./b", "x.part"],
)
def test_names_that_would_leave_the_directory_are_refused(name: str) -> None:
    with pytest.raises(BackupError):
        check_name(name)


def test_a_manifest_that_is_not_one_is_refused(tmp_path: Path) -> None:
    for text in ("[]", '{"format": 2}', '{"format": 1, "files": {}}', "nope"):
        with pytest.raises(BackupError, match="not a backup manifest"):
            Manifest.parse(text.encode())
    for name in ("log/00000000000000000001.log", "exports/acme/daily run/2026-12-03.jsonl", ".hidden"):
        assert check_name(name) == name


# -- an I/O error or a crash at every step of receiving a backup ---------------------------------

RECEIVE_OPERATIONS = 32
"""Of the incremental backup below (two files received, one removed): the count is checked, so
that a new step cannot go untested."""


@pytest.fixture(scope="module")
def two_backups(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, Stream]:
    """The streams of a backup of a store and of the next one, after a segment was sealed and a
    metadata file went away."""
    data = tmp_path_factory.mktemp("faults") / "live"
    with EventLog.open(data, Options(segment_bytes=4096)) as log:
        fill(log, 30)
        (data / "consumers").mkdir()
        (data / "consumers" / "gone.json").write_text("{}")
        with log.backup_snapshot() as snapshot:
            first = stream_of(snapshot)
        assert first[1].decode().count('"position": 30')
        (data / "consumers" / "gone.json").unlink()
        log.append(events(10, "more"))
        log.append(events(1, "last"))  # in a new segment: the one before it is sealed
        with log.backup_snapshot() as snapshot:
            second = stream_of(snapshot)
    return first, second


def test_receiving_an_incremental_backup_takes_the_operations_tested_here(
    tmp_path: Path, two_backups: tuple[Stream, Stream]
) -> None:
    first, second = two_backups
    receive(tmp_path / "b", first)
    files = faults.InjectedFiles()
    files.armed = True
    assert receive(tmp_path / "b", second, files) == 2
    assert len(files.ops) == RECEIVE_OPERATIONS, files.ops
    assert restored_position(tmp_path / "b", tmp_path / "r") == 41


@pytest.mark.parametrize("fail_at", range(1, RECEIVE_OPERATIONS + 1))
def test_an_io_error_at_any_step_leaves_a_backup_of_the_old_position_or_the_new_one(
    tmp_path: Path, two_backups: tuple[Stream, Stream], fail_at: int
) -> None:
    first, second = two_backups
    receive(tmp_path / "b", first)
    files = faults.InjectedFiles(fail_at)
    files.armed = True
    with pytest.raises(OSError):
        receive(tmp_path / "b", second, files)
    assert restored_position(tmp_path / "b", tmp_path / "r1") in (30, 41), files.fired
    receive(tmp_path / "b", second)  # the next backup finishes the job
    assert restored_position(tmp_path / "b", tmp_path / "r2") == 41
    assert not [p for p in (tmp_path / "b").rglob("*") if p.name.endswith((".part", ".tmp"))]


@pytest.mark.parametrize("crash_at", range(1, RECEIVE_OPERATIONS + 1))
def test_a_crash_at_any_step_leaves_a_backup_of_the_old_position_or_the_new_one(
    tmp_path: Path, two_backups: tuple[Stream, Stream], crash_at: int
) -> None:
    first, second = two_backups
    receive(tmp_path / "b", first)
    pid = os.fork()
    if pid == 0:  # the child does file operations only, then ends as a power cut would
        try:
            files = faults.InjectedFiles(crash_at, crash=True)
            files.armed = True
            receive(tmp_path / "b", second, files)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == faults.CRASH_EXIT
    assert restored_position(tmp_path / "b", tmp_path / "r1") in (30, 41)
    receive(tmp_path / "b", second)
    assert restored_position(tmp_path / "b", tmp_path / "r2") == 41
