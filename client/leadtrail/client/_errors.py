"""The client's error tree, and the one place where gRPC errors are translated into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class LeadTrailError(Exception):
    """Root of every error the client raises.

    ``code`` is the gRPC status code of the failed call (None for errors raised by
    the client itself) and ``details`` the server's message.
    """

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"{code.name}: {details}" if code is not None else details)
        self.code = code
        self.details = details


class InvalidArgumentError(LeadTrailError):
    """The request was rejected as malformed; the message names the field and the rule."""


class NotFoundError(LeadTrailError):
    """No such event or lead (or it belongs to another account)."""


class UnauthenticatedError(LeadTrailError):
    """The API key is missing, unknown or revoked."""


class PermissionDeniedError(LeadTrailError):
    """The API key's role does not allow this call."""


class ResourceExhaustedError(LeadTrailError):
    """A server limit was hit: request too large, too many events per request, disk full,
    or the API key's rate limit; then ``retry_after`` says in how many seconds to retry."""

    retry_after: float | None = None


class FailedPreconditionError(LeadTrailError):
    """The store cannot do this now, e.g. it became read-only after a failed fsync."""


class UnavailableError(LeadTrailError):
    """The server cannot be reached or is shutting down; safe to retry with the same ids."""


class TLSError(UnavailableError):
    """The connection failed while it was being secured; ``problem`` says how the two sides
    disagree, the message what to pass instead:

    - ``"tls_required"``: a plaintext client and a server that speaks only TLS;
    - ``"client_certificate_required"``: a TLS client without a certificate and a server
      that asks for one (mutual TLS);
    - ``"tls_or_client_certificate_required"``: one of the two, for a caller that did not
      say whether its channel was secure;
    - ``"server_not_tls"``: a TLS client and a plaintext server;
    - ``"certificate_untrusted"``: the server's certificate is not signed by a trusted CA.
    """

    def __init__(self, problem: str, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(details, code)
        self.problem = problem


class DeadlineExceededError(LeadTrailError):
    """The call's timeout passed before the server answered."""


class CancelledError(LeadTrailError):
    """The call was cancelled."""


class ServiceError(LeadTrailError):
    """Any other status code (UNKNOWN, INTERNAL, UNIMPLEMENTED, ...)."""


class QueueFullError(LeadTrailError):
    """The background appender's queue is full and its policy does not wait (longer)."""


class SignatureError(LeadTrailError):
    """A signed checkpoint's signature does not hold (under the pinned public key, when one
    was given): the server, or the key it signs with, is not the one it should be. Never
    a mere mismatch of a receipt, which ``verify_receipt`` answers with False."""


_BY_CODE: dict[grpc.StatusCode, type[LeadTrailError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


# What gRPC reports when the two ends disagree about TLS: a TLS server drops a
# plaintext client (and a mutual-TLS server a client without a certificate)
# before answering, which reads as a closed socket; a TLS client fails its own
# handshake with a reason.
_SOCKET_CLOSED = "Socket closed"
_NOT_TLS = "WRONG_VERSION_NUMBER"
_UNTRUSTED = "CERTIFICATE_VERIFY_FAILED"

_TLS_ADVICE = {
    "tls_required": "the server requires TLS: connect with credentials=tls_credentials(ca_file), "
    "ca_file the CA that signed the server's certificate",
    "client_certificate_required": "the server requires a client certificate (mutual TLS): connect with "
    "credentials=tls_credentials(ca_file, cert_file, key_file)",
    "tls_or_client_certificate_required": "the server closed the connection while it was being set up: "
    "it requires TLS, or a client certificate (credentials=tls_credentials(ca_file, cert_file, key_file))",
    "server_not_tls": "the server does not speak TLS: connect without TLS credentials",
    "certificate_untrusted": "the server's certificate is not signed by a CA this client trusts: "
    "pass the CA that signed it, tls_credentials(ca_file)",
}


def _tls_problem(details: str, secure: bool | None) -> str | None:
    if _NOT_TLS in details:
        return "server_not_tls"
    if _UNTRUSTED in details:
        return "certificate_untrusted"
    if _SOCKET_CLOSED in details and "failed to connect" in details:
        if secure is None:
            return "tls_or_client_certificate_required"
        return "client_certificate_required" if secure else "tls_required"
    return None


def handle_rpc_error(error: grpc.RpcError, *, secure: bool | None = None) -> LeadTrailError:
    """The LeadTrail error for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``).

    ``secure`` says whether the call's channel used TLS (None: not known); it tells
    which side of a TLS mismatch to name. The caller raises the result ``from
    error`` so the gRPC original stays attached.
    """
    # A bare RpcError (raised by grpc itself for some channel failures) has no
    # status; grpc.Call-derived errors always do.
    code_of = getattr(error, "code", None)
    code = code_of() if callable(code_of) else None
    details_of = getattr(error, "details", None)
    details = (details_of() if callable(details_of) else None) or str(error)
    if not isinstance(code, grpc.StatusCode):
        return ServiceError(details)
    if code == grpc.StatusCode.UNAVAILABLE:
        problem = _tls_problem(details, secure)
        if problem is not None:
            return TLSError(problem, f"{_TLS_ADVICE[problem]} ({details})", code)
    translated = _BY_CODE.get(code, ServiceError)(details, code)
    if isinstance(translated, ResourceExhaustedError):
        translated.retry_after = _retry_after(error)
    return translated


def _retry_after(error: grpc.RpcError) -> float | None:
    """The server's ``retry-after-ms`` trailer (it also sends google.rpc.RetryInfo)."""
    trailing = getattr(error, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
    except NotImplementedError:  # an RpcError that is not a finished call
        return None
    for name, value in metadata or ():
        if name == "retry-after-ms":
            try:
                return int(value) / 1000
            except ValueError:
                return None
    return None


@contextmanager
def translated_rpc_errors(*, secure: bool | None = None) -> Iterator[None]:
    """Re-raise gRPC errors of the block as LeadTrail errors (``secure``: see ``handle_rpc_error``)."""
    try:
        yield
    except grpc.RpcError as error:
        raise handle_rpc_error(error, secure=secure) from error
