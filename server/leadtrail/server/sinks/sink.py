"""One sink at work: the handler of its durable consumer.

Every committed event reaches ``handle`` in position order; the sink keeps those of its
account that its filter matches, masks them when the sink is ``masked`` (what a reader
key sees), and hands them to its target. A target that fails (``TargetError``) is
called again with the same events after a backoff (exponential, full jitter: a wait
drawn in ``[0, min(max, first * 2**(n-1))]`` after failure n, ``max`` 60 s), inside
``handle``: the consumer does not rewind, nothing is read twice, and the status says
"retrying" with the error until the target takes the events.

The consumer saves no position past an event the target does not hold yet
(``holding``: the target's ``pending_from``), so a restart of LeadTrail hands over
again exactly what might be missing. The status (events acknowledged since the sink
was made, the last error and when) is saved with the position.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leadtrail.server.consumers import Saved
from leadtrail.server.privacy import masked_event
from leadtrail.storage import Event

from .model import SinkSpec
from .target import Target, TargetError

log = logging.getLogger("leadtrail.server")

RUNNING = "running"
RETRYING = "retrying"
STOPPED = "stopped"
POLICY_ENV = "LEADTRAIL_SINK_POLICY"
ERROR_MAX = 500
_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
MAX_SECONDS = 3600.0


class SinkPolicyError(ValueError):
    """``LEADTRAIL_SINK_POLICY`` is not a policy; the message is the one line to show."""


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    """How sinks retry and how long one webhook POST may take; the defaults serve production.
    Operators and tests set ``LEADTRAIL_SINK_POLICY="first=0.05,max=0.5,timeout=1"`` (seconds)."""

    first_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0

    def backoff_cap_s(self, failures: int) -> float:
        return min(self.max_backoff_s, self.first_backoff_s * 2.0 ** min(failures - 1, 64))

    @classmethod
    def parse(cls, text: str) -> SinkPolicy:
        names = {"first": "first_backoff_s", "max": "max_backoff_s", "timeout": "timeout_s"}
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = (part.strip() for part in item.partition("="))
            attribute = names.get(name)
            if not sep or attribute is None or attribute in values:
                raise SinkPolicyError(f"{POLICY_ENV}={text!r}: {item!r} is not first=S, max=S or timeout=S")
            if not _SECONDS.match(value) or not 0 < float(value) <= MAX_SECONDS:
                raise SinkPolicyError(f"{POLICY_ENV}={text!r}: {name}={value!r} is not seconds in (0, 3600]")
            values[attribute] = float(value)
        return cls(**values)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SinkPolicy:
        text = (os.environ if environ is None else environ).get(POLICY_ENV)
        return cls() if text is None else cls.parse(text)


class SinkStopping(Exception):
    """The server stops while the sink waits to retry: the batch is left (handed over again
    after the restart, from the saved position)."""


class SinkRun:
    """The handler of one sink's consumer (``restore``/``handle``/``tick``/``state``)."""

    def __init__(
        self,
        spec: SinkSpec,
        make_target: Callable[[], Target],
        policy: SinkPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self._make_target = make_target
        self._policy = policy
        self._random = rng or random.Random()
        self._target: Target | None = None
        self._handed: deque[int] = deque()
        """Positions handed to the target and not yet acknowledged."""
        self._failures = 0
        self._in_flight_from: int | None = None
        """The first position of a deliver call not yet returned: not counted as acknowledged."""
        self._next_flush_ms = 0
        self._stopping = asyncio.Event()
        self.retrying = False
        self._delivered_total = 0
        self.last_error = ""
        self.last_error_at_ms = 0

    # -- what the registry and the status read ----------------------------------------------

    def pending_from(self) -> int | None:
        """The first position handed on that the target does not hold yet (None: none)."""
        return self._target.pending_from() if self._target is not None else None

    @property
    def delivered_total(self) -> int:
        """Events the target acknowledged since the sink was made (a batch counts once the
        target holds it, even while later batches of the same call are on their way)."""
        self._settle()
        return self._delivered_total

    @property
    def state_name(self) -> str:
        return RETRYING if self.retrying else RUNNING

    async def stop(self) -> None:
        """End a wait before a retry at once (the consumer then stops without saving past it)."""
        self._stopping.set()

    async def close(self) -> None:
        target, self._target = self._target, None
        if target is not None:
            await target.close()

    # -- the consumer's handler ------------------------------------------------------------

    async def restore(self, saved: Saved) -> None:
        state = saved.state if isinstance(saved.state, dict) else {}
        self._delivered_total = int(state.get("delivered_total", 0))
        self.last_error = str(state.get("last_error", ""))
        self.last_error_at_ms = int(state.get("last_error_at_ms", 0))
        # What the target holds pending is before the saved position: handed over again.
        await self.close()
        self._handed.clear()

    async def handle(self, events: Sequence[Event]) -> None:
        f = self.spec.filter
        chosen = [e for e in events if f.matches(e)]
        if not chosen:
            return
        if self.spec.masked:
            chosen = [masked_event(e) for e in chosen]
        self._handed.extend(e.position for e in chosen)
        self._in_flight_from = chosen[0].position
        try:
            await self._retrying(lambda target: target.deliver(chosen))
        finally:
            self._in_flight_from = None

    async def tick(self, now_ms: int) -> None:
        target = self._target
        if target is None or target.pending_from() is None or now_ms < self._next_flush_ms:
            return
        try:
            await target.flush(now_ms)
        except Exception as e:  # as in _retrying: shown in the status, tried again later
            delay = self._failed(e)
            self._next_flush_ms = now_ms + int(delay * 1000)
            return
        self._succeeded()

    def state(self) -> Any:
        return {
            "delivered_total": self.delivered_total,
            "last_error": self.last_error,
            "last_error_at_ms": self.last_error_at_ms,
        }

    # -- delivery ------------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[Target], Awaitable[None]]) -> None:
        while True:
            try:
                target = await self._ready()
                await call(target)
            except SinkStopping:
                raise
            except Exception as e:
                # A TargetError, or a target's own bug: either way retried after a backoff with
                # the error in the status, rather than a rewind of the consumer every second.
                if not isinstance(e, TargetError):
                    log.warning("sink %s: %s", self.spec.name, e, exc_info=e)
                delay = self._failed(e)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    continue
                raise SinkStopping(f"sink {self.spec.name!r} stops while retrying") from None
            self._succeeded()
            return

    async def _ready(self) -> Target:
        if self._stopping.is_set():
            raise SinkStopping(f"sink {self.spec.name!r} stops")
        if self._target is None:
            target = self._make_target()
            try:
                await target.open()
            except BaseException:
                await target.close()  # what it opened before it failed
                raise
            self._target = target
        return self._target

    def _failed(self, e: Exception) -> float:
        """Record the failure; the wait before the next attempt (seconds)."""
        self._failures += 1
        self.retrying = True
        said = str(e) if isinstance(e, TargetError) else f"{type(e).__name__}: {e}"
        self.last_error = (said or type(e).__name__)[:ERROR_MAX]
        self.last_error_at_ms = time.time_ns() // 1_000_000
        return self._random.uniform(0, self._policy.backoff_cap_s(self._failures))

    def _succeeded(self) -> None:
        self._failures = 0
        self._next_flush_ms = 0
        self.retrying = False
        self._settle()

    def _settle(self) -> None:
        """Count what the target acknowledged of what was handed to it."""
        held = [p for p in (self.pending_from(), self._in_flight_from) if p is not None]
        first = min(held) if held else None
        handed = self._handed
        while handed and (first is None or handed[0] < first):
            handed.popleft()
            self._delivered_total += 1
