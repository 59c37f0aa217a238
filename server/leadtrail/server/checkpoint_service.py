"""AdminService.GetCheckpoint: the chain hash at a position, signed."""

from __future__ import annotations

import grpc

from leadtrail.v1 import admin_pb2

from .served_store import ServedStore
from .status import ServiceError


async def get_checkpoint(
    store: ServedStore, request: admin_pb2.GetCheckpointRequest
) -> admin_pb2.SignedCheckpoint:
    raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "GetCheckpoint is not built yet")
