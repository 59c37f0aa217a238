"""AdminService.Backup: an online backup streamed to the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from leadtrail.v1 import admin_pb2

from .served_store import ServedStore
from .status import Context, ServiceError


async def backup(
    store: ServedStore, request: admin_pb2.BackupRequest, context: Context
) -> AsyncIterator[admin_pb2.BackupChunk]:
    raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "Backup is not built yet")
    yield admin_pb2.BackupChunk()  # pragma: no cover - a generator
