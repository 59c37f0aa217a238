"""Who is calling: the API key of a call, what its role may do, its account and scope.

Until the data directory holds a key the server runs in open single-account
mode (DESIGN.md): every call is the ``default`` account's admin. From the
first key on, every call but health needs ``authorization: Bearer <key>``.
The key of the call being served is in ``CALLER``, set by the handler before
the servicer runs (each call runs in its own task, so it never leaks).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

import grpc

from .keys import ROLES, ApiKey, KeyStore, KeyStoreError
from .status import ServiceError

CALLER: ContextVar[ApiKey | None] = ContextVar("leadtrail_caller", default=None)

_ANY = frozenset({"ServerReflectionInfo"})  # the schema, for grpcurl and friends
_READS = _ANY | {
    "GetEvent",
    "GetTimeline",
    "QueryEvents",
    "Subscribe",
    "FindLeads",
    "ListAlerts",
    "GetSinkStatus",
    "GetCheckpoint",
}
RIGHTS: dict[str, frozenset[str] | None] = {
    # A writer checks its receipts (AppendResult.chain_hash) against signed checkpoints.
    "writer": _ANY | {"Append", "AppendStream", "GetCheckpoint"},
    "reader": _READS,
    # Metrics: GET /metrics (web/); the files of scheduled exports are exports too.
    "analyst": _READS | {"Aggregate", "Export", "Metrics", "ListExportFiles", "DownloadExportFile"},
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


class RateLimited(ServiceError):
    """RESOURCE_EXHAUSTED, with the seconds after which a call would be admitted."""

    def __init__(self, key: ApiKey, retry_after_s: float) -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"rate limit: key {key.key_id} may make {key.rate_per_second} calls a second; "
            f"retry in {retry_after_s * 1000:.0f} ms",
        )
        self.retry_after_s = retry_after_s


class _Bucket:
    """Tokens for one key: ``rate`` a second, at most ``rate`` saved (a one-second burst)."""

    __slots__ = ("at", "tokens")

    def __init__(self, rate: int, now: float) -> None:
        self.tokens, self.at = float(rate), now

    def take(self, rate: int, now: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        self.tokens = min(float(rate), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1 - 1e-9:  # a token refilled in steps may add up to 0.999...
            self.tokens = max(0.0, self.tokens - 1)
            return 0.0
        return (1 - self.tokens) / rate


class Gate:
    """Admits a call or refuses it with UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED."""

    def __init__(self, keys: KeyStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}  # by key id; one gate serves all services

    def admit(self, metadata: Any, method: str) -> ApiKey | None:
        """The caller's key (None in open mode) if it may call ``method``."""
        try:
            if not self.keys.configured():
                return None
            return self._admit(metadata, method)
        except KeyStoreError as e:  # fail closed, and say why
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"API keys: {e}") from None

    def _admit(self, metadata: Any, method: str) -> ApiKey:
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
            callable_ = ", ".join(sorted(allowed - _ANY))  # reflection is everyone's: not worth naming
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method}: not allowed for role {key.role} (it may call {callable_})",
            )
        if key.rate_per_second:
            wait = self._take(key)
            if wait:
                raise RateLimited(key, wait)
        return key

    def _take(self, key: ApiKey) -> float:
        now = self._clock()
        bucket = self._buckets.get(key.key_id)
        if bucket is None:
            bucket = self._buckets[key.key_id] = _Bucket(key.rate_per_second, now)
        return bucket.take(key.rate_per_second, now)

    async def pace(
        self, key: ApiKey | None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Wait until ``key`` may send one more message of a stream: within a stream the
        rate limit slows the sender down (as flow control does) instead of ending it."""
        if key is None or not key.rate_per_second:
            return
        while wait := self._take(key):
            await sleep(wait)
