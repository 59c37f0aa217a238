"""The five services of ``leadtrail.v1`` over one served store, composed.

Each servicer validates, calls and converts; the rules they share live in their
own modules: the caller's scope (``caller``), the read audit (``read_audit``),
timelines, exports, aggregates and subscriptions.
"""

from __future__ import annotations

from types import ModuleType

from leadtrail.v1 import admin_pb2, alerts_pb2, query_pb2, sinks_pb2, stream_pb2, submission_pb2

from .admin import AdminService
from .alerts.service import AlertService
from .query import QueryService
from .served_store import ServedStore
from .sinks.service import SinkService
from .stream import StreamService
from .submission import SubmissionService

__all__ = [
    "AdminService",
    "AlertService",
    "QueryService",
    "ServedStore",
    "SinkService",
    "StreamService",
    "SubmissionService",
    "servicers",
]


def servicers(store: ServedStore) -> list[tuple[object, ModuleType]]:
    """Each servicer with the generated module that describes its service."""
    return [
        (SubmissionService(store), submission_pb2),
        (QueryService(store), query_pb2),
        (StreamService(store), stream_pb2),
        (AdminService(store), admin_pb2),
        (AlertService(store), alerts_pb2),
        (SinkService(store), sinks_pb2),
    ]
