"""Alert evaluation as a durable consumer of the log (consumer ``alerts``).

Every committed event reaches the evaluator (``evaluator``) from the live feed right
after it is published, or from disk after a restart; what it emits is appended with
``log.submit`` and awaited inside ``handle``/``tick``, so the consumer saves its
position (with the evaluator's windows and firing state) only once the firings are
durable. A crash between the two replays the events after the saved position: the
alert events the log already holds after it are handed to the evaluator first
(``Evaluator.expect``), so a replayed firing is recognised and not appended again.

Time: a tick's ``now`` is the wall clock only while the evaluator is caught up with the
log; while it catches up (after a restart, or behind a burst) it is the ``recorded_at``
of the last event evaluated, so a replay decides by time what the live run decided then,
not what the clock says now (the alert events the run before wrote by time are applied
as they pass: ``Evaluator`` docstring).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from leadtrail.server.consumers import DurableConsumer, Saved
from leadtrail.server.crashpoints import crash_point
from leadtrail.server.served_store import ServedStore
from leadtrail.storage import Event, EventLog

from .evaluator import Emission, Evaluator, LeadQuestion
from .model import ALERT_FIRED, ALERT_FLOW, ALERT_RESOLVED, FiringAlert, Rule
from .rulebook import RuleBook

CONSUMER = "alerts"
READ_CHUNK = 1000

log = logging.getLogger("leadtrail.server")


def lead_price_sum(event_log: EventLog, account_id: str, lead_id: str, before_position: int) -> Decimal:
    """The sum of the prices of a lead's events at positions below ``before_position``."""
    total = Decimal(0)
    start: tuple[int, int] | None = None
    while True:
        page = event_log.lead_events(lead_id, account_id, start=start, limit=READ_CHUNK, include_lead=False)
        for e in page:
            if e.price and e.position < before_position:
                try:
                    total += Decimal(e.price)
                except InvalidOperation:
                    pass
        if len(page) < READ_CHUNK:
            return total
        last = page[-1]
        start = (last.timestamp_ms or 0, last.position + 1)


def lead_price_sums(event_log: EventLog, leads: list[LeadQuestion], before_position: int) -> list[Decimal]:
    """Each lead's price sum before ``before_position``: what the evaluator saw when the
    index counts no other event of the lead (it may count more, never fewer), else read."""
    sizes = event_log.lead_sizes([(q.lead_id, q.account_id) for q in leads])
    return [
        q.known_sum
        if size == q.known_events
        else lead_price_sum(event_log, q.account_id, q.lead_id, before_position)
        for q, size in zip(leads, sizes, strict=True)
    ]


def alert_events_after(event_log: EventLog, position: int) -> list[Event]:
    """The alert firings and resolutions the log holds after ``position``, in order."""
    found = []
    start = position + 1
    while True:
        chunk = list(event_log.read_from(start, limit=READ_CHUNK))
        for e in chunk:
            if e.flow_id == ALERT_FLOW and e.type in (ALERT_FIRED, ALERT_RESOLVED):
                found.append(e)
        if len(chunk) < READ_CHUNK:
            return found
        start = chunk[-1].position + 1


class Alerting:
    """Evaluates every account's rules on the committed log (the writer process only)."""

    def __init__(self, store: ServedStore, rules: RuleBook) -> None:
        self._store = store
        self._rules = rules
        self.evaluator = Evaluator(rules.rules())
        self._consumer: DurableConsumer | None = None
        self._recorded_ms = 0
        """The ``recorded_at`` of the last event evaluated (0: none since the start)."""

    async def start(self) -> None:
        store = self._store
        self._rules.add_listener(self._rules_changed)
        self._consumer = DurableConsumer.following(store, CONSUMER, self)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def position(self) -> int:
        """Every event up to here is evaluated."""
        return self._consumer.position if self._consumer is not None else 0

    async def evaluated(self, position: int, timeout: float) -> bool:
        """Wait until the events up to ``position`` are evaluated (False after ``timeout``)."""
        if self._consumer is None:
            return False
        return await self._consumer.handled(position, timeout)

    def firing(self, account_id: str | None = None) -> list[FiringAlert]:
        """The alerts firing now, of ``account_id`` (of every account when None)."""
        return self.evaluator.firing(account_id)

    def refused(self) -> dict[tuple[str, str], int]:
        """Per (account, rule): events of new groups not tracked (the rule holds as many
        groups as it may), since the rule was set or the server started."""
        return self.evaluator.refused

    def _rules_changed(self, rules: list[Rule]) -> None:
        self.evaluator.set_rules(rules)

    # -- the consumer's handler ----------------------------------------------------------------------

    async def restore(self, saved: Saved) -> None:
        self._recorded_ms = 0
        self.evaluator.restore(saved.state, self._rules.rules(), saved.position)
        done = await self._store.run(alert_events_after, self._store.log, saved.position)
        self.evaluator.expect(done)
        if done:
            log.info("alerts: %d alert events after position %d already written", len(done), saved.position)

    async def handle(self, events: Sequence[Event]) -> None:
        evaluator = self.evaluator
        needed = evaluator.needed_leads(events)
        if needed:  # one trip to the read pool for the batch, not one a lead
            sums = await self._store.run(lead_price_sums, self._store.log, needed, events[0].position)
            for q, total in zip(needed, sums, strict=True):
                evaluator.hold_lead(q.account_id, q.lead_id, total)
        emissions = evaluator.handle(events, _now_ms())
        self._recorded_ms = events[-1].recorded_at_ms or self._recorded_ms
        if emissions:
            await self._append(emissions)

    async def tick(self, now_ms: int) -> None:
        if self.evaluator.position < self._store.feed.last_position:
            if not self._recorded_ms:
                return  # catching up and nothing evaluated yet: no time to go by
            now_ms = min(now_ms, self._recorded_ms)
        emissions = self.evaluator.tick(now_ms)
        if emissions:
            await self._append(emissions)

    def state(self) -> Any:
        return self.evaluator.state()

    async def _append(self, emissions: list[Emission]) -> None:
        events = [e.event() for e in emissions if not e.done]
        if not events:
            return
        crash_point("alerts.before_emit")
        await asyncio.wrap_future(self._store.log.submit(events))
        crash_point("alerts.before_save")


def _now_ms() -> int:
    return int(time.time() * 1000)
