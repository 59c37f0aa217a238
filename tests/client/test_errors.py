"""Every gRPC status becomes one LeadTrail error class, through one function."""

from __future__ import annotations

import grpc
import grpc.aio
import leadtrail.client as sdk
import pytest
from leadtrail.client import LeadTrailError, handle_rpc_error


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT: sdk.InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: sdk.NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: sdk.UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: sdk.PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: sdk.ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: sdk.FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: sdk.UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: sdk.DeadlineExceededError,
    grpc.StatusCode.CANCELLED: sdk.CancelledError,
    grpc.StatusCode.UNKNOWN: sdk.ServiceError,
    grpc.StatusCode.INTERNAL: sdk.ServiceError,
    grpc.StatusCode.UNIMPLEMENTED: sdk.ServiceError,
}


@pytest.mark.parametrize("code", list(EXPECTED), ids=lambda code: code.name)
def test_status_code_maps_to_its_error_class_with_code_and_details(code: grpc.StatusCode) -> None:
    error = handle_rpc_error(FakeRpcError(code, "events[2].type: bad"))
    assert type(error) is EXPECTED[code]
    assert isinstance(error, LeadTrailError)
    assert error.code is code
    assert error.details == "events[2].type: bad"
    assert code.name in str(error)


def test_rpc_error_without_a_status_is_a_generic_error() -> None:
    error = handle_rpc_error(grpc.RpcError("channel exploded"))
    assert type(error) is sdk.ServiceError and error.code is None
    assert "channel exploded" in error.details


def test_asyncio_rpc_errors_map_the_same_way() -> None:
    aio_error = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), details="no such event"
    )
    error = handle_rpc_error(aio_error)
    assert type(error) is sdk.NotFoundError and error.details == "no such event"


def test_queue_full_is_a_leadtrail_error_without_a_status() -> None:
    error = sdk.QueueFullError("full")
    assert isinstance(error, LeadTrailError) and error.code is None and str(error) == "full"
