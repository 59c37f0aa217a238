"""Scheduled exports: jobs that write files of events inside the server."""

from .jobbook import JobBook, JobBookError
from .model import AUDIT_EXPORT_DOWNLOADED, EXPORT_COMPLETED, EXPORT_EXPIRED, ExportedFile, ExportJob, Format
from .scheduler import ExportScheduler

__all__ = [
    "AUDIT_EXPORT_DOWNLOADED",
    "EXPORT_COMPLETED",
    "EXPORT_EXPIRED",
    "ExportJob",
    "ExportScheduler",
    "ExportedFile",
    "Format",
    "JobBook",
    "JobBookError",
]
