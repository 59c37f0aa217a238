"""AlertService: an account's alert rules (admin keys) and its alerts (reader keys and up).

Rules are checked by ``rules.rule_from_message`` and kept by the ``RuleBook``
(its file is written on the read pool; the evaluator hears of the change on the
event loop). Another account's rules and alerts do not exist for a caller.

Alerts are read from the log, where the evaluator writes them (``alert.fired``,
``alert.resolved``): newest first, a resolution paired to its firing by
``details.fired_event_id``. What the evaluator says fires now is added whatever
its age, so a long-firing alert is listed however far back its event is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc

from leadtrail.server.caller import Caller
from leadtrail.server.convert import ms_to_timestamp, plain_decimal
from leadtrail.server.served_store import ServedStore
from leadtrail.server.status import Context, ServiceError, invalid, not_found, unary
from leadtrail.storage import Event
from leadtrail.v1 import alerts_pb2, alerts_pb2_grpc, event_pb2

from .model import ALERT_FIRED, ALERT_FLOW, ALERT_RESOLVED, FiringAlert, Kind
from .rulebook import RuleBook, TooManyRulesError
from .rules import Scope, check_names, keeping_secret, message_from_rule, rule_from_message

DEFAULT_ALERTS = 1000
MAX_ALERTS = 1000
SCAN_PAGE = 1000
MAX_SCANNED = 20_000
"""Alert events read at most per ListAlerts: "recent" is bounded; firing ones come from the
evaluator whatever their age."""
MAX_SCANNED_FIRING = 2_000
"""A ``firing_only`` listing (``leadtrail top`` asks every second) reads the newest alert
events only: what fires now of any age comes from the evaluator, the authority for it."""


@dataclass
class _Listed:
    """One alert as the listing builds it, from its events and the evaluator."""

    rule: str
    group: str
    kind: int
    fired_at_ms: int
    value: str
    event_id: str
    reason: str
    lead_id: str
    firing: bool
    resolved_at_ms: int | None = None
    resolved_event_id: str = ""
    rule_version: str = ""

    def message(self) -> alerts_pb2.Alert:
        m = alerts_pb2.Alert(
            rule=self.rule,
            group=self.group,
            firing=self.firing,
            value=self.value,
            event_id=self.event_id,
            kind=self.kind,  # type: ignore[arg-type]
            resolved_event_id=self.resolved_event_id,
            reason=self.reason,
            lead_id=self.lead_id,
        )
        ms_to_timestamp(self.fired_at_ms, m.fired_at)
        if self.resolved_at_ms is not None:
            ms_to_timestamp(self.resolved_at_ms, m.resolved_at)
        return m


class AlertService(alerts_pb2_grpc.AlertServiceServicer):
    def __init__(self, store: ServedStore) -> None:
        self.store = store

    def _book(self) -> RuleBook:
        rules = self.store.rules
        if rules is None:  # a follower forwards the service to the writer: never here
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "alert rules are kept by the writer")
        return rules

    @unary
    async def SetAlertRule(self, request: alerts_pb2.AlertRule, context: Context) -> alerts_pb2.AlertRule:
        book = self._book()
        caller = Caller.current()
        key = caller.key
        scope = Scope(key.entities, key.flows) if key is not None else Scope()
        rule = rule_from_message(request, caller.account, scope, _now_ms(), self.store.log.last_position)
        previous = book.get(rule.account_id, rule.name)
        caller.may_change(f"alert rule {rule.name!r}", None if previous is None else previous.filter, "rules")
        rule = keeping_secret(rule, previous)
        try:
            rule = await self.store.run(lambda: book.set(rule, notify=False))
        except TooManyRulesError as e:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)) from None
        book.notify()
        return message_from_rule(rule)

    @unary
    async def ListAlertRules(
        self, request: alerts_pb2.ListAlertRulesRequest, context: Context
    ) -> alerts_pb2.ListAlertRulesResponse:
        rules = self._book().rules(Caller.current().account)
        return alerts_pb2.ListAlertRulesResponse(rules=[message_from_rule(r) for r in rules])

    @unary
    async def DeleteAlertRule(
        self, request: alerts_pb2.DeleteAlertRuleRequest, context: Context
    ) -> alerts_pb2.DeleteAlertRuleResponse:
        if not request.name:
            raise invalid("name", "required")
        check_names([request.name])
        book = self._book()
        caller = Caller.current()
        account = caller.account
        held = book.get(account, request.name)
        caller.may_change(f"alert rule {request.name!r}", None if held is None else held.filter, "rules")
        deleted = await self.store.run(lambda: book.delete(account, request.name, notify=False))
        if not deleted:
            raise not_found(f"alert rule {request.name!r} not found")
        book.notify()
        return alerts_pb2.DeleteAlertRuleResponse()

    @unary
    async def ListAlerts(
        self, request: alerts_pb2.ListAlertsRequest, context: Context
    ) -> alerts_pb2.ListAlertsResponse:
        limit = request.limit or DEFAULT_ALERTS
        if limit > MAX_ALERTS:
            raise invalid("limit", f"{limit} is over the limit of {MAX_ALERTS}")
        if request.rule:
            check_names([request.rule])
        caller = Caller.current()
        f = caller.filter(event_pb2.EventFilter(types=[ALERT_FIRED, ALERT_RESOLVED], flow_id=ALERT_FLOW))
        log = self.store.log

        most = MAX_SCANNED_FIRING if request.firing_only and self.store.alerting is not None else MAX_SCANNED

        def scan() -> list[Event]:
            events: list[Event] = []
            cursor: str | None = None
            while len(events) < most:
                page = log.scan(f, after=cursor, limit=SCAN_PAGE, descending=True, include_lead=False)
                events.extend(page.events)
                if page.cursor is None:
                    break
                cursor = page.cursor
            return events

        listed = _from_events(await self.store.run(scan), request.rule)
        alerting = self.store.alerting
        if alerting is not None:
            firing_now = {
                a.event_id: a
                for a in alerting.firing(caller.account)
                if (not request.rule or a.rule == request.rule)
                and (caller.key is None or caller.key.sees(a.group, ALERT_FLOW))
            }
            book = self._book()
            for a in listed:
                rule = book.get(caller.account, a.rule)
                if a.firing and rule is not None and rule.version == a.rule_version:
                    # The evaluator holds this rule as it was when the alert fired: it is the
                    # authority on whether the alert fires still.
                    a.firing = a.event_id in firing_now
            known = {a.event_id for a in listed}
            # A firing older than the events read is listed too, whatever its age.
            listed.extend(_from_firing(a) for a in firing_now.values() if a.event_id not in known)
        if request.firing_only:
            listed = [a for a in listed if a.firing]
        listed.sort(key=lambda a: (a.fired_at_ms, a.event_id), reverse=True)
        answer = alerts_pb2.ListAlertsResponse(alerts=[a.message() for a in listed[:limit]])
        self.store.audit.record(caller, "ListAlerts", request, len(answer.alerts))
        return answer


def _from_events(events: list[Event], rule: str) -> list[_Listed]:
    """Alerts of alert events read newest first: a resolution comes before its firing."""
    resolutions: dict[str, Event] = {}
    listed: list[_Listed] = []
    for event in events:
        details: dict[str, Any] = dict(event.details)
        if rule and details.get("rule") != rule:
            continue
        if event.type == ALERT_RESOLVED:
            fired = details.get("fired_event_id")
            if isinstance(fired, str) and fired:
                resolutions.setdefault(fired, event)
            continue
        kind = _kind(details.get("kind"))
        resolved = resolutions.get(event.id)
        resolves = kind is not None and Kind(kind).resolves
        listed.append(
            _Listed(
                rule=str(details.get("rule", "")),
                group=str(details.get("group", event.entity_id)),
                kind=kind or 0,
                fired_at_ms=event.timestamp_ms or 0,
                value=_decimal_text(details.get("value")),
                event_id=event.id,
                reason=event.reason,
                lead_id=event.lead_id,
                # MATCH and LEAD_MARGIN alerts are instantaneous: never firing, never resolved.
                firing=resolves and resolved is None,
                resolved_at_ms=resolved.timestamp_ms if resolved is not None else None,
                resolved_event_id=resolved.id if resolved is not None else "",
                rule_version=str(details.get("rule_version", "")),
            )
        )
    return listed


def _from_firing(firing: FiringAlert) -> _Listed:
    return _Listed(
        rule=firing.rule,
        group=firing.group,
        kind=int(firing.kind),
        fired_at_ms=firing.fired_at_ms,
        value=plain_decimal(firing.value),
        event_id=firing.event_id,
        reason=firing.reason,
        lead_id=firing.lead_id,
        firing=True,
    )


def _kind(label: object) -> int | None:
    if not isinstance(label, str):
        return None
    try:
        return int(Kind[label.upper()])
    except KeyError:
        return None


def _decimal_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    try:
        number = Decimal(value)
    except InvalidOperation:
        return ""
    return plain_decimal(number) if number.is_finite() else ""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
