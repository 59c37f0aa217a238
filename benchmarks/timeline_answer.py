"""A realistic ``GetTimeline`` answer, built from the workload as a server would send it.

Used where the harness needs the bytes of an answer without a store behind
them: the gRPC ceiling's canned timeline (the same bytes on every call, so
that its figure is what transport and client decoding cost alone) and the
client decoding benchmark. Every step carries the event with its JSON
snapshot and details, position, ``recorded_at`` and account, and the field
changes against the previous step, as ``json_snapshots=True`` asks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from leadtrail.client.wire import ms_to_timestamp, python_to_value
from leadtrail.server.simulation import SimulatedEvent
from leadtrail.v1 import event_pb2, query_pb2

ACCOUNT = "default"
STEPS = 7
"""Events in the lead answered: the workload's leads have 5 to 8, most often 7."""
RECORDING_DELAY_MS = 3


def _same(a: Any, b: Any) -> bool:
    # JSON values: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def add_changes(before: dict[str, Any], after: dict[str, Any], step: query_pb2.TimelineStep) -> None:
    """The snapshot fields that differ from the previous step, sorted by name, as servers list them."""
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            change = step.changes.add(field=name, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[name], change.after)
        elif name not in after:
            change = step.changes.add(field=name, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[name], change.before)
        elif not _same(before[name], after[name]):
            change = step.changes.add(field=name, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[name], change.before)
            python_to_value(after[name], change.after)


def event_message(d: SimulatedEvent, position: int, out: event_pb2.Event) -> None:
    """A stored event as a read with ``json_snapshots`` returns it."""
    out.id = d["id"]
    out.type = d["type"]
    out.lead_id = d["lead_id"]
    out.flow_id = d["flow_id"]
    out.entity_id = d["entity_id"]
    out.outcome = event_pb2.Outcome.ValueType(d["outcome"])
    out.reason = d["reason"]
    out.duration_ms = d["duration_ms"]
    out.integration = d["integration"]
    out.response_code = d["response_code"]
    out.price = d["price"] or ""
    out.position = position
    out.account_id = ACCOUNT
    ms_to_timestamp(d["timestamp_ms"], out.timestamp)
    ms_to_timestamp(d["timestamp_ms"] + RECORDING_DELAY_MS, out.recorded_at)
    if d["details"]:
        out.details_json = orjson.dumps(d["details"])
    if d["lead"]:
        out.lead_json = orjson.dumps(d["lead"])


def timeline_message(events: Sequence[SimulatedEvent], first_position: int = 1) -> query_pb2.Timeline:
    """The one-page timeline of a lead's events (given in timestamp order)."""
    message = query_pb2.Timeline(lead_id=events[0]["lead_id"])
    previous: dict[str, Any] = {}
    previous_ms = events[0]["timestamp_ms"]
    for k, d in enumerate(events):
        step = message.steps.add(since_previous_ms=d["timestamp_ms"] - previous_ms)
        event_message(d, first_position + k, step.event)
        add_changes(previous, d["lead"], step)
        previous, previous_ms = d["lead"], d["timestamp_ms"]
    message.total_ms = events[-1]["timestamp_ms"] - events[0]["timestamp_ms"]
    return message


def typical_lead(dataset: Sequence[SimulatedEvent], steps: int = STEPS) -> list[SimulatedEvent]:
    """The events of the first lead with ``steps`` events (else of the longest lead), in order."""
    lengths = Counter(d["lead_id"] for d in dataset)
    chosen = next((lead for lead, n in lengths.items() if n == steps), None)
    if chosen is None:
        chosen = max(lengths, key=lambda lead: lengths[lead])
    return sorted((d for d in dataset if d["lead_id"] == chosen), key=lambda d: d["timestamp_ms"])


def canned_timeline(dataset: Sequence[SimulatedEvent], steps: int = STEPS) -> bytes:
    """The serialized answer for a typical lead of ``dataset``."""
    return timeline_message(typical_lead(dataset, steps)).SerializeToString()
