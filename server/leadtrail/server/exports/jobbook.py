"""The export jobs of every account and the files their runs made.

``<data>/exports/jobs.json`` holds every account's jobs (their definitions and run
times); each job's files live in ``<data>/exports/<account>/<job>/`` (account and job
names are path-safe by their patterns) beside the list of them, ``files.json`` (a
job's list is written on its runs and expiries alone, whatever the other jobs hold).
Each file is replaced atomically through the storage ``Files`` seam.

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
import threading
from dataclasses import replace
from typing import Any

import orjson

from leadtrail.storage import EventFilter, Files, Outcome

from .model import ExportedFile, ExportJob, Format

DIRECTORY = "exports"
FILE = "jobs.json"
MANIFEST = "files.json"
"""A job's list of its files, in the job's directory."""
FORMAT = 1
MAX_JOBS_PER_ACCOUNT = 100
TMP_SUFFIX = ".tmp"


class JobBookError(Exception):
    """The jobs file cannot be read; the message names the file and the problem."""


class TooManyJobsError(Exception):
    """An account already holds ``MAX_JOBS_PER_ACCOUNT`` jobs and a new one was set."""


def _filter_json(f: EventFilter) -> dict[str, Any]:
    return {
        "types": list(f.types),
        "lead_id": f.lead_id,
        "flow_id": f.flow_id,
        "entity_id": f.entity_id,
        "outcomes": [int(o) for o in f.outcomes],
        "start_ms": f.start_ms,
        "end_ms": f.end_ms,
        "entity_scope": list(f.entity_scope),
        "flow_scope": list(f.flow_scope),
        "hidden_types": list(f.hidden_types),
    }


def _filter_from(account_id: str, raw: dict[str, Any]) -> EventFilter:
    return EventFilter(
        account_id=account_id,
        types=tuple(raw.get("types", ())),
        lead_id=raw.get("lead_id", ""),
        flow_id=raw.get("flow_id", ""),
        entity_id=raw.get("entity_id", ""),
        outcomes=tuple(Outcome(o) for o in raw.get("outcomes", ())),
        start_ms=raw.get("start_ms"),
        end_ms=raw.get("end_ms"),
        entity_scope=tuple(raw.get("entity_scope", ())),
        flow_scope=tuple(raw.get("flow_scope", ())),
        hidden_types=tuple(raw.get("hidden_types", ())),
    )


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
        "filter": _filter_json(job.filter),
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
        filter=_filter_from(account, raw["filter"]),
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


Key = tuple[str, str]


class JobBook:
    """Every account's export jobs and their files, in memory and on disk."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, FILE)
        self._files = files or Files()
        self._lock = threading.Lock()
        self._jobs: dict[Key, ExportJob] = {}
        self._made: dict[Key, list[ExportedFile]] = {}
        """Each job's files, newest first."""
        self._load()

    def _load(self) -> None:
        raw = _read_json(self.path)
        if raw is None:
            return
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            jobs = [_job_from(entry) for entry in raw["jobs"]]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise JobBookError(f"{self.path}: {e}") from None
        for job in jobs:
            self._jobs[job.key] = job
            self._made[job.key] = self._load_files(job.key)

    def _load_files(self, key: Key) -> list[ExportedFile]:
        path = self.manifest(*key)
        raw = _read_json(path)
        if raw is None:
            return []
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            made = [_file_from(f) for f in raw["files"]]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise JobBookError(f"{path}: {e}") from None
        return sorted(made, key=lambda f: f.created_at_ms, reverse=True)

    def job_directory(self, account_id: str, name: str) -> str:
        """Where a job's files are: ``<data>/exports/<account>/<job>``."""
        return os.path.join(self.directory, account_id, name)

    def manifest(self, account_id: str, name: str) -> str:
        """The list of a job's files, in its directory (never one of them)."""
        return os.path.join(self.job_directory(account_id, name), MANIFEST)

    def jobs(self, account_id: str | None = None) -> list[ExportJob]:
        """The jobs of ``account_id`` (of every account when None), by account and name."""
        chosen = (j for j in self._jobs.values() if account_id is None or j.account_id == account_id)
        return sorted(chosen, key=lambda j: j.key)

    def get(self, account_id: str, name: str) -> ExportJob | None:
        return self._jobs.get((account_id, name))

    def files(self, account_id: str, name: str) -> list[ExportedFile]:
        """The job's complete files, newest first."""
        return list(self._made.get((account_id, name), ()))

    def set(self, job: ExportJob) -> ExportJob:
        """Create or replace ``job`` (by account and name), durably; a replaced job keeps its
        run times and its files."""
        with self._lock:
            previous = self._jobs.get(job.key)
            if previous is None:
                held = sum(1 for key in self._jobs if key[0] == job.account_id)
                if held >= MAX_JOBS_PER_ACCOUNT:
                    raise TooManyJobsError(
                        f"account {job.account_id!r} holds {held} export jobs, the most it may hold "
                        f"({MAX_JOBS_PER_ACCOUNT}); delete one first"
                    )
            else:
                job = replace(
                    job, last_run_at_ms=previous.last_run_at_ms, running_since_ms=previous.running_since_ms
                )
            self._write_jobs({**self._jobs, job.key: job})
            self._made.setdefault(job.key, [])
            return job

    def delete(self, account_id: str, name: str) -> bool:
        """False when the account has no job of that name; its directory (its files and their
        list) is the caller's to remove."""
        with self._lock:
            key = (account_id, name)
            if key not in self._jobs:
                return False
            jobs = dict(self._jobs)
            del jobs[key]
            self._write_jobs(jobs)
            self._made.pop(key, None)
            return True

    def started(self, key: Key, at_ms: int) -> ExportJob | None:
        """Note durably that a run of the job began (None: the job is gone)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return None
            job = replace(job, running_since_ms=at_ms)
            self._write_jobs({**self._jobs, key: job})
            return job

    def completed(self, key: Key, made: ExportedFile | None, at_ms: int) -> None:
        """List the run's file (None: the run made none), then note when the job last ran."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return
            files = self._made.get(key, [])
            if made is not None:
                files = [made, *files]
                self._save_files(key, files)
            jobs = {**self._jobs, key: replace(job, last_run_at_ms=at_ms, running_since_ms=None)}
            self._save_jobs(jobs)
            # Readers see the file listed and the run done at once.
            self._made = {**self._made, key: files}
            self._jobs = jobs

    def forget(self, key: Key, name: str) -> None:
        """Unlist one file of the job (it expired)."""
        with self._lock:
            if key not in self._jobs:
                return
            self._write_files(key, [f for f in self._made.get(key, []) if f.name != name])

    def _write_jobs(self, jobs: dict[Key, ExportJob]) -> None:
        self._save_jobs(jobs)
        self._jobs = jobs

    def _write_files(self, key: Key, made: list[ExportedFile]) -> None:
        self._save_files(key, made)
        self._made = {**self._made, key: made}

    def _save_jobs(self, jobs: dict[Key, ExportJob]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        ordered = sorted(jobs.values(), key=lambda j: j.key)
        data = orjson.dumps(
            {"format": FORMAT, "jobs": [_job_json(j) for j in ordered]}, option=orjson.OPT_INDENT_2
        )
        self._files.write_file_atomically(self.path, data, TMP_SUFFIX)

    def _save_files(self, key: Key, made: list[ExportedFile]) -> None:
        os.makedirs(self.job_directory(*key), exist_ok=True)
        data = orjson.dumps(
            {"format": FORMAT, "files": [_file_json(f) for f in made]}, option=orjson.OPT_INDENT_2
        )
        self._files.write_file_atomically(self.manifest(*key), data, TMP_SUFFIX)


def _read_json(path: str) -> Any:
    """The file's JSON, None when there is no file."""
    try:
        with open(path, "rb") as f:
            return orjson.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise JobBookError(f"{path}: {e}") from None
