"""LeadTrail client SDK.

``Client`` (blocking) and ``AsyncClient`` (asyncio) wrap every LeadTrail RPC
with typed results; ``BackgroundAppender`` is the non-blocking write path.
Needs only grpcio and protobuf::

    from leadtrail.client import Client, Event, Outcome

    with Client("127.0.0.1:50051") as client:
        client.append(Event("source.submitted", lead_id="lead-1", flow_id="flow-1",
                            outcome=Outcome.SUCCESS))
        for event in client.query(lead_id="lead-1"):
            ...
"""

from ._aio import AsyncClient, AsyncSubscription
from ._appender import BackgroundAppender
from ._client import Client, Subscription
from ._errors import (
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    LeadTrailError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    ResourceExhaustedError,
    ServiceError,
    SignatureError,
    TLSError,
    UnauthenticatedError,
    UnavailableError,
    handle_rpc_error,
)
from ._model import (
    AggregateRow,
    Alert,
    AlertKind,
    AlertRule,
    AppendResult,
    CaughtUp,
    ChangeKind,
    Checkpoint,
    ErasureReport,
    Event,
    EventFilter,
    ExportFile,
    ExportJob,
    FieldChange,
    FieldPolicy,
    FilesTarget,
    GroupBy,
    LeadMatch,
    NatsTarget,
    Outcome,
    RetentionPolicy,
    RetentionReport,
    SignedCheckpoint,
    Sink,
    SinkStatus,
    Stats,
    Timeline,
    TimelineStep,
    VerifyReport,
    WebhookTarget,
)
from ._receipts import Receipts
from ._rules import FieldRule, RuleOp, parse_rule
from ._tls import tls_credentials
from ._ulid import new_event_id
from ._warnings import AppendConflictWarning

__all__ = [
    "AggregateRow",
    "Alert",
    "AlertKind",
    "AlertRule",
    "AppendConflictWarning",
    "AppendResult",
    "AsyncClient",
    "AsyncSubscription",
    "BackgroundAppender",
    "CancelledError",
    "CaughtUp",
    "ChangeKind",
    "Checkpoint",
    "Client",
    "DeadlineExceededError",
    "ErasureReport",
    "Event",
    "EventFilter",
    "ExportFile",
    "ExportJob",
    "FailedPreconditionError",
    "FieldChange",
    "FieldPolicy",
    "FieldRule",
    "FilesTarget",
    "GroupBy",
    "InvalidArgumentError",
    "LeadMatch",
    "LeadTrailError",
    "NatsTarget",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "QueueFullError",
    "Receipts",
    "ResourceExhaustedError",
    "RetentionPolicy",
    "RetentionReport",
    "RuleOp",
    "ServiceError",
    "SignatureError",
    "SignedCheckpoint",
    "Sink",
    "SinkStatus",
    "Stats",
    "Subscription",
    "TLSError",
    "Timeline",
    "TimelineStep",
    "UnauthenticatedError",
    "UnavailableError",
    "VerifyReport",
    "WebhookTarget",
    "handle_rpc_error",
    "new_event_id",
    "parse_rule",
    "tls_credentials",
]
