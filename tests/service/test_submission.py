"""Append and AppendStream over a real server: durable, all or nothing, idempotent,
and every bad request answered with the documented status while others are served."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from leadtrail.v1 import event_pb2, query_pb2, submission_pb2

MakeEvent = Callable[..., event_pb2.Event]
Stubs = Any  # conftest.Stubs: the four service stubs on one channel


def append(stubs: Stubs, *events: event_pb2.Event) -> submission_pb2.AppendResponse:
    response: submission_pb2.AppendResponse = stubs.submission.Append(
        submission_pb2.AppendRequest(events=events), timeout=30
    )
    return response


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def lead_count(stubs: Stubs, lead_id: str) -> int:
    f = event_pb2.EventFilter(lead_id=lead_id)
    page = stubs.query.QueryEvents(query_pb2.QueryEventsRequest(filter=f, page_size=1000))
    return len(page.events)


def test_append_assigns_ids_and_gapless_positions_in_request_order(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    response = append(stubs, make_event("lead-a"), make_event("lead-a"), make_event("lead-b"))
    positions = [r.position for r in response.results]
    assert positions == list(range(positions[0], positions[0] + 3))
    assert all(r.id.startswith("evt_") and len(r.id) == 30 and not r.duplicate for r in response.results)
    assert [r.recorded_at.ToMilliseconds() for r in response.results] == sorted(
        r.recorded_at.ToMilliseconds() for r in response.results
    )
    stored = stubs.query.GetEvent(query_pb2.GetEventRequest(id=response.results[2].id))
    assert (stored.lead_id, stored.position, stored.account_id) == ("lead-b", positions[2], "default")


def test_a_repeated_id_is_stored_once_and_answers_the_original_position(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    first = append(stubs, make_event("lead-dup", id="evt_01JD0000000000000000000001")).results[0]
    again = append(
        stubs,
        make_event("lead-dup", id="evt_01JD0000000000000000000001", reason="retried"),
        make_event("lead-dup"),
    ).results
    assert not first.duplicate
    assert again[0].duplicate and again[0].position == first.position
    assert again[0].recorded_at == first.recorded_at
    assert not again[1].duplicate and again[1].position > first.position
    assert lead_count(stubs, "lead-dup") == 2


def test_one_invalid_event_rejects_the_whole_request_naming_index_and_field(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    error = rpc_error(
        lambda: append(stubs, make_event("lead-all"), make_event("lead-all", type="Not A Type"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].type" in error.details()
    assert lead_count(stubs, "lead-all") == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"lead_id": ""}, "events[0].lead_id"),
        ({"flow_id": "f" * 129}, "events[0].flow_id"),
        ({"price": "12.5.0"}, "events[0].price"),
        ({"price": "1e3"}, "events[0].price"),
        ({"id": "evt_not-a-ulid"}, "events[0].id"),
        ({"outcome": 99}, "events[0].outcome"),
        ({"type": "x" * 70 + ".y"}, "events[0].type"),
    ],
)
def test_each_broken_field_is_named_in_the_error(
    stubs: Stubs, make_event: MakeEvent, fields: dict[str, Any], named: str
) -> None:
    event = make_event("lead-bad")
    for name, value in fields.items():
        setattr(event, name, value)
    error = rpc_error(lambda: append(stubs, event))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert named in error.details()


def test_more_events_than_the_request_limit_is_resource_exhausted_naming_the_limit(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    events = [make_event("lead-many", lead={}) for _ in range(1001)]
    error = rpc_error(lambda: append(stubs, *events))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1000" in error.details() and "1001" in error.details()
    assert lead_count(stubs, "lead-many") == 0


def test_a_snapshot_over_64_kib_is_refused_naming_the_limit(stubs: Stubs, make_event: MakeEvent) -> None:
    error = rpc_error(lambda: append(stubs, make_event("lead-big", lead={"notes": "x" * 70_000})))
    assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "events[0].lead" in error.details() and "65536" in error.details().replace(",", "")


def test_a_message_over_the_size_limit_is_resource_exhausted_and_the_server_keeps_serving(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    events = [make_event("lead-huge", lead={"notes": "y" * 60_000}) for _ in range(600)]  # ~36 MB
    error = rpc_error(lambda: append(stubs, *events))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert append(stubs, make_event("lead-after-huge")).results[0].position > 0


def test_malformed_bytes_are_invalid_argument_naming_the_expected_message(stubs: Stubs) -> None:
    call = stubs.channel.unary_unary("/leadtrail.v1.SubmissionService/Append")
    error = rpc_error(lambda: call(b"\x0a\xff\xff\xff\xff garbage", timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "leadtrail.v1.AppendRequest" in error.details()


def test_an_unset_timestamp_is_the_receive_time_and_a_set_one_is_kept_to_the_millisecond(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    given = make_event("lead-time")
    given.timestamp.FromNanoseconds(1_764_000_000_123_456_789)
    unset = make_event("lead-time")
    results = append(stubs, given, unset).results
    kept = stubs.query.GetEvent(query_pb2.GetEventRequest(id=results[0].id))
    filled = stubs.query.GetEvent(query_pb2.GetEventRequest(id=results[1].id))
    assert kept.timestamp.ToMilliseconds() == 1_764_000_000_123
    assert abs(filled.timestamp.ToMilliseconds() - results[1].recorded_at.ToMilliseconds()) < 5_000


def test_append_stream_answers_each_request_in_order(stubs: Stubs, make_event: MakeEvent) -> None:
    requests = [
        submission_pb2.AppendRequest(events=[make_event("lead-stream") for _ in range(n)])
        for n in (3, 1, 5, 2)
    ]
    responses = list(stubs.submission.AppendStream(iter(requests), timeout=30))
    assert [len(r.results) for r in responses] == [3, 1, 5, 2]
    positions = [x.position for r in responses for x in r.results]
    assert positions == sorted(positions) and len(set(positions)) == 11
    assert lead_count(stubs, "lead-stream") == 11


def test_append_stream_stops_at_a_bad_request_after_answering_the_ones_before(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    requests = [
        submission_pb2.AppendRequest(events=[make_event("lead-stream-bad")]),
        submission_pb2.AppendRequest(events=[make_event("lead-stream-bad"), make_event("x", type="BAD")]),
        submission_pb2.AppendRequest(events=[make_event("lead-stream-bad")]),
    ]
    call = stubs.submission.AppendStream(iter(requests), timeout=30)
    first = next(call)
    assert len(first.results) == 1
    error = rpc_error(lambda: next(call))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 1" in error.details() and "events[1].type" in error.details()
    assert lead_count(stubs, "lead-stream-bad") == 1


def test_output_only_fields_sent_by_a_client_are_ignored(stubs: Stubs, make_event: MakeEvent) -> None:
    event = make_event("lead-output-only", position=999_999, account_id="someone-else")
    event.recorded_at.FromMilliseconds(1)
    result = append(stubs, event).results[0]
    stored = stubs.query.GetEvent(query_pb2.GetEventRequest(id=result.id))
    assert stored.position == result.position != 999_999
    assert stored.account_id == "default"
    assert stored.recorded_at == result.recorded_at
