"""Live traffic: the simulator's journeys as an endless stream, with incidents.

``leadtrail demo --live`` sends these at a chosen rate so that alerts, ``top``
and the console have something real to watch. Time here is virtual: the n-th
event emitted is at ``n / rate`` seconds, so which events an incident touches
depends on the seed alone, never on how fast the server answered (the sender
stamps the wall-clock time on each event as it goes out).

Incidents come every ``incident_every_s`` seconds: incident k runs from
``(k + 0.5) * every`` to ``(k + 1) * every``, so half of the time is calm and
the first one starts half a period in. The default period of ``demo --live``
(720 s) makes incidents of 6 minutes: long enough for the ``service-down``
preset (no success for 5 minutes) to fire while a service is down. Their kinds are drawn in shuffled
rounds of three:

- ``buyer-outage``: one buyer (the first in ping-tree order of a busy flow)
  answers every delivery with an error: ``recipient.delivered`` becomes
  ``recipient.error`` (HTTP 503, no revenue), a successful retry fails too;
- ``slow-enhancement``: one enrichment service stops succeeding (every call a
  timeout error), or, the next time, gets ten times slower (its ``duration_ms``);
- ``bad-source``: one source sends leads that are rejected: ``source.accepted``
  becomes ``source.rejected`` and the journey ends there (``flow.completed``
  FAILURE; the lead's later steps are not emitted).

Every event an incident changed carries ``details.incident`` (its kind).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from .catalog import Flow
from .records import ERROR, FAILURE, SimulatedEvent
from .simulator import LeadFlowSimulator

IncidentKind = Literal["buyer-outage", "slow-enhancement", "bad-source"]
KINDS: Final[tuple[IncidentKind, ...]] = ("buyer-outage", "slow-enhancement", "bad-source")
SLOWDOWN: Final = 10
LEADS_PER_DAY: Final = 200
"""Leads simulated per call of the simulator; each call is a new day (its feedback comes at the end)."""
REJECTED_LEADS_KEPT: Final = 10_000
"""Leads of a bad source remembered so that their later events (feedback) are not emitted."""
_BAD_SOURCE_REASON = "Rejected: invalid phone number and e-mail address"
_BUSY_FLOWS = 5


@dataclass(frozen=True, slots=True)
class Incident:
    kind: IncidentKind
    entity_id: str
    """The buyer, the service or the source it hits."""
    name: str
    start_s: float
    end_s: float
    down: bool = False
    """slow-enhancement only: the service fails instead of slowing down."""
    timeout_ms: int = 0
    """slow-enhancement only: how long the service's failing calls take."""

    def describe(self) -> str:
        if self.kind == "buyer-outage":
            what = "every delivery fails"
        elif self.kind == "slow-enhancement":
            what = "every call times out" if self.down else f"{SLOWDOWN}x slower"
        else:
            what = "its leads are rejected"
        return f"{self.kind} {self.name} ({self.entity_id}): {what}"


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """An incident starting (``started``) or ending, in the stream where it happens."""

    incident: Incident
    started: bool


