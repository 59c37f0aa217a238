"""The export jobs of every account and the files their runs made.

``<data>/exports/jobs.json`` holds every account's jobs (their definitions and run
times); each job's files live in ``<data>/exports/<account>/<job>/`` (account and job
names are path-safe by their patterns) beside the list of them, ``files.json`` (a
job's list is written on its runs and expiries alone, whatever the other jobs hold).
Each file is a ``configbook.ConfigFile``, replaced atomically through the storage ``Files``
seam; a change that fails leaves it as it was.

The lists are the authority on which files exist: a file is listed once its bytes
are durable under their final name and its job's list says so; a file in a job's
directory that the list does not name (a run cut short by a crash) is removed at start
by the scheduler. A run's end writes the list first, then the run time: a crash
between lists the file and redoes the run (a file more, never one lost).

Every method writes on the calling thread (the read pool); a lock keeps the
scheduler's and the servicer's changes in order.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from leadtrail.server.config_filters import filter_from_json, filter_json
from leadtrail.server.configbook import FORMAT as FORMAT
from leadtrail.server.configbook import TMP_SUFFIX as TMP_SUFFIX
from leadtrail.server.configbook import BookForm, ConfigFile, ConfigFileError, Key, NamedBook
from leadtrail.storage import Files

from .model import ExportedFile, ExportJob, Format

DIRECTORY = "exports"
FILE = "jobs.json"
MANIFEST = "files.json"
"""A job's list of its files, in the job's directory."""
MAX_JOBS_PER_ACCOUNT = 100


class JobBookError(ConfigFileError):
    """The jobs file cannot be read; the message names the file and the problem."""


class TooManyJobsError(Exception):
    """An account already holds ``MAX_JOBS_PER_ACCOUNT`` jobs and a new one was set."""


def _file_json(f: ExportedFile) -> dict[str, Any]:
    return {
        "name": f.name,
        "bytes": f.bytes,
        "rows": f.rows,
        "sha256": f.sha256,
        "created_at_ms": f.created_at_ms,
        "expires_at_ms": f.expires_at_ms,
        "from_ms": f.from_ms,
        "to_ms": f.to_ms,
    }


def _file_from(raw: dict[str, Any]) -> ExportedFile:
    return ExportedFile(
        name=raw["name"],
        bytes=raw["bytes"],
        rows=raw["rows"],
        sha256=raw["sha256"],
        created_at_ms=raw["created_at_ms"],
        expires_at_ms=raw["expires_at_ms"],
        from_ms=raw["from_ms"],
        to_ms=raw["to_ms"],
    )


def _job_json(job: ExportJob) -> dict[str, Any]:
    return {
        "account_id": job.account_id,
        "name": job.name,
        "filter": filter_json(job.filter),
        "format": job.format.label,
        "fields": list(job.fields),
        "every_s": job.every_s,
        "lookback_s": job.lookback_s,
        "keep_days": job.keep_days,
        "masked": job.masked,
        "set_at_ms": job.set_at_ms,
        "last_run_at_ms": job.last_run_at_ms,
        "running_since_ms": job.running_since_ms,
    }


def _job_from(raw: dict[str, Any]) -> ExportJob:
    account = raw["account_id"]
    return ExportJob(
        account_id=account,
        name=raw["name"],
        filter=filter_from_json(account, raw["filter"]),
        format=Format[raw["format"].upper()],
        fields=tuple(raw.get("fields", ())),
        every_s=raw["every_s"],
        lookback_s=raw["lookback_s"],
        keep_days=raw["keep_days"],
        masked=bool(raw.get("masked", False)),
        set_at_ms=raw["set_at_ms"],
        last_run_at_ms=raw.get("last_run_at_ms"),
        running_since_ms=raw.get("running_since_ms"),
    )


_FORM: BookForm[ExportJob] = BookForm(
    "jobs", _job_json, _job_from, MAX_JOBS_PER_ACCOUNT, TooManyJobsError, "export jobs"
)


def _files_from(raw: dict[str, Any]) -> list[ExportedFile]:
    return sorted((_file_from(f) for f in raw["files"]), key=lambda f: f.created_at_ms, reverse=True)


class JobBook:
    """Every account's export jobs and their files, in memory and on disk."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, FILE)
        self._files = files or Files()
        self._book = NamedBook(ConfigFile(self.path, self._files, error=JobBookError), _FORM)
        self._lists: dict[Key, ConfigFile] = {}
        """Each job's list of files (a new one when the job is set again after its deletion,
        which removed its directory)."""
        self._made: dict[Key, list[ExportedFile]] = {}
        """Each job's files, newest first."""
        for job in self._book.entries():
            self._made[job.key] = self._list(job.key).load(_files_from) or []

    def _list(self, key: Key) -> ConfigFile:
        listed = self._lists.get(key)
        if listed is None:
            listed = self._lists[key] = ConfigFile(self.manifest(*key), self._files, error=JobBookError)
        return listed

    def job_directory(self, account_id: str, name: str) -> str:
        """Where a job's files are: ``<data>/exports/<account>/<job>``."""
        return os.path.join(self.directory, account_id, name)

    def manifest(self, account_id: str, name: str) -> str:
        """The list of a job's files, in its directory (never one of them)."""
        return os.path.join(self.job_directory(account_id, name), MANIFEST)

    def jobs(self, account_id: str | None = None) -> list[ExportJob]:
        """The jobs of ``account_id`` (of every account when None), by account and name."""
        return self._book.entries(account_id)

    def get(self, account_id: str, name: str) -> ExportJob | None:
        return self._book.get(account_id, name)

    def files(self, account_id: str, name: str) -> list[ExportedFile]:
        """The job's complete files, newest first."""
        return list(self._made.get((account_id, name), ()))

    def set(self, job: ExportJob) -> ExportJob:
        """Create or replace ``job`` (by account and name), durably; a replaced job keeps its
        run times and its files."""
        with self._book.lock:
            previous = self._book.get(*job.key)
            if previous is not None:
                job = replace(
                    job, last_run_at_ms=previous.last_run_at_ms, running_since_ms=previous.running_since_ms
                )
            job = self._book.set(job)
            self._made.setdefault(job.key, [])
            return job

    def delete(self, account_id: str, name: str) -> bool:
        """False when the account has no job of that name; its directory (its files and their
        list) is the caller's to remove."""
        with self._book.lock:
            key = (account_id, name)
            if not self._book.delete(account_id, name):
                return False
            self._made.pop(key, None)
            self._lists.pop(key, None)
            return True

    def started(self, key: Key, at_ms: int) -> ExportJob | None:
        """Note durably that a run of the job began (None: the job is gone)."""
        with self._book.lock:
            job = self._book.get(*key)
            if job is None:
                return None
            job = replace(job, running_since_ms=at_ms)
            self._book.write({**self._book.by_key(), key: job})
            return job

    def completed(self, key: Key, made: ExportedFile | None, at_ms: int) -> None:
        """List the run's file (None: the run made none), then note when the job last ran."""
        with self._book.lock:
            job = self._book.get(*key)
            if job is None:
                return
            files = self._made.get(key, [])
            if made is not None:
                files = [made, *files]
                self._save_files(key, files)
            jobs = {**self._book.by_key(), key: replace(job, last_run_at_ms=at_ms, running_since_ms=None)}
            self._book.save(jobs)
            # Readers see the file listed and the run done at once.
            self._made = {**self._made, key: files}
            self._book.hold(jobs)

    def forget(self, key: Key, name: str) -> None:
        """Unlist one file of the job (it expired)."""
        with self._book.lock:
            if self._book.get(*key) is None:
                return
            made = [f for f in self._made.get(key, []) if f.name != name]
            self._save_files(key, made)
            self._made = {**self._made, key: made}

    def _save_files(self, key: Key, made: list[ExportedFile]) -> None:
        self._list(key).store({"files": [_file_json(f) for f in made]})
