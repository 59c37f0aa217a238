"""ExportService: an account's export jobs (admin keys) and their files (analyst keys and up).

Jobs are checked by ``rules.job_from_message`` and kept by the ``JobBook``; the
``ExportScheduler`` runs them, deletes them with their files and expires files.
Another account's jobs do not exist for a caller. A job that is not masked holds
personal fields as stored: its files are listed to analysts but downloaded by admin
keys only. Every download, whole or cut short, is recorded as
``audit.export_downloaded`` in the job's timeline (``lead_id`` ``export:<job>``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import BinaryIO

import grpc

from leadtrail.server.caller import Caller
from leadtrail.server.export import EXPORT_CHUNK_BYTES
from leadtrail.server.served_store import ServedStore
from leadtrail.server.status import Context, ServiceError, invalid, not_found, streaming, unary
from leadtrail.storage import AUDIT_FLOW, Event, Outcome, StorageError
from leadtrail.v1 import exports_pb2, exports_pb2_grpc, query_pb2

from .jobbook import TooManyJobsError
from .model import AUDIT_EXPORT_DOWNLOADED, JOB_LEAD_PREFIX, ExportedFile, ExportJob
from .rules import check_name, job_from_message, message_from_file, message_from_job
from .scheduler import ExportScheduler, RunError, now_ms

log = logging.getLogger("leadtrail.server")


class ExportService(exports_pb2_grpc.ExportServiceServicer):
    def __init__(self, store: ServedStore) -> None:
        self.store = store

    def _scheduler(self) -> ExportScheduler:
        exports = self.store.exports
        if exports is None:  # a follower forwards the service to the writer: never here
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "export jobs are kept by the writer")
        return exports

    def _job(self, account: str, name: str, field: str = "name") -> ExportJob:
        check_name(field, name)
        job = self._scheduler().book.get(account, name)
        if job is None:
            raise not_found(f"export job {name!r} not found")
        return job

    @unary
    async def SetExportJob(self, request: exports_pb2.ExportJob, context: Context) -> exports_pb2.ExportJob:
        scheduler = self._scheduler()
        caller = Caller.current()
        job = job_from_message(request, caller.filter(request.filter), now_ms())
        held = scheduler.book.get(*job.key)
        caller.may_change(f"export job {job.name!r}", None if held is None else held.filter, "jobs")
        try:
            job = await self.store.run(scheduler.book.set, job)
        except TooManyJobsError as e:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        scheduler.changed()
        return message_from_job(job)

    @unary
    async def ListExportJobs(
        self, request: exports_pb2.ListExportJobsRequest, context: Context
    ) -> exports_pb2.ListExportJobsResponse:
        jobs = self._scheduler().book.jobs(Caller.current().account)
        return exports_pb2.ListExportJobsResponse(jobs=[message_from_job(j) for j in jobs])

    @unary
    async def DeleteExportJob(
        self, request: exports_pb2.DeleteExportJobRequest, context: Context
    ) -> exports_pb2.DeleteExportJobResponse:
        caller = Caller.current()
        job = self._job(caller.account, request.name)
        caller.may_change(f"export job {job.name!r}", job.filter, "jobs")
        if not await self._scheduler().delete(caller.account, request.name):
            raise not_found(f"export job {request.name!r} not found")
        return exports_pb2.DeleteExportJobResponse()

    @unary
    async def RunExportJob(
        self, request: exports_pb2.RunExportJobRequest, context: Context
    ) -> exports_pb2.RunExportJobResponse:
        caller = Caller.current()
        job = self._job(caller.account, request.name)
        caller.may_change(f"export job {job.name!r}", job.filter, "jobs")
        try:
            # Shielded: a caller that goes away does not cut the run short (its file is listed).
            made = await asyncio.shield(self._scheduler().run_now(caller.account, request.name))
        except RunError as e:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"export job {request.name!r}: {e}") from None
        if made is None:  # deleted meanwhile
            raise not_found(f"export job {request.name!r} not found")
        return exports_pb2.RunExportJobResponse(file=message_from_file(made))

    @unary
    async def ListExportFiles(
        self, request: exports_pb2.ListExportFilesRequest, context: Context
    ) -> exports_pb2.ListExportFilesResponse:
        caller = Caller.current()
        job = self._job(caller.account, request.job, "job")
        _may_see(caller, job)
        made = self._scheduler().book.files(caller.account, job.name)
        return exports_pb2.ListExportFilesResponse(files=[message_from_file(f) for f in made])

    @streaming
    async def DownloadExportFile(
        self, request: exports_pb2.DownloadExportFileRequest, context: Context
    ) -> AsyncIterator[query_pb2.ExportChunk]:
        caller = Caller.current()
        job = self._job(caller.account, request.job, "job")
        _may_see(caller, job)
        if not job.masked and caller.key is not None and caller.key.role != "admin":
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"export job {job.name!r} is not masked: its files hold personal fields as stored, "
                "which admin keys only may download",
            )
        if not request.file:
            raise invalid("file", "required")
        book = self._scheduler().book
        made = next((f for f in book.files(caller.account, job.name) if f.name == request.file), None)
        if made is None:
            raise not_found(f"export job {job.name!r} has no file {request.file[:200]!r}")
        path = os.path.join(book.job_directory(caller.account, job.name), made.name)
        try:
            handle = await self.store.run(_open, path)
        except FileNotFoundError:  # expired a moment ago
            raise not_found(f"export job {job.name!r} has no file {made.name!r}") from None
        sent = 0
        try:
            while data := await self.store.run(handle.read, EXPORT_CHUNK_BYTES):
                sent += len(data)
                yield query_pb2.ExportChunk(data=data)
        finally:  # also when the client stops reading: what was sent is recorded
            handle.close()
            self._record_download(caller, job, made, sent)

    def _record_download(self, caller: Caller, job: ExportJob, made: ExportedFile, sent: int) -> None:
        key = caller.key
        whole = sent == made.bytes
        record = Event(
            type=AUDIT_EXPORT_DOWNLOADED,
            lead_id=JOB_LEAD_PREFIX + job.name,
            flow_id=AUDIT_FLOW,
            entity_id=key.key_id if key is not None else "",
            outcome=Outcome.SUCCESS if whole else Outcome.FAILURE,
            reason="DownloadExportFile" if whole else "DownloadExportFile cut short",
            details={
                "job": job.name,
                "file": made.name,
                "sha256": made.sha256,
                "bytes": sent,
                "complete": whole,
                "role": key.role if key is not None else "",
            },
            account_id=caller.account,
        )
        try:
            self.store.log.submit([record])
        except StorageError as e:  # a read-only store keeps serving reads
            log.warning("audit record of a download of %s not written: %s", made.name, e)


def _open(path: str) -> BinaryIO:
    return open(path, "rb")


def _may_see(caller: Caller, job: ExportJob) -> None:
    """A key limited to some entities or flows sees the files of jobs within its scope only."""
    key = caller.key
    if key is None or not caller.limited:
        return
    f = job.filter
    inside = (not key.entities or (bool(f.entity_scope) and set(f.entity_scope) <= set(key.entities))) and (
        not key.flows or (bool(f.flow_scope) and set(f.flow_scope) <= set(key.flows))
    )
    if not inside:
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"export job {job.name!r}: exports beyond the entities or flows this key is limited to",
        )
