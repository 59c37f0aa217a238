"""AdminService.VerifyChain: the hash chain walked over the served store."""

from __future__ import annotations

import grpc

from leadtrail.v1 import admin_pb2

from .served_store import ServedStore
from .status import ServiceError


async def verify_chain(store: ServedStore, request: admin_pb2.VerifyChainRequest) -> admin_pb2.VerifyReport:
    raise ServiceError(grpc.StatusCode.UNIMPLEMENTED, "VerifyChain is not built yet")
