"""What an export job is, inside the server: the validated form of ``ExportJob``, and the
files its runs made.

The wire form (``leadtrail.v1.ExportJob``) is converted and checked once, when a job
is set (``rules.py``); the job book, the scheduler and the listings work on these
values, never on protobuf messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from leadtrail.storage import AUDIT_TYPE_PREFIX, EventFilter

EXPORT_FLOW = "exports"
"""The flow of every event an export job writes."""
EXPORT_COMPLETED = "export.completed"
EXPORT_EXPIRED = "export.expired"
AUDIT_EXPORT_DOWNLOADED = AUDIT_TYPE_PREFIX + "export_downloaded"
JOB_LEAD_PREFIX = "export:"
"""``lead_id`` of a job's events: ``export:<name>`` (a job's runs are its timeline)."""

DAY_MS = 86_400_000


class Format(enum.IntEnum):
    """The wire numbers of ``leadtrail.v1.ExportFormat`` a job may write."""

    JSONL = 1
    CSV = 2
    PARQUET = 3

    @property
    def label(self) -> str:
        """The format as the job book and file names spell it: ``jsonl``, ``csv``, ``parquet``."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class ExportJob:
    """One account's job. ``filter`` holds the account and the setting key's scope; a masked
    job's filter also hides what an analyst may not see."""

    account_id: str
    name: str
    filter: EventFilter
    format: Format
    fields: tuple[str, ...]
    every_s: int
    lookback_s: int
    keep_days: int
    masked: bool
    set_at_ms: int
    last_run_at_ms: int | None = None
    running_since_ms: int | None = None
    """Set (durably) while a run writes its file: a run cut short by a crash is redone at start."""

    @property
    def key(self) -> tuple[str, str]:
        return self.account_id, self.name

    @property
    def next_run_at_ms(self) -> int:
        """A job first runs ``every_s`` after it was set, then ``every_s`` after each run; a run
        missed while the server was down is due at once (and runs once)."""
        return (
            self.last_run_at_ms if self.last_run_at_ms is not None else self.set_at_ms
        ) + self.every_s * 1000


@dataclass(frozen=True, slots=True)
class ExportedFile:
    """A complete file of a job: listed only once its bytes are durable under its final name."""

    name: str
    bytes: int
    rows: int
    sha256: str
    created_at_ms: int
    expires_at_ms: int
    from_ms: int
    to_ms: int
