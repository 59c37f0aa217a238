"""The export jobs at work inside the server: runs when due, removal when kept long enough.

One asyncio task on the writer's event loop sleeps until the next thing is due (a
run, or a file's expiry), or until a job changes. The writing happens on the read
pool (``runs.py``). Runs, deletions and expiries take one lock: they are rare, and
in order they never race over a job's directory or its entry in the book.

A run: the book notes it began (durably), the file is written and made complete,
``export.completed`` is appended (and durable: the audit never misses a file, though it
may name one a moment before the listing does), then the job's list names the file and
the book the run's time. A crash anywhere before the listing leaves a file nobody lists
(it is removed at start) and a run noted as begun (it is redone at start, with
``reason`` ``redone``). A run missed
while the server was down is due at start and runs once, however many were missed.
An expired file is recorded by ``export.expired`` first, then unlisted, then removed:
a crash between repeats the record rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from leadtrail.server.privacy import masked_event
from leadtrail.storage import Event, EventLog, Files, Outcome, StorageError
from leadtrail.storage.fields import FieldPolicies

from .jobbook import MANIFEST, JobBook
from .model import EXPORT_COMPLETED, EXPORT_EXPIRED, EXPORT_FLOW, JOB_LEAD_PREFIX, ExportedFile, ExportJob
from .rules import expires_at_ms
from .runs import RunStopped, file_name, write_run

log = logging.getLogger("leadtrail.server")

STOP_WAIT_S = 30.0
MAX_SLEEP_S = 60.0
"""The longest the task sleeps without looking again (a clock stepped forward is noticed)."""
RETRY_AFTER_FAILURE_S = 60.0


class RunError(Exception):
    """A run failed; the message says why (the file system or the store)."""


class Store(Protocol):
    """What the scheduler needs of the served store."""

    @property
    def log(self) -> EventLog: ...

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...


Clock = Callable[[], int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _shown(fields: FieldPolicies, job: ExportJob) -> Callable[[Event], Event]:
    if not job.masked:
        return _as_is
    account = job.account_id
    return lambda event: masked_event(event, fields.classifier(account))


def _as_is(event: Event) -> Event:
    return event


class ExportScheduler:
    def __init__(
        self, store: Store, book: JobBook, clock: Clock = now_ms, files: Files | None = None
    ) -> None:
        self._store = store
        self._book = book
        self._clock = clock
        self._files = files or Files()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        """Set by ``stop``; a run's thread looks at it between pages."""
        self._failed: dict[tuple[str, ...], float] = {}
        """Runs (account, job) and expiries (account, job, file) that failed, and when (monotonic):
        retried ``RETRY_AFTER_FAILURE_S`` later, not at once and not in a busy loop."""

    @property
    def book(self) -> JobBook:
        return self._book

    async def start(self) -> None:
        await self._store.run(self._sweep)
        self._task = asyncio.create_task(self._follow(), name="export-scheduler")

    async def stop(self) -> None:
        """End the task. A run being written stops at its next page (its file is never listed;
        it is redone at the next start) and is waited for: its thread reads the log, which
        closes after this."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, STOP_WAIT_S)
            except TimeoutError:  # wait_for cancelled it
                log.warning("export scheduler: not stopped within %s s", STOP_WAIT_S)
            self._task = None
        async with self._lock:  # a run that RunExportJob started holds it until it ends
            pass

    def changed(self) -> None:
        """A job was set or deleted: look again at what is due."""
        self._wake.set()

    async def run_now(self, account_id: str, name: str) -> ExportedFile | None:
        """Run the job now (None: there is no such job)."""
        return await self._run((account_id, name), reason="requested")

    async def delete(self, account_id: str, name: str) -> bool:
        """Delete the job and its files (False: there is no such job)."""
        async with self._lock:
            deleted: bool = await self._store.run(self._book.delete, account_id, name)
            if deleted:
                await self._store.run(self._remove_directory, self._book.job_directory(account_id, name))
        self._wake.set()
        return deleted

    # -- the task ----------------------------------------------------------------------------------

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self._due_work()
            except asyncio.CancelledError:
                raise
            except Exception:  # the task must outlive any one failure; the next pass retries
                log.exception("export scheduler")
            delay = self._next_delay()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    async def _due_work(self) -> None:
        for job in self._book.jobs():
            if self._stopping.is_set():
                return
            if self._due(job):
                try:
                    await self._run(job.key, reason="scheduled" if job.running_since_ms is None else "redone")
                except RunError as e:
                    log.warning("export job %s/%s: %s", job.account_id, job.name, e)
        now = self._clock()
        for job in self._book.jobs():
            for made in self._book.files(job.account_id, job.name):
                if made.expires_at_ms <= now and not self._resting((*job.key, made.name)):
                    await self._expire(job, made)

    def _resting(self, key: tuple[str, ...]) -> bool:
        """Whether ``key`` failed a moment ago (and waits before it is tried again)."""
        failed = self._failed.get(key)
        if failed is None:
            return False
        if time.monotonic() - failed < RETRY_AFTER_FAILURE_S:
            return True
        del self._failed[key]
        return False

    def _due(self, job: ExportJob) -> bool:
        if self._resting(job.key):
            return False
        return job.running_since_ms is not None or job.next_run_at_ms <= self._clock()

    def _next_delay(self) -> float:
        """Seconds until the next run or expiry (what failed a moment ago waits its turn)."""
        now = self._clock()
        soonest = now + int(MAX_SLEEP_S * 1000)
        for job in self._book.jobs():
            if not self._resting(job.key):
                soonest = min(soonest, now if job.running_since_ms is not None else job.next_run_at_ms)
            for made in self._book.files(job.account_id, job.name):
                if not self._resting((*job.key, made.name)):
                    soonest = min(soonest, made.expires_at_ms)
        return max(soonest - now, 0) / 1000

    # -- a run -------------------------------------------------------------------------------------

    async def _run(self, key: tuple[str, str], reason: str) -> ExportedFile | None:
        store, book = self._store, self._book
        async with self._lock:
            if self._stopping.is_set():
                raise RunError("the server is stopping")
            job = book.get(*key)
            if job is None:
                return None
            created = self._created_at(job)
            try:
                job = await store.run(book.started, key, created)
                if job is None:
                    return None
                name = file_name(job, created)
                path = os.path.join(book.job_directory(*key), name)
                from_ms = created - job.lookback_s * 1000
                shown = _shown(store.log.fields, job)
                written = await store.run(
                    write_run,
                    store.log,
                    job,
                    path,
                    from_ms,
                    created,
                    shown,
                    self._files,
                    self._stopping.is_set,
                )
                made = ExportedFile(
                    name=name,
                    bytes=written.bytes,
                    rows=written.rows,
                    sha256=written.sha256,
                    created_at_ms=created,
                    expires_at_ms=expires_at_ms(job, created),
                    from_ms=from_ms,
                    to_ms=created,
                )
                try:
                    await asyncio.wrap_future(self._submit(_completed(job, made, reason)))
                except BaseException:
                    await store.run(self._remove_quietly, path)
                    raise
                await store.run(book.completed, key, made, created)
            except RunStopped:
                raise RunError("the server is stopping; the run is redone at its next start") from None
            except (OSError, StorageError) as e:
                self._failed[key] = time.monotonic()
                raise RunError(f"run failed: {e}") from e
            self._failed.pop(key, None)
            return made

    def _created_at(self, job: ExportJob) -> int:
        """Now, after every file the job holds: file names and their order stay unique."""
        newest = self._book.files(job.account_id, job.name)
        return max(self._clock(), newest[0].created_at_ms + 1) if newest else self._clock()

    async def _expire(self, job: ExportJob, made: ExportedFile) -> None:
        async with self._lock:
            if self._book.get(*job.key) is None:
                return
            try:
                await asyncio.wrap_future(self._submit(_expired(job, made)))
                await self._store.run(self._book.forget, job.key, made.name)
                path = os.path.join(self._book.job_directory(*job.key), made.name)
                await self._store.run(self._remove_quietly, path)
            except (OSError, StorageError) as e:
                self._failed[(*job.key, made.name)] = time.monotonic()
                log.warning(
                    "export job %s/%s: file %s not removed: %s", job.account_id, job.name, made.name, e
                )

    def _submit(self, event: Event) -> Future[Any]:
        return self._store.log.submit([event])

    # -- the files on disk -------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Remove what no job lists: files of runs cut short, directories of deleted jobs."""
        root = self._book.directory
        try:
            accounts = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for account in accounts:
            for entry in os.scandir(account.path):
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if self._book.get(account.name, entry.name) is None:
                    self._remove_directory(entry.path)
                    continue
                listed = {MANIFEST, *(f.name for f in self._book.files(account.name, entry.name))}
                for held in os.scandir(entry.path):
                    if held.name not in listed:
                        log.warning(
                            "export job %s/%s: removing unlisted %s", account.name, entry.name, held.name
                        )
                        self._remove_quietly(held.path)
                self._files.fsync_dir(entry.path)

    def _remove_directory(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)
        parent = os.path.dirname(path)
        if os.path.isdir(parent):
            self._files.fsync_dir(parent)

    def _remove_quietly(self, path: str) -> None:
        try:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                self._files.remove(path)
        except FileNotFoundError:
            pass


def _completed(job: ExportJob, made: ExportedFile, reason: str) -> Event:
    return Event(
        type=EXPORT_COMPLETED,
        lead_id=JOB_LEAD_PREFIX + job.name,
        flow_id=EXPORT_FLOW,
        entity_id=job.name,
        outcome=Outcome.SUCCESS,
        reason=reason,
        details={
            "job": job.name,
            "file": made.name,
            "format": job.format.label,
            "rows": made.rows,
            "bytes": made.bytes,
            "sha256": made.sha256,
            "from_ms": made.from_ms,
            "to_ms": made.to_ms,
            "masked": job.masked,
        },
        account_id=job.account_id,
    )


def _expired(job: ExportJob, made: ExportedFile) -> Event:
    return Event(
        type=EXPORT_EXPIRED,
        lead_id=JOB_LEAD_PREFIX + job.name,
        flow_id=EXPORT_FLOW,
        entity_id=job.name,
        outcome=Outcome.SUCCESS,
        reason=f"kept {job.keep_days} days",
        details={
            "job": job.name,
            "file": made.name,
            "sha256": made.sha256,
            "created_at_ms": made.created_at_ms,
            "expires_at_ms": made.expires_at_ms,
        },
        account_id=job.account_id,
    )
