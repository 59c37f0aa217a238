"""Webhook deliveries of alert events: a durable consumer of the log named ``webhooks``.

It follows ``alert.fired`` and ``alert.resolved`` events (of every account) whose rule
has a ``webhook_url``, and POSTs each one there: ``Content-Type: application/json``,
the body the alert event as JSON in the shape of an export line (``event_to_json``),
headers ``X-LeadTrail-Event-Id``, ``X-LeadTrail-Attempt`` (1-based), ``User-Agent:
leadtrail/<version>`` and, when the rule has a secret, ``X-LeadTrail-Signature:
sha256=<hex HMAC-SHA256(secret, body)>`` (``signing.py``).

Every attempt's outcome is an event of the log: ``alert.delivered`` (a 2xx answer,
final) or ``alert.delivery_failed`` (any other answer, no answer within the timeout,
a refused connection, a redirect (not followed); ``next_attempt_ms`` says when the next attempt is due, or
``final`` says there is none). An attempt event names the receiver by its origin
(``details.url``: ``scheme://host[:port]``) and ``details.url_sha256`` (the first 12 hex
digits of the full URL's SHA-256), never by the URL, which is often a secret (a token in
its path, a password in its userinfo), and errors are scrubbed of it (``redaction.py``):
those events are readable by every reader. Failures are retried with exponential backoff and full
jitter (a wait drawn in ``[0, min(max, first * 2**(n-1))]`` after attempt n) until
``give_up_after_s`` (24 h) after the first attempt; the attempt that fails past that is
final. A rule deleted, or left without a URL, ends its pending deliveries with a final
``alert.delivery_failed`` saying so.

The log is the source of truth for what was attempted: the pending deliveries change
only when an attempt's event comes back through the consumer, and a new attempt of a
delivery is not started before the outcome of the previous one is in the log. The
pending set (event id, account, rule, position, attempts, next and first attempt
times; not the bodies, which are re-read by id) is saved with the consumer's position,
and attempts recorded after that position are learnt again from the replay after a
restart (no attempt starts before the replay has reached the log's end as of the
restart), so the numbering continues where the log left it.

At-least-once: an attempt in flight when the server stops or crashes (its outcome not
yet in the log) is made again after the restart, with the same attempt number and the
same ``X-LeadTrail-Event-Id``; receivers deduplicate on that header.

Ordering: the deliveries of one rule are made one at a time in log order (a resolution
never reaches a receiver before its firing); different rules' deliveries run side by
side, at most ``concurrency`` at once (the longest due first, so that receivers retried
often do not starve the others), each cut off after ``timeout_s``. A receiver that keeps
failing holds up the later deliveries of its own rule only.

Bound: at most ``max_pending`` (10,000) deliveries wait; past it, the oldest waiting
one is given up with a final ``alert.delivery_failed`` ("too many pending deliveries").

``handle`` never waits on HTTP: it only updates the pending set; the deliveries run
in tasks of the server's event loop on one ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
import orjson

from leadtrail.server.consumers import DurableConsumer, Saved
from leadtrail.server.convert import event_to_json, iso_ms
from leadtrail.server.served_store import ServedStore
from leadtrail.storage import AppendResult, Event, Outcome, StorageError
from leadtrail.storage.validation import REASON_MAX

from .model import (
    ALERT_DELIVERED,
    ALERT_DELIVERY_FAILED,
    ALERT_FIRED,
    ALERT_FLOW,
    ALERT_RESOLVED,
    RULE_LEAD_PREFIX,
)
from .redaction import scrub, url_digest, url_origin
from .rulebook import RuleBook
from .signing import ATTEMPT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, signature

log = logging.getLogger("leadtrail.server")

CONSUMER_NAME = "webhooks"
POLICY_ENV = "LEADTRAIL_WEBHOOK_POLICY"
STATE_FORMAT = 1
INTEGRATION = "webhook"
"""The ``integration`` of every attempt event."""
DELIVERED = frozenset({ALERT_FIRED, ALERT_RESOLVED})
ATTEMPTS = frozenset({ALERT_DELIVERED, ALERT_DELIVERY_FAILED})
ERROR_MAX = 300
"""An attempt's ``error`` is cut to this many characters (a receiver's library may say a lot)."""


class WebhookPolicyError(ValueError):
    """``LEADTRAIL_WEBHOOK_POLICY`` is not a policy; the message is the one line to show."""


_SETTINGS = {
    "timeout": "timeout_s",
    "first": "first_backoff_s",
    "max": "max_backoff_s",
    "give_up": "give_up_after_s",
    "concurrency": "concurrency",
    "pending": "max_pending",
}
_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_COUNT = re.compile(r"^[0-9]+$")
MAX_SECONDS = 7 * 24 * 3600
MAX_CONCURRENCY = 1000
MAX_PENDING = 1_000_000


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """How deliveries are timed; the defaults serve production. Operators and tests set
    ``LEADTRAIL_WEBHOOK_POLICY="timeout=0.5,first=0.05,max=0.2,give_up=5"`` (seconds;
    also ``concurrency=N`` and ``pending=N``)."""

    timeout_s: float = 10.0
    """One attempt, connection to answer: a receiver that hangs loses its slot after this."""
    first_backoff_s: float = 1.0
    max_backoff_s: float = 3600.0
    give_up_after_s: float = 24 * 3600.0
    """Attempts go on until this long after the first one."""
    concurrency: int = 8
    max_pending: int = 10_000

    def backoff_cap_s(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based): doubling, capped."""
        return min(self.max_backoff_s, self.first_backoff_s * 2.0 ** min(attempt - 1, 64))

    @classmethod
    def parse(cls, text: str) -> WebhookPolicy:
        """``name=value`` pairs separated by commas; any unknown name, repeated name or value
        out of range is refused (WebhookPolicyError), an empty text is the defaults."""
        values: dict[str, Any] = {}
        if text.strip():
            for item in text.split(","):
                name, sep, value = (part.strip() for part in item.partition("="))
                if not sep or not name:
                    raise _policy_error(text, f"{item.strip()!r} is not name=value")
                attribute = _SETTINGS.get(name)
                if attribute is None:
                    raise _policy_error(text, f"unknown setting {name!r}")
                if attribute in values:
                    raise _policy_error(text, f"{name} is given twice")
                values[attribute] = _setting_value(text, name, value)
        policy = cls(**values)
        if policy.first_backoff_s > policy.max_backoff_s:
            raise _policy_error(
                text, f"first ({policy.first_backoff_s}) is above max ({policy.max_backoff_s})"
            )
        return policy

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> WebhookPolicy:
        text = (os.environ if environ is None else environ).get(POLICY_ENV)
        return cls() if text is None else cls.parse(text)


