"""What a sink is, inside the server: the validated form of ``leadtrail.v1.Sink``.

The wire form is converted and checked once, when a sink is set (``rules.py``);
everything downstream (the sink book, the running consumer, the targets) works on
these values, never on protobuf messages. A target is built from its spec alone
(``NatsTarget(spec, account_id)``, ``WebhookTarget(spec, sink_name)``,
``FilesTarget(spec, directory)``).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from leadtrail.storage import EventFilter

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""A sink's name, unique per account."""

NATS_DEFAULT_PREFIX = "leadtrail"
NATS_DEFAULT_REPLICAS = 1
NATS_MAX_REPLICAS = 5
NATS_DEFAULT_DUPLICATE_WINDOW_S = 2 * 3600
NATS_MAX_SERVERS = 16

WEBHOOK_DEFAULT_BATCH = 100
WEBHOOK_MAX_BATCH = 1000
WEBHOOK_DEFAULT_MAX_WAIT_MS = 1000
WEBHOOK_MAX_WAIT_MS = 60_000
WEBHOOK_TIMEOUT_S = 10.0
"""How long one POST may take before it counts as failed (a hanging receiver)."""

FILES_DEFAULT_ROTATE_EVENTS = 10_000
FILES_MAX_ROTATE_EVENTS = 1_000_000
FILES_DEFAULT_ROTATE_SECONDS = 60
FILES_MAX_ROTATE_SECONDS = 24 * 3600


class FileFormat(enum.IntEnum):
    """The wire numbers of ``leadtrail.v1.ExportFormat`` a files target writes."""

    JSONL = 1
    CSV = 2
    PARQUET = 3

    @property
    def suffix(self) -> str:
        """The file name's extension: ``jsonl``, ``csv``, ``parquet``."""
        return self.name.lower()


class TargetKind(enum.Enum):
    """The key of the target factory, and how the CLI and stats name a sink's target."""

    NATS = "nats"
    WEBHOOK = "webhook"
    FILES = "files"


@dataclass(frozen=True, slots=True)
class NatsSpec:
    servers: tuple[str, ...]
    """nats://host:port, at least one."""
    stream: str
    subject_prefix: str = NATS_DEFAULT_PREFIX
    replicas: int = NATS_DEFAULT_REPLICAS
    duplicate_window_s: int = NATS_DEFAULT_DUPLICATE_WINDOW_S

    kind = TargetKind.NATS


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    url: str
    secret: str = field(default="", repr=False)
    """Write-only over the API: kept for signing, never answered (nor printed)."""
    batch_size: int = WEBHOOK_DEFAULT_BATCH
    max_wait_ms: int = WEBHOOK_DEFAULT_MAX_WAIT_MS
    timeout_s: float = WEBHOOK_TIMEOUT_S

    kind = TargetKind.WEBHOOK


@dataclass(frozen=True, slots=True)
class FilesSpec:
    directory: str
    """As set: relative to the account's sink file root, or absolute under a configured root.
    The target is given the resolved directory separately."""
    format: FileFormat = FileFormat.JSONL
    rotate_events: int = FILES_DEFAULT_ROTATE_EVENTS
    rotate_seconds: int = FILES_DEFAULT_ROTATE_SECONDS
    fields: tuple[str, ...] = ()
    """CSV columns, or the Parquet ``lead.<name>`` columns; empty: the defaults."""

    kind = TargetKind.FILES


TargetSpec = NatsSpec | WebhookSpec | FilesSpec


@dataclass(frozen=True, slots=True)
class SinkSpec:
    account_id: str
    name: str
    filter: EventFilter
    """The events handed on (its ``account_id`` is the sink's)."""
    target: TargetSpec
    masked: bool = False
    start_after: int = 0
    """The sink hands on events after this position when it is new (resolved when set:
    from_start 0, from_end the log's last position, after_position as given)."""
    set_at_ms: int = 0
    revision: int = 0
    """Given by the sink book, one more on every set: a replaced sink is restarted."""

    @property
    def key(self) -> tuple[str, str]:
        return self.account_id, self.name

    @property
    def consumer_name(self) -> str:
        """The durable consumer's name (its position file) for this sink: ``sink.<account>.<name>``
        (dots appear in neither), or a digest of both when that is longer than a consumer name."""
        name = f"sink.{self.account_id}.{self.name}"
        if len(name) <= 128:
            return name
        return "sink." + hashlib.sha256(f"{self.account_id}\0{self.name}".encode()).hexdigest()
