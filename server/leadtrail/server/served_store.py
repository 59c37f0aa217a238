"""The open store as every servicer shares it: the log, the thread pools around it, the
live feed, the API keys and the fingerprint key.

Appends go through the engine's group committer (the future resolves once the
group is durable) and never wait on a thread of ours; every read that touches
disk runs on the ``reads`` pool so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from leadtrail.storage import EventLog

from .auth import Gate
from .feed import Feed
from .keys import KeyStore
from .privacy import Fingerprints
from .read_audit import ReadAudit
from .subscription import HeldBytes

if TYPE_CHECKING:  # the alerts package serves on top of this module
    from .alerts import Alerting, RuleBook
    from .exports import ExportScheduler
    from .sinks import Sinks

T = TypeVar("T")


@dataclass
class ServedStore:
    log: EventLog
    reads: ThreadPoolExecutor
    feed: Feed
    ingest: ThreadPoolExecutor
    keys: KeyStore
    fingerprints: Fingerprints
    gate: Gate | None = None
    """Set by the server once made: streams pace their messages by a key's rate limit."""
    closing: bool = False
    held: HeldBytes = field(default_factory=HeldBytes)
    """What every subscription together holds in memory (see ``subscription``)."""
    rules: RuleBook | None = None
    """Every account's alert rules (the process that owns the writer only)."""
    alerting: Alerting | None = None
    """The alert evaluator (the process that owns the writer only)."""
    sinks: Sinks | None = None
    """Every account's sinks at work (the process that owns the writer only)."""
    exports: ExportScheduler | None = None
    """The export jobs at work (the process that owns the writer only)."""
    operator_account: str = "default"
    """The account whose admin keys may take a backup (``serve --operator-account``)."""

    def __post_init__(self) -> None:
        self.audit = ReadAudit(self.log)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the read pool."""
        return await asyncio.get_running_loop().run_in_executor(self.reads, fn, *args)
