"""Who is calling: the API key of a call, what its role may do, its account and scope.

Until the data directory holds a key the server runs in open single-account
mode (DESIGN.md): every call is the ``default`` account's admin. From the
first key on, every call but health needs ``authorization: Bearer <key>``.
The key of the call being served is in ``CALLER``, set by the handler before
the servicer runs (each call runs in its own task, so it never leaks).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import grpc

from .keys import ROLES, ApiKey, KeyStore
from .status import ServiceError

CALLER: ContextVar[ApiKey | None] = ContextVar("leadtrail_caller", default=None)

_ANY = frozenset({"ServerReflectionInfo"})  # the schema, for grpcurl and friends
_READS = _ANY | {"GetEvent", "GetTimeline", "QueryEvents", "Subscribe"}
RIGHTS: dict[str, frozenset[str] | None] = {
    "writer": _ANY | {"Append", "AppendStream"},
    "reader": _READS,
    "analyst": _READS | {"Aggregate", "Export"},
    "admin": None,  # everything
}
assert set(RIGHTS) == set(ROLES)


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The key of ``authorization: Bearer <key>``; '' for another scheme, None when absent."""
    for name, value in metadata or ():
        if name == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, secret = text.partition(" ")
            return secret.strip() if scheme.lower() == "bearer" else ""
    return None


class Gate:
    """Admits a call or refuses it with UNAUTHENTICATED / PERMISSION_DENIED."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def admit(self, metadata: Any, method: str) -> ApiKey | None:
        """The caller's key (None in open mode) if it may call ``method``."""
        if not self.keys.configured():
            return None
        secret = _bearer(metadata)
        if not secret:
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: missing; send metadata 'authorization: Bearer <key>'",
            )
        key = self.keys.authenticate(secret)
        if key is None:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "authorization: unknown or revoked key")
        allowed = RIGHTS[key.role]
        if allowed is not None and method not in allowed:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method}: not allowed for role {key.role} (it may call {', '.join(sorted(allowed))})",
            )
        return key
