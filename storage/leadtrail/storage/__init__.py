"""LeadTrail's storage engine: a segmented, CRC-framed, append-only event log
with zstd-compressed snapshots and LMDB secondary indexes.

``EventLog.open(path)`` is the entry point; FORMAT.md (beside the package)
specifies the bytes on disk.
"""

from .backup import BackupError, Manifest, RestoreTargetError, Snapshot
from .chain import GENESIS, SYSTEM_ACCOUNT, ChainPoint
from .chain_verify import ChainReport, GivenCheckpoint
from .erasure import ERASED, ErasureReport
from .errors import (
    ClosedError,
    CorruptionError,
    DataDirectoryError,
    InvalidArgumentError,
    InvalidCursorError,
    LegalHoldError,
    LimitExceededError,
    MetadataFileError,
    NotFoundError,
    NotWritableError,
    StorageError,
    ValidationError,
)
from .event import (
    AUDIT_FLOW,
    AUDIT_TYPE_PREFIX,
    DEFAULT_ACCOUNT,
    SERVER_TYPE_PREFIXES,
    AppendResult,
    Event,
    EventFields,
    EventFilter,
    Outcome,
    Page,
    Progress,
    RetentionPolicy,
    RetentionReport,
    Stats,
    VerifyReport,
)
from .field_rules import FieldRule, RuleError, RuleOp
from .fields import FieldPolicy
from .fingerprints import LeadMatch
from .fs import Files
from .log import EventLog
from .options import FsyncPolicy, Options
from .signing import SignedCheckpoint, checkpoint_bytes, verify_checkpoint
from .ulid import new_event_id
from .wirebody import StoredEvent

__all__ = [
    "AUDIT_FLOW",
    "AUDIT_TYPE_PREFIX",
    "DEFAULT_ACCOUNT",
    "ERASED",
    "GENESIS",
    "SERVER_TYPE_PREFIXES",
    "SYSTEM_ACCOUNT",
    "AppendResult",
    "BackupError",
    "ChainPoint",
    "ChainReport",
    "ClosedError",
    "CorruptionError",
    "DataDirectoryError",
    "ErasureReport",
    "Event",
    "EventFields",
    "EventFilter",
    "EventLog",
    "FieldPolicy",
    "FieldRule",
    "Files",
    "FsyncPolicy",
    "GivenCheckpoint",
    "InvalidArgumentError",
    "InvalidCursorError",
    "LeadMatch",
    "LegalHoldError",
    "LimitExceededError",
    "Manifest",
    "MetadataFileError",
    "NotFoundError",
    "NotWritableError",
    "Options",
    "Outcome",
    "Page",
    "Progress",
    "RestoreTargetError",
    "RetentionPolicy",
    "RetentionReport",
    "RuleError",
    "RuleOp",
    "SignedCheckpoint",
    "Snapshot",
    "Stats",
    "StorageError",
    "StoredEvent",
    "ValidationError",
    "VerifyReport",
    "checkpoint_bytes",
    "new_event_id",
    "verify_checkpoint",
]
