"""A stored configuration's ``EventFilter`` (an alert rule's, a sink's, an export job's) in its
two other forms: the JSON of its book's file, and the wire message answers show.

The JSON keeps every field, the setting key's scope and the hidden types included (what
the entry may never see); the wire shows what the caller asked for alone.
"""

from __future__ import annotations

from typing import Any

from leadtrail.server.convert import field_rule_message, ms_to_timestamp
from leadtrail.storage import EventFilter, Outcome, RuleError
from leadtrail.storage.field_rules import rule_from_json, rule_json
from leadtrail.v1 import event_pb2


def filter_json(f: EventFilter) -> dict[str, Any]:
    """The filter as its book's file holds it (the account is the entry's own). Field rules
    only when there are some: a book without them is written byte for byte as before."""
    raw: dict[str, Any] = {
        "types": list(f.types),
        "lead_id": f.lead_id,
        "flow_id": f.flow_id,
        "entity_id": f.entity_id,
        "outcomes": [int(o) for o in f.outcomes],
        "start_ms": f.start_ms,
        "end_ms": f.end_ms,
        "entity_scope": list(f.entity_scope),
        "flow_scope": list(f.flow_scope),
        "hidden_types": list(f.hidden_types),
    }
    if f.where:
        raw["where"] = [rule_json(rule) for rule in f.where]
    return raw


def filter_from_json(account_id: str, raw: dict[str, Any]) -> EventFilter:
    """``filter_json`` read back, of ``account_id``; a field a file written before it existed
    lacks is empty. Raises ValueError, KeyError or TypeError on a damaged file."""
    try:
        where = tuple(rule_from_json(rule) for rule in raw.get("where", ()))
    except RuleError as e:
        raise ValueError(f"where: {e}") from None
    return EventFilter(
        account_id=account_id,
        types=tuple(raw.get("types", ())),
        lead_id=raw.get("lead_id", ""),
        flow_id=raw.get("flow_id", ""),
        entity_id=raw.get("entity_id", ""),
        outcomes=tuple(Outcome(o) for o in raw.get("outcomes", ())),
        start_ms=raw.get("start_ms"),
        end_ms=raw.get("end_ms"),
        entity_scope=tuple(raw.get("entity_scope", ())),
        flow_scope=tuple(raw.get("flow_scope", ())),
        hidden_types=tuple(raw.get("hidden_types", ())),
        where=where,
    )


def filter_message(f: EventFilter) -> event_pb2.EventFilter:
    """The filter as answers show it: what the caller set, never the scope or hidden types."""
    message = event_pb2.EventFilter(
        types=f.types,
        lead_id=f.lead_id,
        flow_id=f.flow_id,
        entity_id=f.entity_id,
        outcomes=[int(o) for o in f.outcomes],  # type: ignore[misc]
        where=[field_rule_message(rule) for rule in f.where],
    )
    if f.start_ms is not None:
        ms_to_timestamp(f.start_ms, message.start)
    if f.end_ms is not None:
        ms_to_timestamp(f.end_ms, message.end)
    return message
