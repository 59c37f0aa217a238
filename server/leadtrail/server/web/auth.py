"""Who may read over HTTP: the same API keys, roles and rate limits as over gRPC.

Open mode (no key in the data directory): every request is the ``default`` account's
admin. With keys, a request needs ``Authorization: Bearer <key>``; ``/metrics`` needs an
``admin`` or ``analyst`` key that covers its whole account (a key limited to some
entities or flows would learn of events outside its scope from the account's counts).

Refusals are mapped to HTTP in one place (``refusal``), for ``/metrics`` and the console
pages alike: 401 with ``WWW-Authenticate: Bearer``, 403, 429 with ``Retry-After``, 503 when
the key file cannot be read, and a servicer's answers (400, 404, 501, ...) by their status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from leadtrail.server.auth import Gate, RateLimited
from leadtrail.server.keys import ApiKey
from leadtrail.server.status import ServiceError
from leadtrail.storage import DEFAULT_ACCOUNT

METRICS_ROLES = frozenset({"admin", "analyst"})
METRICS_RIGHT = "Metrics"
"""The right a scrape is admitted as (auth.RIGHTS: analysts and admins hold it): the
gate then applies the key's rate limit, shared with its gRPC calls."""

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    429: "Too many requests",
    500: "Internal error",
    501: "Not implemented",
    503: "Unavailable",
    504: "Timeout",
}


class Refusal(Exception):
    """An HTTP request refused: its status, the one-line reason and the headers to send."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(frozen=True)
class HttpCaller:
    """Whose request it is: the key (None in open mode) and its account."""

    key: ApiKey | None

    @property
    def account(self) -> str:
        return self.key.account if self.key is not None else DEFAULT_ACCOUNT

    @property
    def sees_audit(self) -> bool:
        """Audit records (``audit.*``) are for admins, as over gRPC."""
        return self.key is None or self.key.role == "admin"


def refusal(error: ServiceError, path: str) -> Refusal:
    """The HTTP form of a gate's refusal."""
    status = _STATUS.get(error.code, 500)
    headers: dict[str, str] = {}
    reason = str(error)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="leadtrail"'
        reason = reason.replace("metadata 'authorization:", "header 'Authorization:")
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if status == 403:
        reason = f"{path}: {reason}"
    return Refusal(status, reason, headers)


def metrics_caller(gate: Gate, authorization: str | None) -> HttpCaller:
    """The caller of ``GET /metrics``, or ``Refusal``."""
    metadata = [("authorization", authorization)] if authorization is not None else []
    try:
        key = gate.admit(metadata, METRICS_RIGHT)
    except ServiceError as e:
        if e.code == grpc.StatusCode.PERMISSION_DENIED:  # named for /metrics, not for the right
            raise Refusal(403, f"/metrics: needs an {' or '.join(sorted(METRICS_ROLES))} key") from None
        raise refusal(e, "/metrics") from None
    if key is not None and (key.entities or key.flows):
        raise Refusal(
            403, "/metrics: covers the whole account; this key is limited to some entities or flows"
        )
    return HttpCaller(key)
