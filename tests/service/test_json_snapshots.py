"""Snapshots as JSON on the wire (``lead_json``/``details_json``, ``json_snapshots``): the same
validation and the same stored event as the Struct form, and reads that hand back the
stored JSON instead of Structs when asked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from leadtrail.v1 import event_pb2, query_pb2, stream_pb2, submission_pb2

MakeEvent = Callable[..., event_pb2.Event]
Stubs = Any  # conftest.Stubs

LEAD = {"email": "dana@example.com", "state": "CA", "credit_score": 712, "tcpa": {"consent": True}}


def json_event(lead_id: str, lead: Any = None, details: Any = None, **fields: Any) -> event_pb2.Event:
    event = event_pb2.Event(type="source.submitted", lead_id=lead_id, flow_id="flow-json", **fields)
    event.lead_json = json.dumps(LEAD if lead is None else lead).encode()
    if details is not None:
        event.details_json = json.dumps(details).encode()
    return event


def append(stubs: Stubs, *events: event_pb2.Event) -> submission_pb2.AppendResponse:
    response: submission_pb2.AppendResponse = stubs.submission.Append(
        submission_pb2.AppendRequest(events=events), timeout=30
    )
    return response


def rejection(stubs: Stubs, event: event_pb2.Event) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        append(stubs, event)
    return info.value


def stored(stubs: Stubs, lead_id: str) -> list[event_pb2.Event]:
    request = query_pb2.QueryEventsRequest(filter=event_pb2.EventFilter(lead_id=lead_id), page_size=100)
    return list(stubs.query.QueryEvents(request).events)


def test_a_json_snapshot_is_stored_and_read_back_as_a_struct(stubs: Stubs) -> None:
    result = append(stubs, json_event("lead-json-1", details={"source_ip_country": "US"})).results[0]
    event = stubs.query.GetEvent(query_pb2.GetEventRequest(id=result.id))
    assert event.lead_json == b"" and event.details_json == b""
    assert json_format.MessageToDict(event.lead) == LEAD
    assert json_format.MessageToDict(event.details) == {"source_ip_country": "US"}


def test_reads_with_json_snapshots_hand_back_the_stored_json(stubs: Stubs, make_event: MakeEvent) -> None:
    from_json = append(stubs, json_event("lead-json-2")).results[0]
    from_struct = append(stubs, make_event("lead-json-2", lead={"email": "lee@example.com"})).results[0]

    event = stubs.query.GetEvent(query_pb2.GetEventRequest(id=from_json.id, json_snapshots=True))
    assert not event.HasField("lead") and json.loads(event.lead_json) == LEAD
    assert event.details_json == b""  # no details were sent: nothing to fill

    request = query_pb2.GetTimelineRequest(lead_id="lead-json-2", json_snapshots=True)
    timeline = stubs.query.GetTimeline(request)
    leads = [json.loads(step.event.lead_json) for step in timeline.steps]
    assert leads == [LEAD, {"email": "lee@example.com"}]
    assert [step.event.id for step in timeline.steps] == [from_json.id, from_struct.id]
    # The diffs are computed on the stored snapshots either way.
    assert {change.field for change in timeline.steps[1].changes} >= {"email", "state"}

    page = stubs.query.QueryEvents(
        query_pb2.QueryEventsRequest(
            filter=event_pb2.EventFilter(lead_id="lead-json-2"),
            page_size=10,
            include_lead=True,
            json_snapshots=True,
        )
    )
    assert [json.loads(e.lead_json) for e in page.events] == leads
    assert not any(e.HasField("lead") for e in page.events)


def test_a_subscription_with_json_snapshots_delivers_json(stubs: Stubs) -> None:
    position = append(stubs, json_event("lead-json-3")).results[0].position
    request = stream_pb2.SubscribeRequest(
        filter=event_pb2.EventFilter(lead_id="lead-json-3"), after_position=position - 1, json_snapshots=True
    )
    call = stubs.stream.Subscribe(request, timeout=30)
    try:
        first = next(message for message in call if message.HasField("event"))
    finally:
        call.cancel()
    assert first.event.position == position
    assert json.loads(first.event.lead_json) == LEAD and not first.event.HasField("lead")


@pytest.mark.parametrize(
    ("raw", "named", "problem"),
    [
        (b"{not json", "events[0].lead_json", "not valid JSON"),
        (b"[1, 2]", "events[0].lead_json", "must be a JSON object, not list"),
        (b'"dana"', "events[0].lead_json", "must be a JSON object, not str"),
        (b'{"score": NaN}', "events[0].lead_json", "not valid JSON"),
    ],
)
def test_a_lead_json_that_is_not_a_json_object_is_refused_naming_the_field(
    stubs: Stubs, raw: bytes, named: str, problem: str
) -> None:
    event = json_event("lead-json-bad")
    event.lead_json = raw
    error = rejection(stubs, event)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert named in error.details() and problem in error.details()
    assert stored(stubs, "lead-json-bad") == []


def test_a_snapshot_sent_both_ways_is_refused(stubs: Stubs) -> None:
    event = json_event("lead-json-both")
    event.lead.update({"email": "dana@example.com"})
    error = rejection(stubs, event)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].lead_json" in error.details() and "not both" in error.details()
    assert stored(stubs, "lead-json-both") == []


def test_the_snapshot_rules_apply_to_json_too(stubs: Stubs) -> None:
    oversize = rejection(stubs, json_event("lead-json-big", lead={"notes": "x" * 70_000}))
    assert oversize.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "events[0].lead" in oversize.details() and "65536" in oversize.details().replace(",", "")

    bad_details = rejection(stubs, json_event("lead-json-big", details=[1]))
    assert "events[0].details_json" in bad_details.details()
    assert stored(stubs, "lead-json-big") == []


def test_one_bad_json_snapshot_rejects_the_whole_request(stubs: Stubs) -> None:
    good, bad = json_event("lead-json-batch"), json_event("lead-json-batch")
    bad.lead_json = b"{"
    with pytest.raises(grpc.RpcError) as info:
        append(stubs, good, bad)
    assert "events[1].lead_json" in info.value.details()
    assert stored(stubs, "lead-json-batch") == []


def test_timeline_diffs_tell_true_from_1_but_not_80_from_80_0(stubs: Stubs) -> None:
    append(stubs, json_event("lead-json-diff", lead={"a": 1, "b": 80, "c": [1, 2]}))
    append(stubs, json_event("lead-json-diff", lead={"a": True, "b": 80.0, "c": [1, 2]}))
    timeline = stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-json-diff"))
    assert [(c.field, c.kind) for c in timeline.steps[1].changes] == [("a", query_pb2.CHANGE_KIND_CHANGED)]
    assert timeline.steps[1].changes[0].after.bool_value is True
