"""What a page shows of an answer: template values made from the servicers' messages.

Plain text and numbers only; the templates escape them.
"""

from __future__ import annotations

from typing import Any

import orjson

from leadtrail.client.wire import timestamp_to_ms
from leadtrail.server.convert import event_from_proto, event_to_json
from leadtrail.v1 import alerts_pb2, event_pb2, query_pb2

from . import display

CHANGE_KINDS = {
    query_pb2.CHANGE_KIND_ADDED: "added",
    query_pb2.CHANGE_KIND_CHANGED: "changed",
    query_pb2.CHANGE_KIND_REMOVED: "removed",
}


def step(step: query_pb2.TimelineStep) -> dict[str, Any]:
    e = step.event
    ms = timestamp_to_ms(e.timestamp)
    return {
        "id": e.id,
        "position": e.position,
        "type": e.type,
        "ms": ms,
        "time": display.utc(ms),
        "since": display.since_previous(step.since_previous_ms),
        "outcome": display.outcome(e.outcome),
        "outcome_class": display.outcome_class(e.outcome),
        "entity": e.entity_id,
        "price": e.price,
        "reason": e.reason,
        "changes": [
            {
                "kind": CHANGE_KINDS.get(c.kind, "changed"),
                "field": c.field,
                "before": display.value_text(c.before) if c.HasField("before") else "",
                "after": display.value_text(c.after) if c.HasField("after") else "",
            }
            for c in step.changes
        ],
    }


def snapshot(lead_json: bytes) -> list[tuple[str, str]]:
    lead = orjson.loads(lead_json) if lead_json else {}
    return sorted((name, display.as_text(value)) for name, value in lead.items())


def as_exported(message: event_pb2.Event) -> dict[str, Any]:
    """The event as an export line has it (``export.py``'s JSON shape)."""
    event = event_from_proto(message, 0, message.account_id).copy()
    event.position = message.position
    event.recorded_at_ms = timestamp_to_ms(message.recorded_at)
    return event_to_json(event)


def alerts(answer: alerts_pb2.ListAlertsResponse) -> list[dict[str, Any]]:
    return [
        {
            "rule": a.rule,
            "group": a.group,
            "firing": a.firing,
            "fired_at": display.utc_of(a.fired_at) if a.HasField("fired_at") else "",
            "resolved_at": display.utc_of(a.resolved_at) if a.HasField("resolved_at") else "",
            "value": a.value,
            "reason": a.reason,
            "lead_id": a.lead_id,
            "event_id": a.event_id,
        }
        for a in answer.alerts
    ]


def leads(answer: query_pb2.FindLeadsResponse) -> list[dict[str, Any]]:
    return [
        {
            "lead_id": m.lead_id,
            "first": display.utc_of(m.first_timestamp),
            "last": display.utc_of(m.last_timestamp),
            "events": m.events,
        }
        for m in answer.leads
    ]
