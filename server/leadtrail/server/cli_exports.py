"""``leadtrail exports set|list|rm|run|files|download``: a running server's scheduled exports,
through the SDK.

Imported only when one of them runs (as ``cli_remote``, whose connection it shares).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from leadtrail.client import EventFilter, ExportFile, ExportJob

from .cli_listing import filter_json, filter_text, print_listing
from .cli_output import iso_ms
from .cli_remote import connect, filter_kwargs
from .term import human_bytes

RUN_TIMEOUT_S = 3600.0


def job_of(args: argparse.Namespace) -> ExportJob:
    """The job the ``exports set`` flags describe."""
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else ()
    return ExportJob(
        args.name,
        format=args.format,
        every_s=args.every,
        lookback_s=args.lookback,
        keep_days=args.keep_days,
        filter=EventFilter(**filter_kwargs(args)),
        fields=fields,
        masked=args.masked,
    )


def describe(job: ExportJob) -> str:
    """One line an operator reads: what the job writes, how often, how long it is kept."""
    columns = f" ({', '.join(job.fields)})" if job.fields else ""
    return (
        f"{job.format}{columns} of {filter_text(job.filter)} in the last {job.lookback_s} s, "
        f"every {job.every_s} s, kept {job.keep_days} days{', masked' if job.masked else ''}"
    )


def job_json(job: ExportJob) -> dict[str, Any]:
    return {
        "name": job.name,
        "format": job.format,
        "fields": list(job.fields),
        "filter": filter_json(job.filter),
        "every_s": job.every_s,
        "lookback_s": job.lookback_s,
        "keep_days": job.keep_days,
        "masked": job.masked,
        "set_at": iso_ms(job.set_at),
        "last_run_at": iso_ms(job.last_run_at),
        "next_run_at": iso_ms(job.next_run_at),
    }


def file_json(made: ExportFile) -> dict[str, Any]:
    return {
        "name": made.name,
        "bytes": made.size,
        "rows": made.rows,
        "sha256": made.sha256,
        "created_at": iso_ms(made.created_at),
        "expires_at": iso_ms(made.expires_at),
    }


def cmd_exports_set(args: argparse.Namespace) -> int:
    job = job_of(args)
    with connect(args) as client:
        stored = client.set_export_job(job)
    print(f"export job {stored.name} set: {describe(stored)}; next run {iso_ms(stored.next_run_at)}")
    return 0


def cmd_exports_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        jobs = client.list_export_jobs()
    print_listing(
        args.format, jobs, job_json, "no export jobs", ("NAME", "JOB", "LAST RUN", "NEXT RUN"), _job_row
    )
    return 0


def _job_row(j: ExportJob) -> tuple[str, ...]:
    return (j.name, describe(j), iso_ms(j.last_run_at) or "-", iso_ms(j.next_run_at))


def cmd_exports_rm(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_export_job(args.name)
    print(f"export job {args.name} deleted with its files")
    return 0


def cmd_exports_run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        # A run writes a whole window: it may take longer than a call's usual deadline (and goes on
        # in the server if this command is interrupted; its file is then listed by 'exports files').
        client.timeout = RUN_TIMEOUT_S
        made = client.run_export_job(args.name)
    print(
        f"export job {args.name} wrote {made.name}: {made.rows} events, {human_bytes(made.size)}, "
        f"sha256 {made.sha256}"
    )
    return 0


def cmd_exports_files(args: argparse.Namespace) -> int:
    with connect(args) as client:
        files = client.list_export_files(args.job)
    header = ("FILE", "EVENTS", "SIZE", "CREATED", "EXPIRES", "SHA256")
    nothing = f"export job {args.job} has no files yet"
    print_listing(args.format, files, file_json, nothing, header, _file_row, right=(1, 2))
    return 0


def _file_row(f: ExportFile) -> tuple[str, ...]:
    return (
        f.name,
        str(f.rows),
        human_bytes(f.size),
        iso_ms(f.created_at),
        iso_ms(f.expires_at),
        f.sha256[:16],
    )


def cmd_exports_download(args: argparse.Namespace) -> int:
    output = args.output or os.path.basename(args.file)
    with connect(args) as client:
        if output == "-":
            client.download_export_file_to(args.job, args.file, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        # Under a temporary name until complete: an interrupted download never looks finished.
        partial = f"{output}.partial"
        try:
            written = client.download_export_file_to(args.job, args.file, partial)
            os.replace(partial, output)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    print(f"downloaded {args.file} ({human_bytes(written)}) to {output}")
    return 0