class LiveTraffic:
    """An endless, deterministic stream of events (and incident changes) for ``demo --live``."""

    def __init__(self, seed: int, rate: int, incident_every_s: int) -> None:
        if rate < 1:
            raise ValueError(f"rate {rate}: must be at least 1")
        self._simulator = LeadFlowSimulator(seed=seed)
        self._rate = rate
        self._every = incident_every_s
        self._rng = random.Random(f"{seed}:incidents")
        self._round: list[IncidentKind] = []
        self._journeys = self._days()
        self.emitted = 0
        """Events emitted so far; the next one is at ``emitted / rate`` virtual seconds."""
        self._incident_index = 0
        self._slow_incidents = 0
        self._next: Incident | None = self._plan(0) if incident_every_s > 0 else None
        self.active: Incident | None = None
        self._rejected: OrderedDict[str, None] = OrderedDict()

    @property
    def flows(self) -> tuple[Flow, ...]:
        return self._simulator.flows

    def take(self, n: int) -> list[SimulatedEvent | IncidentChange]:
        """The next ``n`` events, with the incident changes that fall between them."""
        out: list[SimulatedEvent | IncidentChange] = []
        taken = 0
        while taken < n:
            out.extend(self._changes(self.emitted / self._rate))
            event = self._apply(next(self._journeys))
            if event is None:
                continue
            out.append(event)
            taken += 1
            self.emitted += 1
        return out

    def _days(self) -> Iterator[SimulatedEvent]:
        while True:
            yield from self._simulator.events(LEADS_PER_DAY)

    # ------------------------------------------------------------------ incidents

    def _changes(self, now_s: float) -> Iterator[IncidentChange]:
        if self.active is not None and now_s >= self.active.end_s:
            yield IncidentChange(self.active, started=False)
            self.active = None
        if self._next is not None and now_s >= self._next.start_s:
            self.active = self._next
            self._incident_index += 1
            self._next = self._plan(self._incident_index)
            yield IncidentChange(self.active, started=True)

    def _plan(self, index: int) -> Incident:
        if not self._round:
            self._round = list(KINDS)
            self._rng.shuffle(self._round)
        kind = self._round.pop(0)
        busy = self.flows[:_BUSY_FLOWS]
        flow = self._rng.choices(busy, weights=[f.weight for f in busy])[0]
        start, end = (index + 0.5) * self._every, (index + 1) * self._every
        if kind == "buyer-outage":
            buyer = flow.recipients[0]
            return Incident(kind, buyer.id, buyer.name, start, end)
        if kind == "slow-enhancement":
            service = self._rng.choice(flow.enhancements)
            # Down first, then slow, in turn: the first such incident is the one the service-down
            # preset (no success for 5 minutes) sees when incidents last longer than that.
            down = self._slow_incidents % 2 == 0
            self._slow_incidents += 1
            return Incident(
                kind, service.entity_id, service.service, start, end, down=down, timeout_ms=service.timeout_ms
            )
        source = self._rng.choice(flow.sources)
        return Incident(kind, source.id, source.name, start, end)

    def _apply(self, event: SimulatedEvent) -> SimulatedEvent | None:
        """The event as the active incident changes it; None when it is not emitted at all."""
        lead = event["lead_id"]
        if lead in self._rejected:
            return _rejected(event)
        incident = self.active
        if incident is None:
            return event
        if incident.kind == "buyer-outage":
            return _outage(event, incident)
        if incident.kind == "slow-enhancement":
            return _slow(event, incident)
        if event["entity_id"] == incident.entity_id and event["type"] == "source.submitted":
            self._rejected[lead] = None
            if len(self._rejected) > REJECTED_LEADS_KEPT:
                self._rejected.popitem(last=False)
            return _tagged(event, incident)
        return event


def _tagged(event: SimulatedEvent, incident: Incident) -> SimulatedEvent:
    return {**event, "details": {**event["details"], "incident": incident.kind}}


def _outage(event: SimulatedEvent, incident: Incident) -> SimulatedEvent:
    if event["entity_id"] != incident.entity_id or not event["type"].startswith(("recipient.", "retry.")):
        return event
    changed = _tagged(event, incident)
    if event["type"] in ("recipient.delivered", "retry.attempted") and event["outcome"] != ERROR:
        changed["type"] = "recipient.error" if event["type"] == "recipient.delivered" else "retry.attempted"
        changed["outcome"] = ERROR
        changed["reason"] = "HTTP 503 from buyer"
        changed["response_code"] = 503
        changed["price"] = ""
        changed["details"] = {
            k: v for k, v in changed["details"].items() if k not in ("response", "buyer_lead_id")
        }
    return changed


def _slow(event: SimulatedEvent, incident: Incident) -> SimulatedEvent:
    if event["entity_id"] != incident.entity_id or event["type"] != "enhancement.success":
        return event
    changed = _tagged(event, incident)
    if incident.down:
        timeout = incident.timeout_ms
        changed["type"] = "enhancement.error"
        changed["outcome"] = ERROR
        changed["duration_ms"] = timeout
        changed["reason"] = f"Service timeout after {timeout}ms"
        changed["response_code"] = 0
        changed["details"] = {"service": event["details"].get("service", ""), "incident": incident.kind}
    else:
        changed["duration_ms"] = event["duration_ms"] * SLOWDOWN
    return changed


def _rejected(event: SimulatedEvent) -> SimulatedEvent | None:
    """A later event of a bad source's lead: the answer to the source and the verdict are
    emitted (as a rejection), the steps a rejected lead never reaches are not."""
    kind = event["type"]
    if kind == "source.accepted":
        return {
            **event,
            "type": "source.rejected",
            "outcome": FAILURE,
            "reason": _BAD_SOURCE_REASON,
            "price": "",
            "response_code": 200,
            "details": {**event["details"], "incident": "bad-source"},
        }
    if kind == "flow.completed":
        return {
            **event,
            "outcome": FAILURE,
            "reason": _BAD_SOURCE_REASON,
            "details": {"recipients_delivered": 0, "incident": "bad-source"},
        }
    if kind == "source.rejected":  # the journey was a rejection anyway
        return {**event, "details": {**event["details"], "incident": "bad-source"}}
    return None
