"""A lead's timeline: its events as steps, each with the time since the previous one
and the snapshot fields that changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from leadtrail.storage import Event
from leadtrail.v1 import query_pb2

from .convert import event_to_proto, python_to_value


def _same(a: Any, b: Any) -> bool:
    # JSON values: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


_ABSENT = object()


def changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    out: RepeatedCompositeFieldContainer[query_pb2.FieldChange],
) -> None:
    # Most fields of a lead stay the same from one step to the next: find the
    # changed ones with the cheapest test that can say "same", sort only those.
    changed = [field for field in before if field not in after]
    for field, value in after.items():
        old = before.get(field, _ABSENT)
        if old is value or (type(old) is type(value) and old == value):
            continue
        if old is _ABSENT or not _same(old, value):
            changed.append(field)
    for field in sorted(changed):
        if field not in before:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[field], change.after)
        elif field not in after:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[field], change.before)
        elif not _same(before[field], after[field]):
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[field], change.before)
            python_to_value(after[field], change.after)


def timeline_message(lead_id: str, events: list[Event], json_snapshots: bool = False) -> query_pb2.Timeline:
    timeline = query_pb2.Timeline(lead_id=lead_id)
    previous: Event | None = None
    for event in events:
        step = timeline.steps.add()
        event_to_proto(event, step.event, json_snapshots)
        if previous is not None:
            step.since_previous_ms = (event.timestamp_ms or 0) - (previous.timestamp_ms or 0)
        changes(previous.lead if previous is not None else {}, event.lead, step.changes)
        previous = event
    if events:
        timeline.total_ms = (events[-1].timestamp_ms or 0) - (events[0].timestamp_ms or 0)
    return timeline