def _policy_error(text: str, problem: str) -> WebhookPolicyError:
    return WebhookPolicyError(
        f"{POLICY_ENV}={text!r}: {problem}; expected comma-separated timeout=S, first=S, max=S, "
        f"give_up=S (seconds, > 0, at most {MAX_SECONDS}), concurrency=N (1..{MAX_CONCURRENCY}), "
        f"pending=N (1..{MAX_PENDING})"
    )


def _setting_value(text: str, name: str, value: str) -> float | int:
    if name in ("concurrency", "pending"):
        limit = MAX_CONCURRENCY if name == "concurrency" else MAX_PENDING
        if not _COUNT.match(value) or not 1 <= int(value) <= limit:
            raise _policy_error(text, f"{name}={value!r} is not a whole number in 1..{limit}")
        return int(value)
    if not _SECONDS.match(value) or not 0 < float(value) <= MAX_SECONDS:
        raise _policy_error(text, f"{name}={value!r} is not a number of seconds in (0, {MAX_SECONDS}]")
    return float(value)


@dataclass(slots=True)
class Delivery:
    """One alert event to deliver, as the log knows it (what is saved with the position)."""

    event_id: str
    account_id: str
    rule: str
    position: int
    """The alert event's: deliveries of one rule are made in this order."""
    attempts: int = 0
    """Attempts whose outcome is in the log."""
    next_attempt_ms: int = 0
    first_attempt_ms: int = 0
    """0 until the first attempt is in the log."""

    def json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, raw: Any) -> Delivery:
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) != names:
            raise ValueError(f"a pending delivery must have exactly {sorted(names)}: {raw!r}")
        return cls(**raw)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to, before it is an event."""

    status: int = 0
    error: str = ""
    final_error: str = ""
    """Set when no further attempt can help (the rule is gone): the attempt is final."""

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


def _user_agent() -> str:
    try:
        return f"leadtrail/{importlib.metadata.version('leadtrail')}"
    except importlib.metadata.PackageNotFoundError:
        return "leadtrail/unknown"


class Webhooks:
    """The deliverer: a durable consumer's handler (``restore``/``handle``/``tick``/``state``)
    plus the tasks that make the attempts."""

    def __init__(
        self,
        store: ServedStore,
        rules: RuleBook,
        policy: WebhookPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``policy`` None: from ``LEADTRAIL_WEBHOOK_POLICY`` (WebhookPolicyError when bad)."""
        self.policy = policy if policy is not None else WebhookPolicy.from_environment()
        self._store = store
        self._rules = rules
        self._clock = clock
        self._random = random.Random()
        self._pending: dict[str, Delivery] = {}
        """By alert event id, in log order (handled in order; restored in saved order)."""
        self._bodies: dict[str, Event] = {}
        """The alert events of pending deliveries handled by this process (others are re-read)."""
        self._giving_up: set[str] = set()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._recording: dict[str, int] = {}
        """Event id -> the attempt whose outcome is submitted but not yet learnt from the log."""
        self._held_until: dict[str, int] = {}
        """Event id -> no attempt before this (the outcome of the last one could not be written)."""
        self._replaying_to = 0
        """After a restore: no attempt starts until the replay has handled the log up to here,
        because attempts recorded after the saved position are learnt only from the replay."""
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._consumer: DurableConsumer | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[list[AppendResult]]] = set()

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        store = self._store
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.policy.concurrency),
            headers={"User-Agent": _user_agent()},
            trust_env=False,
        )
        self._consumer = DurableConsumer.following(store, CONSUMER_NAME, self)
        await self._consumer.start()
        self._scheduler = asyncio.create_task(self._schedule(), name="webhook deliveries")

    async def stop(self) -> None:
        """Attempts in flight are cut short (made again after a restart); the position is saved."""
        tasks = [t for t in (self._scheduler, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = None
        if self._consumer is not None:
            await self._consumer.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending(self) -> int:
        """Deliveries waiting (an attempt due, in flight, or its outcome being written)."""
        return len(self._pending)

    # -- the consumer's handler ----------------------------------------------------------

    async def restore(self, saved: Saved) -> None:
        """The pending set as of ``saved.position``; attempts in flight keep running and
        their outcomes are learnt from the log like any other."""
        self._pending = {}
        self._bodies = {}
        self._giving_up = set()
        target = self._store.log.last_position
        self._replaying_to = target if target > saved.position else 0
        state = saved.state
        if state is not None:
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise ValueError(f"consumer {CONSUMER_NAME}: state format is not {STATE_FORMAT}")
            for raw in state["pending"]:
                delivery = Delivery.from_json(raw)
                self._pending[delivery.event_id] = delivery
        for event_id in self._held_until.keys() - self._pending.keys():
            del self._held_until[event_id]
        self._wake.set()

    async def handle(self, events: Sequence[Event]) -> None:
        changed = False
        for event in events:
            if event.flow_id != ALERT_FLOW:
                continue
            if event.type in DELIVERED:
                changed = self._learn_alert(event) or changed
            elif event.type in ATTEMPTS:
                changed = self._learn_attempt(event) or changed
        if self._replaying_to and events and events[-1].position >= self._replaying_to:
            self._replaying_to = 0
            changed = True
        if changed:
            self._wake.set()

    async def tick(self, now_ms: int) -> None:
        """Nothing: the scheduler keeps its own time (retries fall due without events)."""

    def state(self) -> Any:
        return {"format": STATE_FORMAT, "pending": [d.json() for d in self._pending.values()]}

    def _learn_alert(self, event: Event) -> bool:
        name = event.details.get("rule")
        if event.id in self._pending or not isinstance(name, str):
            return False
        rule = self._rules.get(event.account_id, name)
        if rule is None or not rule.webhook_url:
            return False
        self._pending[event.id] = Delivery(event.id, event.account_id, name, event.position)
        self._bodies[event.id] = event
        if len(self._pending) - len(self._giving_up) > self.policy.max_pending:
            self._give_up_oldest()
        return True

    def _learn_attempt(self, event: Event) -> bool:
        details = event.details
        event_id, attempt = details.get("event_id"), details.get("attempt")
        if not isinstance(event_id, str) or type(attempt) is not int:
            return False
        if self._recording.get(event_id, attempt + 1) <= attempt:
            del self._recording[event_id]
        delivery = self._pending.get(event_id)
        if delivery is None or attempt < delivery.attempts:
            return False
        self._held_until.pop(event_id, None)
        if details.get("final") is True:
            del self._pending[event_id]
            self._bodies.pop(event_id, None)
            self._giving_up.discard(event_id)
            return True
        delivery.attempts = attempt
        if delivery.first_attempt_ms == 0:
            delivery.first_attempt_ms = event.timestamp_ms or event.recorded_at_ms
        next_ms = details.get("next_attempt_ms")
        delivery.next_attempt_ms = next_ms if type(next_ms) is int else 0
        return True

    def _give_up_oldest(self) -> None:
        for delivery in self._pending.values():
            event_id = delivery.event_id
            if event_id in self._in_flight or event_id in self._recording:
                continue
            self._giving_up.add(event_id)
            now = self._now_ms()
            error = f"too many pending deliveries (more than {self.policy.max_pending})"
            given_up = AttemptResult(final_error=error)
            self._record(delivery, delivery.attempts + 1, self._bodies.get(event_id), "", now, now, given_up)
            return

    # -- attempts -------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _schedule(self) -> None:
        while True:
            self._wake.clear()
            wait_s = self._start_due()
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                pass

    def _start_due(self) -> float | None:
        """Start the attempts that are due (of the first waiting delivery of each rule), the
        longest due first, so that receivers retried often do not starve the others of slots;
        the seconds until the next one falls due (None: only a change can make one due)."""
        if self._replaying_to:
            return None  # the end of the replay wakes the scheduler
        now = self._now_ms()
        rules_seen: set[tuple[str, str]] = set()
        due_now: list[tuple[int, int, Delivery]] = []
        earliest: int | None = None
        for delivery in self._pending.values():
            rule = (delivery.account_id, delivery.rule)
            if rule in rules_seen:
                continue
            rules_seen.add(rule)
            event_id = delivery.event_id
            if event_id in self._in_flight or event_id in self._recording:
                continue
            due = max(delivery.next_attempt_ms, self._held_until.get(event_id, 0))
            if due > now:
                earliest = due if earliest is None else min(earliest, due)
            else:
                due_now.append((due, delivery.position, delivery))
        free = self.policy.concurrency - len(self._in_flight)
        if free < len(due_now):
            due_now.sort(key=lambda waiting: waiting[:2])
        for _, _, delivery in due_now[: max(0, free)]:
            # The rest wait for a slot: a finished attempt wakes the scheduler.
            self._in_flight[delivery.event_id] = asyncio.create_task(
                self._attempt(delivery), name=f"webhook {delivery.event_id}"
            )
        return None if earliest is None else max(0.0, (earliest - now) / 1000)

    async def _attempt(self, delivery: Delivery) -> None:
        event_id = delivery.event_id
        attempt = delivery.attempts + 1
        try:
            event = self._bodies.get(event_id)
            if event is None:
                loop = asyncio.get_running_loop()
                event = await loop.run_in_executor(
                    self._store.reads, self._store.log.get, event_id, delivery.account_id
                )
            started = self._now_ms()
            url, outcome = await self._post(delivery, attempt, event)
            self._record(delivery, attempt, event, url, started, self._now_ms(), outcome)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never expected: a bug must not stop the other deliveries
            log.warning("webhook %s: %s", event_id, e)
            self._held_until[event_id] = self._now_ms() + int(self.policy.backoff_cap_s(1) * 1000)
        finally:
            self._in_flight.pop(event_id, None)
            self._wake.set()

    async def _post(self, delivery: Delivery, attempt: int, event: Event | None) -> tuple[str, AttemptResult]:
        rule = self._rules.get(delivery.account_id, delivery.rule)
        if rule is None:
            return "", AttemptResult(final_error=f"the rule {delivery.rule!r} was deleted")
        if not rule.webhook_url:
            return "", AttemptResult(final_error=f"the rule {delivery.rule!r} has no webhook URL any more")
        url = rule.webhook_url
        if event is None:
            return url, AttemptResult(final_error="the alert event is no longer in the store")
        body = orjson.dumps(event_to_json(event))
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event.id,
            ATTEMPT_HEADER: str(attempt),
        }
        if rule.webhook_secret:
            headers[SIGNATURE_HEADER] = signature(rule.webhook_secret, body)
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
                status = answer.status
        except TimeoutError:
            return url, AttemptResult(error=f"no answer within {self.policy.timeout_s:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            # The library's words may quote the URL, whose path or userinfo can be the secret.
            said = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            return url, AttemptResult(error=scrub(said, url))
        return url, AttemptResult(status=status, error="" if 200 <= status < 300 else f"HTTP {status}")

    def _record(
        self,
        delivery: Delivery,
        attempt: int,
        alert: Event | None,
        url: str,
        started_ms: int,
        ended_ms: int,
        outcome: AttemptResult,
    ) -> None:
        """The attempt's event, submitted to the log; the delivery waits until it is learnt.
        It names the receiver by ``url``'s origin and digest only (``redaction``)."""
        first_ms = delivery.first_attempt_ms or started_ms
        deadline_ms = first_ms + int(self.policy.give_up_after_s * 1000)
        error = scrub(outcome.final_error or outcome.error, url)[:ERROR_MAX]
        final = outcome.delivered or bool(outcome.final_error) or ended_ms >= deadline_ms
        shown = url_origin(url)
        details: dict[str, Any] = {
            "rule": delivery.rule,
            "event_id": delivery.event_id,
            "url": shown,
            "url_sha256": url_digest(url),
            "attempt": attempt,
            "status": outcome.status,
            "error": error,
            "duration_ms": ended_ms - started_ms,
            "final": final,
        }
        alert_of = f"Alert {delivery.event_id} of rule {delivery.rule}"
        if outcome.delivered:
            reason = f"{alert_of} was delivered to {shown} (HTTP {outcome.status}, attempt {attempt})."
        elif outcome.final_error:
            reason = f"{alert_of} will not be delivered: {error}."
        elif final:
            reason = (
                f"{alert_of} was not delivered to {shown}; gave up after {attempt} attempts (last: {error})."
            )
        else:
            wait_ms = int(self._random.uniform(0, self.policy.backoff_cap_s(attempt)) * 1000)
            next_ms = min(ended_ms + wait_ms, deadline_ms)
            details["next_attempt_ms"] = next_ms
            reason = (
                f"{alert_of} was not delivered to {shown} (attempt {attempt}: {error}); "
                f"next attempt at {iso_ms(next_ms)}."
            )
        if outcome.delivered:
            result = Outcome.SUCCESS
        else:
            result = Outcome.FAILURE if outcome.status else Outcome.ERROR
        record = Event(
            ALERT_DELIVERED if outcome.delivered else ALERT_DELIVERY_FAILED,
            alert.lead_id if alert is not None else RULE_LEAD_PREFIX + delivery.rule,
            ALERT_FLOW,
            timestamp_ms=started_ms,
            entity_id=alert.entity_id if alert is not None else "",
            outcome=result,
            reason=scrub(reason, url)[:REASON_MAX],
            duration_ms=ended_ms - started_ms,
            integration=INTEGRATION,
            response_code=outcome.status,
            details=details,
            account_id=delivery.account_id,
        )
        event_id = delivery.event_id
        self._recording[event_id] = attempt
        try:
            written: Future[list[AppendResult]] = self._store.log.submit([record])
        except StorageError as e:
            self._not_recorded(event_id, attempt, e)
            return
        waiting = asyncio.wrap_future(written)
        self._writes.add(waiting)
        waiting.add_done_callback(lambda done: self._recorded(event_id, attempt, done))

    def _recorded(self, event_id: str, attempt: int, done: asyncio.Future[list[AppendResult]]) -> None:
        self._writes.discard(done)
        if done.cancelled():
            self._not_recorded(event_id, attempt, None)
        elif (e := done.exception()) is not None:
            self._not_recorded(event_id, attempt, e)

    def _not_recorded(self, event_id: str, attempt: int, e: BaseException | None) -> None:
        """The attempt's event could not be written: the attempt is made again, same number,
        after a wait (the log decides what was attempted)."""
        log.warning("webhook %s: attempt %d not recorded: %s", event_id, attempt, e or "cancelled")
        if self._recording.get(event_id) == attempt:
            del self._recording[event_id]
        self._giving_up.discard(event_id)
        wait_s = self.policy.backoff_cap_s(attempt)
        self._held_until[event_id] = self._now_ms() + math.ceil(wait_s * 1000)
        self._wake.set()
