"""Between the wire (``leadtrail.v1`` messages) and the storage engine's events and filters.

The engine speaks UTC milliseconds, decimal strings and plain JSON-like
mappings; the wire speaks ``Timestamp``, decimal strings and ``Struct``. The
value converters underneath (times, ``Struct``, decimals, policies) are the
SDK's public ``leadtrail.client.wire``, kept once for both sides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from leadtrail.client.wire import dict_to_struct as dict_to_struct  # importable from here as before
from leadtrail.client.wire import iso_ms as iso_ms
from leadtrail.client.wire import ms_to_timestamp as ms_to_timestamp
from leadtrail.client.wire import outcome_name
from leadtrail.client.wire import plain_decimal as plain_decimal
from leadtrail.client.wire import python_to_value as python_to_value
from leadtrail.client.wire import struct_to_dict as struct_to_dict
from leadtrail.client.wire import timestamp_to_ms as timestamp_to_ms
from leadtrail.client.wire import value_to_python as value_to_python
from leadtrail.storage import (
    DEFAULT_ACCOUNT,
    Event,
    EventFilter,
    FieldRule,
    Outcome,
    RuleError,
    ValidationError,
    new_event_id,
)
from leadtrail.storage.field_rules import MAX_RULES
from leadtrail.storage.validation import TYPE_MAX, TYPE_PATTERN
from leadtrail.v1 import event_pb2

_OUTCOMES = {int(o) for o in Outcome}
_OUTCOME_BY_NUMBER = tuple(Outcome(n) for n in range(max(_OUTCOMES) + 1))
assert set(_OUTCOME_BY_NUMBER) == set(Outcome)  # numbered 0..n without gaps, as the proto enum
_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")


# -- events ---------------------------------------------------------------------


def _json_map(message: event_pb2.Event, index: int, field: str, data: bytes) -> dict[str, Any]:
    """``details``/``lead`` of an appended event sent as ``*_json`` bytes (``data``, not empty)."""
    if message.HasField(field):  # type: ignore[arg-type]
        raise ValidationError(index, f"{field}_json", f"set {field} or {field}_json, not both")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValidationError(index, f"{field}_json", f"is not valid JSON ({e})") from None
    if type(value) is not dict:
        raise ValidationError(index, f"{field}_json", f"must be a JSON object, not {type(value).__name__}")
    return value


def event_from_proto(message: event_pb2.Event, index: int, account_id: str) -> Event:
    """An appended event as the engine takes it; output-only fields are ignored.

    Every append pays this, so fields are read once each and the event is built
    positionally (``Event``'s field order); snapshots sent as JSON bytes (as the SDK
    sends them) are parsed once, with no ``Struct`` in between."""
    outcome = message.outcome
    if not 0 <= outcome < len(_OUTCOME_BY_NUMBER):
        raise ValidationError(index, "outcome", f"{outcome} is not a known Outcome (0..{max(_OUTCOMES)})")
    details_json, lead_json = message.details_json, message.lead_json
    details = _json_map(message, index, "details", details_json) if details_json else None
    lead = _json_map(message, index, "lead", lead_json) if lead_json else None
    if message.HasField("timestamp"):
        ts = message.timestamp
        timestamp_ms: int | None = ts.seconds * 1000 + ts.nanos // 1_000_000  # as timestamp_to_ms
    else:
        timestamp_ms = None
    return Event(
        message.type,
        message.lead_id,
        message.flow_id,
        message.id or new_event_id(),
        timestamp_ms,
        message.entity_id,
        _OUTCOME_BY_NUMBER[outcome],
        message.reason,
        message.duration_ms,
        message.integration,
        message.response_code,
        message.price,
        struct_to_dict(message.details) if details is None else details,
        struct_to_dict(message.lead) if lead is None else lead,
        account_id,
    )


def event_to_proto(
    event: Event, out: event_pb2.Event | None = None, json_snapshots: bool = False
) -> event_pb2.Event:
    """The wire form of a stored event; ``json_snapshots`` fills ``*_json`` instead of the Structs."""
    message = event_pb2.Event() if out is None else out
    message.id = event.id
    message.type = event.type
    ms_to_timestamp(event.timestamp_ms or 0, message.timestamp)
    ms_to_timestamp(event.recorded_at_ms, message.recorded_at)
    message.position = event.position
    message.account_id = event.account_id
    message.lead_id = event.lead_id
    message.flow_id = event.flow_id
    message.entity_id = event.entity_id
    message.outcome = int(event.outcome)  # type: ignore[assignment]
    message.reason = event.reason
    message.duration_ms = event.duration_ms
    message.integration = event.integration
    message.response_code = event.response_code
    message.price = event.price
    if json_snapshots:
        if event.details:
            message.details_json = orjson.dumps(event.details)
        if event.lead:
            message.lead_json = orjson.dumps(event.lead)
        return message
    if event.details:
        dict_to_struct(event.details, message.details)
    if event.lead:
        dict_to_struct(event.lead, message.lead)
    return message


def event_to_json(event: Event, include_lead: bool = True) -> dict[str, Any]:
    """One event as an export or ``dump`` line: API.md field names, RFC 3339 times."""
    record: dict[str, Any] = {
        "id": event.id,
        "position": event.position,
        "type": event.type,
        "timestamp": iso_ms(event.timestamp_ms or 0),
        "recorded_at": iso_ms(event.recorded_at_ms),
        "account_id": event.account_id,
        "lead_id": event.lead_id,
        "flow_id": event.flow_id,
        "entity_id": event.entity_id,
        "outcome": outcome_name(int(event.outcome)),
        "reason": event.reason,
        "duration_ms": event.duration_ms,
        "integration": event.integration,
        "response_code": event.response_code,
        "price": event.price,
        "details": dict(event.details),
    }
    if include_lead:
        record["lead"] = dict(event.lead)
    return record


# -- filters --------------------------------------------------------------------


def filter_from_proto(message: event_pb2.EventFilter, account_id: str = DEFAULT_ACCOUNT) -> EventFilter:
    for i, pattern in enumerate(message.types):
        _check_type_pattern(f"filter.types[{i}]", pattern)
    outcomes: list[Outcome] = []
    for i, outcome in enumerate(message.outcomes):
        if outcome not in _OUTCOMES:
            raise ValidationError(None, f"filter.outcomes[{i}]", f"{outcome} is not a known Outcome")
        outcomes.append(Outcome(outcome))
    start = timestamp_to_ms(message.start) if message.HasField("start") else None
    end = timestamp_to_ms(message.end) if message.HasField("end") else None
    for name in ("lead_id", "flow_id", "entity_id"):
        if len(getattr(message, name)) > 128:
            raise ValidationError(None, f"filter.{name}", "longer than the 128 characters an id may have")
    where = field_rules_from_proto(message.where)
    return EventFilter(
        account_id=account_id,
        types=tuple(message.types),
        lead_id=message.lead_id,
        flow_id=message.flow_id,
        entity_id=message.entity_id,
        outcomes=tuple(outcomes),
        start_ms=start,
        end_ms=end,
        where=where,
    )


def field_rules_from_proto(rules: Sequence[event_pb2.FieldRule]) -> tuple[FieldRule, ...]:
    """``EventFilter.where`` checked: INVALID_ARGUMENT naming ``filter.where[i]``, the problem
    and the limit, before anything is read or stored."""
    if len(rules) > MAX_RULES:
        raise ValidationError(None, "filter.where", f"{len(rules)} rules, over the limit of {MAX_RULES}")
    checked = []
    for i, rule in enumerate(rules):
        try:
            checked.append(FieldRule(rule.field, rule.op, tuple(rule.values)))  # type: ignore[arg-type]
        except RuleError as e:
            raise ValidationError(None, f"filter.where[{i}]", e.problem) from None
    return tuple(checked)


def field_rule_message(rule: FieldRule) -> event_pb2.FieldRule:
    """A rule as answers show it (a stored alert rule's, sink's or export job's)."""
    return event_pb2.FieldRule(field=rule.field, op=int(rule.op), values=rule.values)  # type: ignore[arg-type]


def _check_type_pattern(field: str, pattern: str) -> None:
    ok = (
        _PREFIX_PATTERN.fullmatch(pattern[:-2]) is not None
        if pattern.endswith(".*")
        else TYPE_PATTERN.fullmatch(pattern) is not None
    )
    if len(pattern) > TYPE_MAX or not ok:
        raise ValidationError(
            None,
            field,
            f"{pattern!r} is neither an event type (<category>.<action>, at most {TYPE_MAX} "
            "characters) nor a prefix pattern such as 'recipient.*'",
        )
