"""An ``ExportJob`` message checked and converted into the server's ``ExportJob``, and back.

Every problem is an INVALID_ARGUMENT naming the field, what is wrong and the limit;
nothing is stored on error.
"""

from __future__ import annotations

from dataclasses import replace

from leadtrail.server.config_filters import filter_message
from leadtrail.server.config_names import NAME
from leadtrail.server.config_names import check_name as _check_name
from leadtrail.server.convert import ms_to_timestamp
from leadtrail.server.export import ExportShape
from leadtrail.server.status import invalid
from leadtrail.storage import AUDIT_TYPE_PREFIX, EventFilter
from leadtrail.v1 import exports_pb2, query_pb2

from .model import DAY_MS, ExportedFile, ExportJob, Format

NAME_PATTERN = NAME
MIN_EVERY_S = 60
MAX_EVERY_S = 366 * 86_400
MAX_LOOKBACK_S = 366 * 86_400
MIN_KEEP_DAYS = 1
MAX_KEEP_DAYS = 3650
MAX_FIELDS = 100
MAX_FILES_PER_JOB = 10_000
"""A job's list of files is rewritten on each run: bounded (a job every minute keeps 6 days)."""


def check_name(field: str, name: str) -> None:
    _check_name(name, field, noun="job")


def job_from_message(message: exports_pb2.ExportJob, scoped: EventFilter, now_ms: int) -> ExportJob:
    """``scoped`` is the job's filter as the setting caller's scope makes it (``Caller.filter``)."""
    check_name("name", message.name)
    fmt = _format(message.format)
    fields = _fields(fmt, list(message.fields))
    if message.every_s < MIN_EVERY_S or message.every_s > MAX_EVERY_S:
        raise invalid("every_s", f"{message.every_s} is outside {MIN_EVERY_S}..{MAX_EVERY_S} seconds")
    lookback = message.lookback_s or message.every_s
    if lookback > MAX_LOOKBACK_S:
        raise invalid("lookback_s", f"{lookback} is over the limit of {MAX_LOOKBACK_S} seconds")
    if message.keep_days < MIN_KEEP_DAYS or message.keep_days > MAX_KEEP_DAYS:
        raise invalid("keep_days", f"{message.keep_days} is outside {MIN_KEEP_DAYS}..{MAX_KEEP_DAYS} days")
    kept = message.keep_days * 86_400 // message.every_s
    if kept > MAX_FILES_PER_JOB:
        raise invalid(
            "keep_days",
            f"{message.keep_days} days of a run every {message.every_s} s keep {kept} files, over the limit "
            f"of {MAX_FILES_PER_JOB} per job",
        )
    f = scoped
    if message.masked and AUDIT_TYPE_PREFIX + "*" not in f.hidden_types:
        # What an analyst key sees: no audit records.
        f = replace(f, hidden_types=(*f.hidden_types, AUDIT_TYPE_PREFIX + "*"))
    return ExportJob(
        account_id=scoped.account_id,
        name=message.name,
        filter=f,
        format=fmt,
        fields=fields,
        every_s=message.every_s,
        lookback_s=lookback,
        keep_days=message.keep_days,
        masked=message.masked,
        set_at_ms=now_ms,
    )


def _format(value: int) -> Format:
    try:
        return Format(value)
    except ValueError:
        raise invalid(
            "format", "EXPORT_FORMAT_JSONL, EXPORT_FORMAT_CSV or EXPORT_FORMAT_PARQUET is required"
        ) from None


def _fields(fmt: Format, fields: list[str]) -> tuple[str, ...]:
    if len(fields) > MAX_FIELDS:
        raise invalid("fields", f"{len(fields)} fields, over the limit of {MAX_FIELDS}")
    if fmt is Format.PARQUET:
        from .parquet_files import checked_columns  # pyarrow loads only for Parquet jobs

        return checked_columns(fields)
    # JSONL and CSV: the rules of the Export RPC, in one place.
    ExportShape.of(query_pb2.ExportRequest(format=int(fmt), fields=fields))  # type: ignore[arg-type]
    return tuple(fields)


def message_from_job(job: ExportJob) -> exports_pb2.ExportJob:
    message = exports_pb2.ExportJob(
        name=job.name,
        filter=filter_message(job.filter),
        format=int(job.format),  # type: ignore[arg-type]
        fields=job.fields,
        every_s=job.every_s,
        lookback_s=job.lookback_s,
        keep_days=job.keep_days,
        masked=job.masked,
    )
    ms_to_timestamp(job.set_at_ms, message.set_at)
    if job.last_run_at_ms is not None:
        ms_to_timestamp(job.last_run_at_ms, message.last_run_at)
    ms_to_timestamp(job.next_run_at_ms, message.next_run_at)
    return message


def message_from_file(made: ExportedFile) -> exports_pb2.ExportFile:
    message = exports_pb2.ExportFile(name=made.name, bytes=made.bytes, rows=made.rows, sha256=made.sha256)
    ms_to_timestamp(made.created_at_ms, message.created_at)
    ms_to_timestamp(made.expires_at_ms, message.expires_at)
    return message


def expires_at_ms(job: ExportJob, created_at_ms: int) -> int:
    return created_at_ms + job.keep_days * DAY_MS
