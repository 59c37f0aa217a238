"""Answers decoded field by field on first read give exactly what decoding everything at once gave.

``eager_event`` and ``eager_timeline`` are the decoders as they were before
fields were decoded on read: every attribute, its type and value, the
comparison, representation, copies and pickles of what the SDK returns must
equal theirs, on realistic answers and on edge cases; an answer that cannot be
decoded still raises, when the field is read.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import pytest
from leadtrail.client import ChangeKind, Event, FieldChange, Outcome, Timeline, TimelineStep
from leadtrail.client._convert import (
    event_from_proto,
    from_struct,
    from_timestamp,
    from_value,
    timeline_from_proto,
)
from leadtrail.client._pages import joined_timeline
from leadtrail.client.wire import dict_to_struct, ms_to_timestamp, python_to_value
from leadtrail.server.simulation import LeadFlowSimulator, SimulatedEvent
from leadtrail.v1 import event_pb2, query_pb2

# ------------------------------------------------------------------------- the eager reference


def eager_event(message: event_pb2.Event) -> Event:
    lead_json, details_json = message.lead_json, message.details_json
    try:
        outcome = Outcome(message.outcome)
    except ValueError:
        outcome = Outcome.UNSPECIFIED
    return Event(
        type=message.type,
        lead_id=message.lead_id,
        flow_id=message.flow_id,
        id=message.id,
        timestamp=from_timestamp(message.timestamp) if message.HasField("timestamp") else None,
        entity_id=message.entity_id,
        outcome=outcome,
        reason=message.reason,
        duration_ms=message.duration_ms,
        integration=message.integration,
        response_code=message.response_code,
        price=Decimal(message.price) if message.price else None,
        details=_json(details_json) if details_json else from_struct(message.details),
        lead=_json(lead_json) if lead_json else from_struct(message.lead),
        account_id=message.account_id,
        position=message.position,
        recorded_at=from_timestamp(message.recorded_at) if message.HasField("recorded_at") else None,
    )


def _json(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}


def eager_timeline(message: query_pb2.Timeline) -> Timeline:
    steps = []
    for step in message.steps:
        changes = []
        for change in step.changes:
            try:
                kind = ChangeKind(change.kind)
            except ValueError:
                kind = ChangeKind.CHANGED
            changes.append(
                FieldChange(
                    field=change.field,
                    before=from_value(change.before) if change.HasField("before") else None,
                    after=from_value(change.after) if change.HasField("after") else None,
                    kind=kind,
                )
            )
        steps.append(TimelineStep(eager_event(step.event), step.since_previous_ms, changes))
    return Timeline(
        lead_id=message.lead_id,
        steps=steps,
        total_ms=message.total_ms,
        audit=[eager_event(event) for event in message.audit],
        next_page_token=message.next_page_token,
    )


# ------------------------------------------------------------------------- answers


def stored_event(d: SimulatedEvent, position: int, out: event_pb2.Event, json_snapshots: bool = True) -> None:
    out.id = d["id"] or f"evt_{position}"
    out.type, out.lead_id, out.flow_id, out.entity_id = d["type"], d["lead_id"], d["flow_id"], d["entity_id"]
    out.outcome, out.reason = event_pb2.Outcome.ValueType(d["outcome"]), d["reason"]
    out.duration_ms, out.integration, out.response_code = (
        d["duration_ms"],
        d["integration"],
        d["response_code"],
    )
    out.price, out.position, out.account_id = d["price"] or "", position, "acct-1"
    ms_to_timestamp(d["timestamp_ms"], out.timestamp)
    ms_to_timestamp(d["timestamp_ms"] + 2, out.recorded_at)
    if json_snapshots:
        out.details_json, out.lead_json = orjson.dumps(d["details"]), orjson.dumps(d["lead"])
    else:
        dict_to_struct(d["details"], out.details)
        dict_to_struct(d["lead"], out.lead)


def realistic_timelines(json_snapshots: bool = True) -> Iterator[query_pb2.Timeline]:
    events = list(LeadFlowSimulator(7).events(40))
    by_lead: dict[str, list[SimulatedEvent]] = {}
    for d in events:
        by_lead.setdefault(d["lead_id"], []).append(d)
    position = 1
    for lead_events in list(by_lead.values())[:6]:
        message = query_pb2.Timeline(lead_id=lead_events[0]["lead_id"])
        previous: dict[str, Any] = {}
        for d in lead_events:
            step = message.steps.add(since_previous_ms=d["timestamp_ms"] - lead_events[0]["timestamp_ms"])
            stored_event(d, position, step.event, json_snapshots)
            position += 1
            for name in sorted(previous.keys() | d["lead"].keys()):
                before, after = previous.get(name), d["lead"].get(name)
                if name in previous and name in d["lead"] and before == after:
                    continue
                kind = (
                    query_pb2.CHANGE_KIND_ADDED
                    if name not in previous
                    else query_pb2.CHANGE_KIND_REMOVED
                    if name not in d["lead"]
                    else query_pb2.CHANGE_KIND_CHANGED
                )
                change = step.changes.add(field=name, kind=kind)
                if name in previous:
                    python_to_value(before, change.before)
                if name in d["lead"]:
                    python_to_value(after, change.after)
            previous = d["lead"]
        message.total_ms = lead_events[-1]["timestamp_ms"] - lead_events[0]["timestamp_ms"]
        yield message


def edge_events() -> Iterator[event_pb2.Event]:
    yield event_pb2.Event()  # nothing set: no times, no snapshots, no price
    yield event_pb2.Event(type="t", lead_id="l", flow_id="f", outcome=event_pb2.Outcome.ValueType(99))
    yield event_pb2.Event(type="t", price="-3.50", lead_json=b"[1, 2]", details_json=b'"text"')
    big = event_pb2.Event(type="t")
    big.lead_json = orjson.dumps({"n": 2**60, "x": 0.5, "u": "\u00e9\u4e2d", "z": None})
    big.details_json = orjson.dumps({"nested": {"deeper": [1, None, True, {"k": []}]}})
    yield big
    structs = event_pb2.Event(type="t", position=2**63, duration_ms=2**32 - 1, response_code=599)
    dict_to_struct({"a": 1, "b": [1.5, "x", None], "c": {"d": False}}, structs.lead)
    dict_to_struct({"rules": 3}, structs.details)
    ms_to_timestamp(-1, structs.timestamp)  # before the epoch
    yield structs


def assert_same(lazy: Any, eager: Any) -> None:
    """Equal field by field, with the same types all the way down, and equal as wholes."""
    assert type(lazy) is type(eager)
    if dataclasses.is_dataclass(eager):
        for item in dataclasses.fields(eager):
            assert_same(getattr(lazy, item.name), getattr(eager, item.name))
    elif isinstance(eager, list):
        assert len(lazy) == len(eager)
        for a, b in zip(lazy, eager, strict=True):
            assert_same(a, b)
    elif isinstance(eager, dict):
        assert list(lazy) == list(eager)
        for key in eager:
            assert_same(lazy[key], eager[key])
    else:
        assert lazy == eager


# ------------------------------------------------------------------------- tests


@pytest.mark.parametrize("json_snapshots", [True, False])
def test_a_timeline_read_on_demand_equals_the_eager_decode_in_every_attribute(json_snapshots: bool) -> None:
    for message in realistic_timelines(json_snapshots):
        assert_same(timeline_from_proto(message), eager_timeline(message))
        assert timeline_from_proto(message) == eager_timeline(message)
        assert repr(timeline_from_proto(message)) == repr(eager_timeline(message))


def test_fields_read_in_any_order_or_partly_give_the_eager_values() -> None:
    message = next(realistic_timelines())
    eager = eager_timeline(message)
    lazy = timeline_from_proto(message)
    step = lazy.steps[-1]
    assert step.changes == eager.steps[-1].changes  # changes before the event
    assert step.event.lead == eager.steps[-1].event.lead  # one field before the others
    assert step.event.recorded_at == eager.steps[-1].event.recorded_at
    assert step.event == eager.steps[-1].event
    assert lazy.steps[0].event.type == eager.steps[0].event.type
    assert lazy == eager


@pytest.mark.parametrize("message", list(edge_events()), ids=lambda m: f"event{m.ByteSize()}")
def test_edge_case_events_equal_the_eager_decode(message: event_pb2.Event) -> None:
    assert_same(event_from_proto(message), eager_event(message))
    assert event_from_proto(message) == eager_event(message)
    assert repr(event_from_proto(message)) == repr(eager_event(message))


def test_edge_case_changes_equal_the_eager_decode() -> None:
    message = query_pb2.Timeline(lead_id="l", total_ms=5)
    step = message.steps.add(since_previous_ms=5)
    step.event.type = "t"
    step.changes.add(field="added", kind=query_pb2.CHANGE_KIND_ADDED).after.string_value = "x"
    step.changes.add(field="removed", kind=query_pb2.CHANGE_KIND_REMOVED).before.number_value = 3
    changed = step.changes.add(field="changed", kind=query_pb2.CHANGE_KIND_CHANGED)
    changed.before.bool_value, changed.after.null_value = True, 0
    step.changes.add(field="unknown kind", kind=query_pb2.ChangeKind.ValueType(42))
    message.audit.add(type="audit.erased", lead_id="l")
    message.next_page_token = "token"
    assert_same(timeline_from_proto(message), eager_timeline(message))
    assert_same(timeline_from_proto(query_pb2.Timeline()), eager_timeline(query_pb2.Timeline()))


def test_a_page_read_on_demand_equals_the_eager_decode() -> None:
    page = query_pb2.QueryEventsResponse()
    for position, d in enumerate(LeadFlowSimulator(3).events(20), start=1):
        stored_event(d, position, page.events.add(), json_snapshots=position % 2 == 0)
    assert [event_from_proto(m) for m in page.events] == [eager_event(m) for m in page.events]


def test_pages_join_into_the_same_timeline_as_eager_pages() -> None:
    pages = list(realistic_timelines())[:3]
    assert_same(
        joined_timeline([timeline_from_proto(m) for m in pages]),
        joined_timeline([eager_timeline(m) for m in pages]),
    )


def test_decoded_events_copy_pickle_replace_and_stay_frozen_like_constructed_ones() -> None:
    message = next(realistic_timelines())
    eager = eager_timeline(message)
    for lazy in (timeline_from_proto(message), pickle.loads(pickle.dumps(timeline_from_proto(message)))):
        event = lazy.steps[1].event
        assert pickle.loads(pickle.dumps(event)) == eager.steps[1].event
        assert copy.copy(event) == eager.steps[1].event
        assert copy.deepcopy(lazy.steps[1]) == eager.steps[1]
        assert dataclasses.asdict(event) == dataclasses.asdict(eager.steps[1].event)
        assert dataclasses.replace(event, id="other") == dataclasses.replace(eager.steps[1].event, id="other")
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.lead = {}  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del event.type  # type: ignore[misc]
        with pytest.raises(TypeError):  # unhashable (dict fields), as a constructed Event is
            hash(event)
    assert pickle.loads(pickle.dumps(timeline_from_proto(message))) == eager


def test_the_classes_keep_their_defaults_and_constructors() -> None:
    for cls in (Event, TimelineStep):
        for item in dataclasses.fields(cls):
            if item.default is dataclasses.MISSING:
                assert not hasattr(cls, item.name)
            else:
                assert getattr(cls, item.name) == item.default
    event = Event("t", "l", "f", outcome=2, price="1.5")  # type: ignore[arg-type]
    assert event.outcome is Outcome.FAILURE and event.price == Decimal("1.5")
    assert event.lead == {} and event.timestamp is None


def test_a_snapshot_that_cannot_be_decoded_raises_when_read_and_every_time() -> None:
    message = event_pb2.Event(type="t", lead_json=b"{not json", price="abc")
    with pytest.raises((orjson.JSONDecodeError, InvalidOperation)):
        eager_event(message)
    event = event_from_proto(message)
    assert event.type == "t"
    for _ in range(2):
        with pytest.raises(orjson.JSONDecodeError):
            event.lead  # noqa: B018
        with pytest.raises(InvalidOperation):
            event.price  # noqa: B018
    with pytest.raises((orjson.JSONDecodeError, InvalidOperation)):
        event_from_proto(message) == eager_event(event_pb2.Event(type="t"))  # noqa: B015


def test_a_bad_change_value_raises_when_the_changes_are_read() -> None:
    message = query_pb2.Timeline(lead_id="l")
    step = message.steps.add()
    step.event.lead_json = b"{bad"
    timeline = timeline_from_proto(message)
    assert len(timeline.steps) == 1 and timeline.steps[0].changes == []
    with pytest.raises(orjson.JSONDecodeError):
        timeline.steps[0].event.lead  # noqa: B018


def test_threads_reading_the_same_event_all_get_its_values() -> None:
    message = next(realistic_timelines())
    eager = eager_timeline(message)
    for _ in range(20):
        lazy = timeline_from_proto(message)
        seen: list[bool] = []

        def read(lazy: Timeline = lazy, seen: list[bool] = seen) -> None:
            seen.append(all(a.event == b.event for a, b in zip(lazy.steps, eager.steps, strict=True)))

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert seen == [True] * 4


def test_a_copy_given_another_id_keeps_it_when_its_other_fields_are_decoded() -> None:
    # How the background appender names an event without running its constructor.
    message = next(realistic_timelines())
    eager = eager_timeline(message).steps[2].event
    for read_first in ((), ("type",), ("lead", "id")):
        event = timeline_from_proto(message).steps[2].event
        for name in read_first:
            getattr(event, name)
        copy_ = object.__new__(Event)
        copy_.__dict__.update(event.__dict__)
        copy_.__dict__["id"] = "evt_other"
        assert copy_ == dataclasses.replace(eager, id="evt_other")
        assert event == eager
