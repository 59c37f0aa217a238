"""A run's file and the job book against a file system that fails at each operation in turn:
a run's file is complete under its final name or not there, and each file of the job book
holds the state before the change or after it (a run noted as done has its file listed)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from leadtrail.server.exports import ExportedFile, ExportJob, Format, JobBook
from leadtrail.server.exports.runs import PARTIAL_SUFFIX, RunStopped, write_run
from leadtrail.storage import Event, EventFilter, EventLog, Files

NOW_MS = 1_800_000_000_000


class FailingFiles(Files):
    """Raises EIO at the ``fail_at``-th operation (counting every one); 0 never fails."""

    def __init__(self, fail_at: int = 0) -> None:
        self.fail_at = fail_at
        self.count = 0

    def _step(self) -> None:
        self.count += 1
        if self.count == self.fail_at:
            raise OSError(errno.EIO, "injected")

    def open_for_append(self, path: str) -> int:
        self._step()
        return super().open_for_append(path)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        self._step()
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._step()
        super().fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._step()
        super().truncate(fd, size)

    def rename(self, src: str, dst: str) -> None:
        self._step()
        super().rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        self._step()
        super().fsync_dir(path)


def a_job(fmt: Format = Format.JSONL) -> ExportJob:
    return ExportJob(
        account_id="default",
        name="faulty",
        filter=EventFilter(types=("fault.row",)),
        format=fmt,
        fields=(),
        every_s=60,
        lookback_s=3600,
        keep_days=1,
        masked=False,
        set_at_ms=NOW_MS,
    )


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLog]:
    opened = EventLog.open(tmp_path_factory.mktemp("faults") / "data")
    for first in range(0, 2100, 1000):  # three pages of the scan
        opened.append(
            [
                Event(
                    type="fault.row",
                    lead_id=f"l{i}",
                    flow_id="f",
                    timestamp_ms=NOW_MS - 1000 - i,
                    lead={"n": i},
                )
                for i in range(first, min(first + 1000, 2100))
            ]
        )
    yield opened
    opened.close()


def test_a_run_that_fails_at_any_operation_leaves_no_file_under_its_name(
    log: EventLog, tmp_path: Path
) -> None:
    clean = FailingFiles()
    expected = write_run(
        log, a_job(), str(tmp_path / "clean" / "f.jsonl"), NOW_MS - 3_600_000, NOW_MS, _same, clean
    )
    assert expected.rows == 2100
    whole = (tmp_path / "clean" / "f.jsonl").read_bytes()
    for fail_at in range(1, clean.count + 1):
        path = tmp_path / str(fail_at) / "f.jsonl"
        with pytest.raises(OSError):
            write_run(log, a_job(), str(path), NOW_MS - 3_600_000, NOW_MS, _same, FailingFiles(fail_at))
        if path.exists():  # only when the directory fsync after the rename failed: whole, yet unlisted
            assert path.read_bytes() == whole, fail_at
        left = [p.name for p in path.parent.iterdir() if p.name != path.name]
        assert left in ([], ["f.jsonl" + PARTIAL_SUFFIX]), (fail_at, left)


def _same(event: Event) -> Event:
    return event


def test_the_job_book_on_disk_is_before_or_after_a_change_that_fails(tmp_path: Path) -> None:
    made = ExportedFile(
        name="faulty-1.jsonl",
        bytes=10,
        rows=1,
        sha256="0" * 64,
        created_at_ms=NOW_MS,
        expires_at_ms=NOW_MS + 86_400_000,
        from_ms=NOW_MS - 3_600_000,
        to_ms=NOW_MS,
    )
    clean = FailingFiles()
    book = JobBook(str(tmp_path / "clean"), clean)
    book.set(a_job())
    before = clean.count
    book.completed(a_job().key, made, NOW_MS)
    operations = clean.count - before
    assert operations > 0
    for fail_at in range(1, operations + 1):
        data = tmp_path / str(fail_at)
        files = FailingFiles()
        book = JobBook(str(data), files)
        book.set(a_job())
        files.fail_at = files.count + fail_at
        with pytest.raises(OSError):
            book.completed(a_job().key, made, NOW_MS)
        reread = JobBook(str(data))
        assert reread.files("default", "faulty") in ([], [made]), fail_at
        job = reread.get("default", "faulty")
        assert job is not None and job.last_run_at_ms in (None, NOW_MS)
        assert book.files("default", "faulty") in ([], [made])
        # A run not noted as done is redone (its file listed or not); one noted as done has it.
        if job.last_run_at_ms is not None:
            assert reread.files("default", "faulty") == [made]
        assert not [n for n in os.listdir(data / "exports") if n.endswith(".json") and n != "jobs.json"]


def test_the_job_book_keeps_jobs_runs_and_files_across_a_reopen(tmp_path: Path) -> None:
    book = JobBook(str(tmp_path))
    job = book.set(a_job(Format.CSV))
    assert book.started(job.key, NOW_MS) is not None
    reread = JobBook(str(tmp_path))
    assert reread.get(*job.key) == ExportJob(**{**_fields(job), "running_since_ms": NOW_MS})
    assert reread.get(*job.key).next_run_at_ms == NOW_MS + 60_000  # type: ignore[union-attr]


def _fields(job: ExportJob) -> dict[str, object]:
    return {name: getattr(job, name) for name in ExportJob.__slots__}


def test_a_run_asked_to_stop_ends_between_pages_leaving_no_file(log: EventLog, tmp_path: Path) -> None:
    pages = iter([False, True])  # the second page is not written
    path = tmp_path / "stopped" / "f.jsonl"
    with pytest.raises(RunStopped):
        write_run(log, a_job(), str(path), NOW_MS - 3_600_000, NOW_MS, _same, Files(), lambda: next(pages))
    assert list(path.parent.iterdir()) == []
