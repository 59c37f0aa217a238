"""The webhook target: batches of events POSTed as a signed JSON array (CRM sync).

Each POST's body is a JSON array of events in the shape of an export line
(``event_to_json``), in position order, at most ``batch_size`` of them; headers
``Content-Type: application/json``, ``X-LeadTrail-Sink`` (the sink's name),
``X-LeadTrail-Batch-Id`` (``<first position>-<last position>`` of the batch: the same
on every retry of it), ``X-LeadTrail-Attempt`` (1-based) and, when the sink has a
secret, ``X-LeadTrail-Signature: sha256=<hex HMAC-SHA256(secret, body)>`` as alert
webhooks (``alerts.signing``). A 2xx answer acknowledges the batch; any other answer,
a redirect (not followed), a refused connection or no answer within the timeout is a
``TargetError`` and the same batch, byte for byte, is posted again on the next call.

A batch is sent once ``batch_size`` events wait, or once its first event has waited
``max_wait_ms`` (``flush``). Errors name the receiver by its origin, never by the URL,
whose path or userinfo is often a secret.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Sequence

import aiohttp
import orjson

from leadtrail.server.alerts.redaction import scrub, url_origin
from leadtrail.server.alerts.signing import ATTEMPT_HEADER, SIGNATURE_HEADER, signature
from leadtrail.server.convert import event_to_json
from leadtrail.storage import Event

from .model import WebhookSpec
from .target import TargetError

BATCH_ID_HEADER = "X-LeadTrail-Batch-Id"
SINK_HEADER = "X-LeadTrail-Sink"
ERROR_MAX = 300


class WebhookTarget:
    def __init__(self, spec: WebhookSpec, sink_name: str) -> None:
        self.spec = spec
        self.sink_name = sink_name
        self._session: aiohttp.ClientSession | None = None
        self._waiting: list[Event] = []
        """Handed on, not yet acknowledged, in position order."""
        self._waiting_since_ms = 0
        """When the first waiting event was handed on (its ``max_wait_ms`` runs from then)."""
        self._batch: list[Event] | None = None
        self._body = b""
        """The batch being posted, fixed once made (a retry sends the same bytes)."""
        self._attempt = 0
        self._last_handed = -1

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s),
                headers={"User-Agent": _user_agent()},
                trust_env=False,
            )

    async def deliver(self, events: Sequence[Event]) -> None:
        fresh = [e for e in events if e.position > self._last_handed]
        if fresh:
            if not self._waiting:
                self._waiting_since_ms = _now_ms()
            self._waiting.extend(fresh)
            self._last_handed = fresh[-1].position
        await self._post_due(force=False)

    def pending_from(self) -> int | None:
        return self._waiting[0].position if self._waiting else None

    async def flush(self, now_ms: int) -> None:
        if self._waiting and (
            self._batch is not None or now_ms - self._waiting_since_ms >= self.spec.max_wait_ms
        ):
            await self._post_due(force=True)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        # What waits is handed over again after the next open (the sink's position is before it).
        self._waiting, self._batch, self._last_handed = [], None, -1

    async def _post_due(self, force: bool) -> None:
        """Post full batches (and, forced, what waits), the oldest first; raise on a failure."""
        while True:
            if self._batch is None:
                if len(self._waiting) < self.spec.batch_size and not (force and self._waiting):
                    return
                self._batch = self._waiting[: self.spec.batch_size]
                self._body = orjson.dumps([event_to_json(e) for e in self._batch])
                self._attempt = 0
            await self._post(self._batch, self._body)
            del self._waiting[: len(self._batch)]
            self._batch = None
            self._waiting_since_ms = _now_ms()

    async def _post(self, batch: list[Event], body: bytes) -> None:
        await self.open()
        assert self._session is not None
        self._attempt += 1
        url = self.spec.url
        headers = {
            "Content-Type": "application/json",
            SINK_HEADER: self.sink_name,
            BATCH_ID_HEADER: f"{batch[0].position}-{batch[-1].position}",
            ATTEMPT_HEADER: str(self._attempt),
        }
        if self.spec.secret:
            headers[SIGNATURE_HEADER] = signature(self.spec.secret, body)
        shown = url_origin(url)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
                status = answer.status
        except TimeoutError:
            raise TargetError(f"{shown}: no answer within {self.spec.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as e:
            # The library's words may quote the URL, whose path or userinfo can be the secret.
            said = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise TargetError(f"{shown}: {scrub(said, url)[:ERROR_MAX]}") from None
        if not 200 <= status < 300:
            raise TargetError(f"{shown} answered HTTP {status}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _user_agent() -> str:
    try:
        return f"leadtrail/{importlib.metadata.version('leadtrail')}"
    except importlib.metadata.PackageNotFoundError:
        return "leadtrail/unknown"
