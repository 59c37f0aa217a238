"""The export jobs of every account and the files their runs made: ``<data>/exports/jobs.json``.

One file for all accounts, replaced atomically on every change (jobs change and run
rarely: at most once a minute each). It is the authority on which files exist: a
file is listed once its bytes are durable under their final name and this book says
so; a file in a job's directory that the book does not list (a run cut short by a
crash) is removed at start (``unlisted``). Each job's files live in
``<data>/exports/<account>/<job>/`` (account and job names are path-safe by their
patterns).

Every method writes the file on the calling thread (the read pool); a lock keeps the
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


def _job_json(job: ExportJob, files: list[ExportedFile]) -> dict[str, Any]:
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
        "files": [_file_json(f) for f in files],
    }


def _job_from(raw: dict[str, Any]) -> tuple[ExportJob, list[ExportedFile]]:
    account = raw["account_id"]
    job = ExportJob(
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
    return job, [_file_from(f) for f in raw.get("files", ())]


Key = tuple[str, str]


class JobBook:
    """Every account's export jobs and their files, in memory and in one file."""

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
        try:
            with open(self.path, "rb") as f:
                raw = orjson.loads(f.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise JobBookError(f"{self.path}: {e}") from None
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            for entry in raw["jobs"]:
                job, made = _job_from(entry)
                self._jobs[job.key] = job
                self._made[job.key] = sorted(made, key=lambda f: f.created_at_ms, reverse=True)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise JobBookError(f"{self.path}: {e}") from None

    def job_directory(self, account_id: str, name: str) -> str:
        """Where a job's files are: ``<data>/exports/<account>/<job>``."""
        return os.path.join(self.directory, account_id, name)

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
            self._change({job.key: job}, {})
            return job

    def delete(self, account_id: str, name: str) -> bool:
        """False when the account has no job of that name; its files are the caller's to remove."""
        with self._lock:
            if (account_id, name) not in self._jobs:
                return False
            self._change({}, {}, dropped=(account_id, name))
            return True

    def started(self, key: Key, at_ms: int) -> ExportJob | None:
        """Note durably that a run of the job began (None: the job is gone)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return None
            job = replace(job, running_since_ms=at_ms)
            self._change({key: job}, {})
            return job

    def completed(self, key: Key, made: ExportedFile | None, at_ms: int) -> None:
        """List the run's file (None: the run made none) and note when the job last ran."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return
            job = replace(job, last_run_at_ms=at_ms, running_since_ms=None)
            files = self._made.get(key, [])
            if made is not None:
                files = [made, *files]
            self._change({key: job}, {key: files})

    def forget(self, key: Key, name: str) -> None:
        """Unlist one file of the job (it expired)."""
        with self._lock:
            if key not in self._jobs:
                return
            files = [f for f in self._made.get(key, []) if f.name != name]
            self._change({}, {key: files})

    def _change(
        self,
        jobs: dict[Key, ExportJob],
        made: dict[Key, list[ExportedFile]],
        dropped: Key | None = None,
    ) -> None:
        new_jobs = {**self._jobs, **jobs}
        new_made = {**self._made, **made}
        if dropped is not None:
            new_jobs.pop(dropped, None)
            new_made.pop(dropped, None)
        os.makedirs(self.directory, exist_ok=True)
        ordered = sorted(new_jobs.values(), key=lambda j: j.key)
        data = orjson.dumps(
            {"format": FORMAT, "jobs": [_job_json(j, new_made.get(j.key, [])) for j in ordered]},
            option=orjson.OPT_INDENT_2,
        )
        self._files.write_file_atomically(self.path, data, TMP_SUFFIX)
        self._jobs = new_jobs
        self._made = new_made
