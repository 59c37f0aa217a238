"""Answers spliced from the stored wire form equal answers built from decoded events.

The reference is built the way answers were built before format 1.2: each event
decoded, converted to a protobuf message field by field, and a timeline's changes
computed between the decoded snapshots with protobuf ``Value`` objects. A store
written in the wire form (precomputed changes) and one written in format 1.1 (JSON
bodies with snapshot deltas, converted on read) must answer the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from leadtrail.client.wire import python_to_value
from leadtrail.server.convert import event_to_proto
from leadtrail.server.simulation import LeadFlowSimulator
from leadtrail.server.timelines import page_message, read_page
from leadtrail.storage import DEFAULT_ACCOUNT, Event, EventLog, Options, Outcome
from leadtrail.v1 import event_pb2, query_pb2


def _event(d: Mapping[str, Any]) -> Event:
    return Event(
        type=d["type"],
        lead_id=d["lead_id"],
        flow_id=d["flow_id"],
        id=d["id"],
        timestamp_ms=d["timestamp_ms"],
        entity_id=d["entity_id"],
        outcome=Outcome(d["outcome"]),
        reason=d["reason"],
        duration_ms=d["duration_ms"],
        integration=d["integration"],
        response_code=d["response_code"],
        price=d["price"],
        details=d["details"],
        lead=d["lead"],
    )


def journeys() -> list[Event]:
    events = [_event(d) for d in LeadFlowSimulator(seed=42).events(60)]
    rng = random.Random(5)
    first = events[0]
    # A step appended late with an earlier timestamp: its timeline neighbours are not the
    # events the writer saw before it.
    late = Event(
        "feedback.received",
        first.lead_id,
        first.flow_id,
        timestamp_ms=(first.timestamp_ms or 0) + 1,
        lead={**first.lead, "feedback.status": "converted", "score": rng.random()},
        details={"n": 1},
    )
    # Values the JSON and Value encodings treat differently: bools vs numbers, 1 vs 1.0,
    # nesting, unicode, an empty snapshot.
    odd = [
        Event(
            "source.submitted", "lead-odd", "flow-x", timestamp_ms=1_000, lead={"a": 1, "b": True, "c": "é€"}
        ),
        Event(
            "lead.updated",
            "lead-odd",
            "flow-x",
            timestamp_ms=2_000,
            lead={"a": 1.0, "b": 1, "d": {"x": [1, None]}},
        ),
        Event("lead.updated", "lead-odd", "flow-x", timestamp_ms=3_000, lead={}),
        Event("lead.updated", "lead-odd", "flow-x", timestamp_ms=4_000, lead={"a": False, "e": -0.5}),
    ]
    return [*events, late, *odd]


@pytest.fixture(scope="module", params=["wire", "json"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def store(form: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLog]:
    # Small segments: journeys cross segment boundaries, where no changes are precomputed.
    options = Options(record_form=form, segment_bytes=64 * 1024, dictionary_training_samples=100)
    with EventLog.open(tmp_path_factory.mktemp(form), options) as log:
        events = journeys()
        for i in range(0, len(events), 7):
            log.append(events[i : i + 7])
        yield log


def reference_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], step: query_pb2.TimelineStep
) -> None:
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return type(a) is type(b) and a == b
        return bool(a == b)

    for field in sorted(set(before) | set(after)):
        if field not in before:
            change = step.changes.add(field=field, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[field], change.after)
        elif field not in after:
            change = step.changes.add(field=field, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[field], change.before)
        elif not same(before[field], after[field]):
            change = step.changes.add(field=field, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[field], change.before)
            python_to_value(after[field], change.after)


def reference_timeline(events: list[Event], json_snapshots: bool) -> query_pb2.Timeline:
    timeline = query_pb2.Timeline(lead_id=events[0].lead_id)
    timeline.total_ms = (events[-1].timestamp_ms or 0) - (events[0].timestamp_ms or 0)
    previous: Event | None = None
    for event in events:
        step = timeline.steps.add()
        event_to_proto(event, step.event, json_snapshots)
        if previous is not None:
            step.since_previous_ms = (event.timestamp_ms or 0) - (previous.timestamp_ms or 0)
        reference_changes(previous.lead if previous is not None else {}, event.lead, step)
        previous = event
    return timeline


def leads(log: EventLog) -> list[str]:
    return sorted({e.lead_id for e in log.read_from(1)})


@pytest.mark.parametrize("json_snapshots", [True, False])
def test_every_timeline_equals_the_one_built_from_decoded_events(
    store: EventLog, json_snapshots: bool
) -> None:
    checked = 0
    for lead_id in leads(store):
        page = read_page(store, lead_id, DEFAULT_ACCOUNT, lambda e: True, 1000, None)
        spliced, steps = page_message(lead_id, DEFAULT_ACCOUNT, page, None, json_snapshots)
        expected = reference_timeline(store.timeline(lead_id), json_snapshots)
        assert query_pb2.Timeline.FromString(spliced) == expected, lead_id
        assert steps == len(expected.steps)
        checked += steps
    assert checked == len(journeys())


def test_the_writer_precomputes_the_changes_of_most_steps(store: EventLog, form: str) -> None:
    # What makes the spliced path pay: steps whose changes are read, not computed. Format
    # 1.1 records carry none: every step of theirs computes its changes on the read.
    records = [r for lead_id in leads(store) for r in store.lead_stored(lead_id)]
    precomputed = sum(1 for r in records if r.changes_base)
    assert precomputed >= len(records) // 2 if form == "wire" else precomputed == 0


def test_spliced_events_are_byte_for_byte_the_protobuf_encoding(store: EventLog) -> None:
    for record in [r for lead_id in leads(store) for r in store.lead_stored(lead_id)]:
        event = store.get(record.id)
        assert event is not None
        for include_lead in (True, False):
            shown = event if include_lead else Event(**{**_fields(event), "lead": {}})
            assert record.wire(include_lead) == event_to_proto(shown, json_snapshots=True).SerializeToString()
            structs = event_pb2.Event.FromString(record.wire_structs(include_lead))
            assert structs == event_to_proto(shown, json_snapshots=False)


def test_a_page_cut_in_the_middle_continues_with_the_right_changes(store: EventLog) -> None:
    lead_id = max(leads(store), key=lambda lead: len(store.timeline(lead)))
    expected = reference_timeline(store.timeline(lead_id), True)
    got: list[query_pb2.TimelineStep] = []
    after = None
    while True:
        page = read_page(store, lead_id, DEFAULT_ACCOUNT, lambda e: True, 2, after)
        message = query_pb2.Timeline.FromString(page_message(lead_id, DEFAULT_ACCOUNT, page, None, True)[0])
        got.extend(message.steps)
        if not message.next_page_token:
            break
        last = page.steps[len(message.steps) - 1]
        after = (last.timestamp_ms, last.position)
    assert got == list(expected.steps)


def _fields(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in Event.__slots__}


def test_a_store_written_in_both_forms_reads_as_one(tmp_path: Path) -> None:
    # An upgrade: format 1.1 records first, then format 1.2 ones, in one segment.
    events = journeys()
    half = len(events) // 2
    with EventLog.open(tmp_path, Options(record_form="json")) as log:
        log.append(events[:half])
    with EventLog.open(tmp_path) as log:
        log.append(events[half:])
        assert len(log.segments) == 1
        for lead_id in leads(log):
            page = read_page(log, lead_id, DEFAULT_ACCOUNT, lambda e: True, 1000, None)
            spliced = query_pb2.Timeline.FromString(
                page_message(lead_id, DEFAULT_ACCOUNT, page, None, True)[0]
            )
            assert spliced == reference_timeline(log.timeline(lead_id), True)
        assert log.verify().problems == []


def test_the_log_read_in_the_wire_form_equals_the_decoded_log(store: EventLog) -> None:
    decoded = list(store.read_from(1))
    stored = list(store.read_stored_from(1))
    assert [r.position for r in stored] == [e.position for e in decoded]
    for record, event in zip(stored, decoded, strict=True):
        assert record.wire() == event_to_proto(event, json_snapshots=True).SerializeToString()
    middle = decoded[len(decoded) // 2].position
    assert [r.position for r in store.read_stored_from(middle, limit=5)] == [
        e.position for e in decoded if e.position >= middle
    ][:5]
