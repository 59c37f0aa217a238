"""GetEvent, GetTimeline, QueryEvents, Export and Aggregate over a real server."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest
from leadtrail.v1 import event_pb2, query_pb2, submission_pb2

MakeEvent = Callable[..., event_pb2.Event]
Stubs = Any  # conftest.Stubs: the four service stubs on one channel
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def append(stubs: Stubs, *events: event_pb2.Event) -> list[submission_pb2.AppendResult]:
    response = stubs.submission.Append(submission_pb2.AppendRequest(events=events), timeout=30)
    return list(response.results)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def query_all(stubs: Stubs, f: event_pb2.EventFilter, **kwargs: Any) -> list[event_pb2.Event]:
    events: list[event_pb2.Event] = []
    token = ""
    while True:
        page = stubs.query.QueryEvents(
            query_pb2.QueryEventsRequest(filter=f, page_token=token, **kwargs), timeout=30
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def test_get_event_returns_the_stored_event_and_not_found_otherwise(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    sent = make_event("lead-get", type="recipient.delivered", entity_id="buyer-1", price="25.00", outcome=1)
    sent.details.update({"rule_set": "solar-ca", "rules_evaluated": 4})
    [result] = append(stubs, sent)
    got = stubs.query.GetEvent(query_pb2.GetEventRequest(id=result.id))
    assert (got.type, got.entity_id, got.price, got.outcome) == ("recipient.delivered", "buyer-1", "25.00", 1)
    assert dict(got.details) == {"rule_set": "solar-ca", "rules_evaluated": 4}
    assert dict(got.lead) == dict(sent.lead)
    missing = rpc_error(
        lambda: stubs.query.GetEvent(query_pb2.GetEventRequest(id="evt_01JD00000000000000000000ZZ"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    empty = rpc_error(lambda: stubs.query.GetEvent(query_pb2.GetEventRequest(id="")))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and "id" in empty.details()


def test_timeline_orders_steps_by_timestamp_and_diffs_each_snapshot(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    lead = "lead-timeline"
    # Appended out of order: the timeline follows the flow's timestamps.
    append(
        stubs,
        make_event(
            lead,
            type="recipient.delivered",
            timestamp_ms=T0 + 2_500,
            lead={"email": "dana@example.com", "email.valid": True, "score": 80},
        ),
        make_event(
            lead, type="source.submitted", timestamp_ms=T0, lead={"email": "dana@example.com", "score": 71}
        ),
        make_event(
            lead,
            type="validation.passed",
            timestamp_ms=T0 + 400,
            lead={"email": "dana@example.com", "email.valid": True, "score": 71, "tmp": 1},
        ),
    )
    timeline = stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id=lead))
    assert [s.event.type for s in timeline.steps] == [
        "source.submitted",
        "validation.passed",
        "recipient.delivered",
    ]
    assert [s.since_previous_ms for s in timeline.steps] == [0, 400, 2_100]
    assert timeline.total_ms == 2_500

    def changes(step: query_pb2.TimelineStep) -> list[tuple[str, int, Any, Any]]:
        out = []
        for c in step.changes:
            before = _py(c.before) if c.HasField("before") else None
            after = _py(c.after) if c.HasField("after") else None
            out.append((c.field, c.kind, before, after))
        return out

    assert changes(timeline.steps[0]) == [
        ("email", query_pb2.CHANGE_KIND_ADDED, None, "dana@example.com"),
        ("score", query_pb2.CHANGE_KIND_ADDED, None, 71),
    ]
    assert changes(timeline.steps[1]) == [
        ("email.valid", query_pb2.CHANGE_KIND_ADDED, None, True),
        ("tmp", query_pb2.CHANGE_KIND_ADDED, None, 1),
    ]
    assert changes(timeline.steps[2]) == [
        ("score", query_pb2.CHANGE_KIND_CHANGED, 71, 80),
        ("tmp", query_pb2.CHANGE_KIND_REMOVED, 1, None),
    ]
    missing = rpc_error(lambda: stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="nobody")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def _py(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    return getattr(value, kind)


def test_query_pages_never_skip_or_repeat_while_appends_continue(stubs: Stubs, make_event: MakeEvent) -> None:
    flow = "flow-paging"
    append(stubs, *[make_event(f"lead-p{i}", flow_id=flow, timestamp_ms=T0 + i * 10) for i in range(250)])
    stop = threading.Event()

    def keep_appending() -> None:
        i = 0
        while not stop.is_set():
            # Some land inside the range already paged, some after it.
            ts = T0 + (i * 37) % 3_000
            append(stubs, make_event(f"lead-late{i}", flow_id=flow, timestamp_ms=ts))
            i += 1

    writer = threading.Thread(target=keep_appending)
    writer.start()
    try:
        seen = query_all(stubs, event_pb2.EventFilter(flow_id=flow), page_size=7)
    finally:
        stop.set()
        writer.join()
    positions = [e.position for e in seen]
    assert len(positions) == len(set(positions)), "an event was repeated"
    keys = [(e.timestamp.ToMilliseconds(), e.position) for e in seen]
    assert keys == sorted(keys)
    originals = {e.lead_id for e in seen if e.lead_id.startswith("lead-p")}
    assert originals == {f"lead-p{i}" for i in range(250)}, (
        "an event stored before the first page was skipped"
    )


def test_query_filters_by_type_prefix_outcome_entity_and_time_range(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    flow = "flow-filters"
    events = [
        make_event(
            "lead-f1",
            flow_id=flow,
            type="recipient.delivered",
            outcome=1,
            entity_id="buyer-a",
            timestamp_ms=T0,
        ),
        make_event(
            "lead-f1",
            flow_id=flow,
            type="recipient.rejected",
            outcome=2,
            entity_id="buyer-b",
            timestamp_ms=T0 + 1000,
        ),
        make_event("lead-f2", flow_id=flow, type="filter.passed", outcome=1, timestamp_ms=T0 + 2000),
        make_event(
            "lead-f2",
            flow_id=flow,
            type="recipient.delivered",
            outcome=3,
            entity_id="buyer-a",
            timestamp_ms=T0 + 3000,
        ),
    ]
    append(stubs, *events)

    def types(**kwargs: Any) -> list[str]:
        f = event_pb2.EventFilter(flow_id=flow, **kwargs)
        return [e.type + "@" + str(e.timestamp.ToMilliseconds() - T0) for e in query_all(stubs, f)]

    assert types(types=["recipient.*"]) == [
        "recipient.delivered@0",
        "recipient.rejected@1000",
        "recipient.delivered@3000",
    ]
    assert types(types=["filter.passed", "recipient.rejected"]) == [
        "recipient.rejected@1000",
        "filter.passed@2000",
    ]
    assert types(outcomes=[2, 3]) == ["recipient.rejected@1000", "recipient.delivered@3000"]
    assert types(entity_id="buyer-a") == ["recipient.delivered@0", "recipient.delivered@3000"]
    window = event_pb2.EventFilter(flow_id=flow)
    window.start.FromMilliseconds(T0 + 1000)
    window.end.FromMilliseconds(T0 + 3000)
    assert [e.timestamp.ToMilliseconds() - T0 for e in query_all(stubs, window)] == [1000, 2000]
    newest_first = query_all(stubs, event_pb2.EventFilter(flow_id=flow), descending=True, page_size=3)
    assert [e.timestamp.ToMilliseconds() - T0 for e in newest_first] == [3000, 2000, 1000, 0]
    without = query_all(stubs, event_pb2.EventFilter(flow_id=flow))
    assert all(len(e.lead.fields) == 0 for e in without)
    with_lead = query_all(stubs, event_pb2.EventFilter(flow_id=flow), include_lead=True)
    assert all(e.lead.fields["email"].string_value == "dana@example.com" for e in with_lead)


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [
        ({"page_size": 1001}, "page_size"),
        ({"page_token": "not-a-token"}, "page token"),
        ({"filter": event_pb2.EventFilter(types=["Recipient"])}, "filter.types[0]"),
        ({"filter": event_pb2.EventFilter(outcomes=[42])}, "filter.outcomes[0]"),
    ],
)
def test_bad_query_requests_are_invalid_argument_naming_the_field(
    stubs: Stubs, request_fields: dict[str, Any], named: str
) -> None:
    error = rpc_error(lambda: stubs.query.QueryEvents(query_pb2.QueryEventsRequest(**request_fields)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in error.details()


def test_a_page_token_of_another_filter_is_refused(stubs: Stubs, make_event: MakeEvent) -> None:
    append(stubs, *[make_event("lead-tok", flow_id="flow-tok") for _ in range(3)])
    page = stubs.query.QueryEvents(
        query_pb2.QueryEventsRequest(filter=event_pb2.EventFilter(flow_id="flow-tok"), page_size=1)
    )
    other = query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(flow_id="flow-other"), page_token=page.next_page_token
    )
    error = rpc_error(lambda: stubs.query.QueryEvents(other))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def export(stubs: Stubs, **kwargs: Any) -> bytes:
    return b"".join(c.data for c in stubs.query.Export(query_pb2.ExportRequest(**kwargs), timeout=60))


def test_export_jsonl_is_one_whole_event_per_line(stubs: Stubs, make_event: MakeEvent) -> None:
    flow = "flow-export-jsonl"
    events = [make_event(f"lead-x{i}", flow_id=flow, price="9.99", timestamp_ms=T0 + i) for i in range(1500)]
    results = append(stubs, *events[:750]) + append(stubs, *events[750:])
    data = export(stubs, filter=event_pb2.EventFilter(flow_id=flow), format=query_pb2.EXPORT_FORMAT_JSONL)
    lines = [json.loads(line) for line in data.splitlines()]
    assert [line["id"] for line in lines] == [r.id for r in results]
    assert lines[0]["lead"] == {"email": "dana@example.com", "state": "CA"}
    assert lines[0]["price"] == "9.99" and lines[0]["timestamp"] == "2025-11-24T16:00:00.000Z"
    assert lines[0]["position"] == results[0].position


def test_export_csv_has_a_header_and_reaches_into_the_snapshot(stubs: Stubs, make_event: MakeEvent) -> None:
    flow = "flow-export-csv"
    append(
        stubs,
        make_event("lead-c1", flow_id=flow, price="25.00", lead={"email": "a@example.com", "score": 71}),
        make_event("lead-c2", flow_id=flow, lead={"email": 'b,"quoted"@example.com', "tags": ["x", "y"]}),
    )
    data = export(
        stubs,
        filter=event_pb2.EventFilter(flow_id=flow),
        format=query_pb2.EXPORT_FORMAT_CSV,
        fields=["lead_id", "price", "lead.email", "lead.score", "lead.tags"],
    )
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows == [
        ["lead_id", "price", "lead.email", "lead.score", "lead.tags"],
        ["lead-c1", "25.00", "a@example.com", "71", ""],
        ["lead-c2", "", 'b,"quoted"@example.com', "", '["x","y"]'],
    ]
    error = rpc_error(lambda: export(stubs, format=query_pb2.EXPORT_FORMAT_CSV, fields=["nope"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "fields[0]" in error.details()
    error = rpc_error(lambda: export(stubs))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "format" in error.details()


def test_aggregate_counts_and_sums_prices_exactly(stubs: Stubs, make_event: MakeEvent) -> None:
    flow = "flow-agg"
    day = 86_400_000
    append(
        stubs,
        *[
            make_event(
                "lead-g",
                flow_id=flow,
                type="recipient.delivered",
                outcome=1,
                price="0.10",
                timestamp_ms=T0 + i,
            )
            for i in range(3)
        ],
        make_event("lead-g", flow_id=flow, type="recipient.delivered", outcome=2, timestamp_ms=T0 + day),
        make_event(
            "lead-g",
            flow_id=flow,
            type="enhancement.completed",
            outcome=1,
            price="-0.35",
            timestamp_ms=T0 + day + 3_600_000,
        ),
    )
    f = event_pb2.EventFilter(flow_id=flow)
    rows = stubs.query.Aggregate(
        query_pb2.AggregateRequest(filter=f, group_by=[query_pb2.GROUP_BY_TYPE, query_pb2.GROUP_BY_OUTCOME])
    ).rows
    got = {tuple(r.keys): (r.count, Decimal(r.price_sum)) for r in rows}
    assert got == {
        ("enhancement.completed", "OUTCOME_SUCCESS"): (1, Decimal("-0.35")),
        ("recipient.delivered", "OUTCOME_FAILURE"): (1, Decimal(0)),
        ("recipient.delivered", "OUTCOME_SUCCESS"): (3, Decimal("0.30")),  # not 0.30000000000000004
    }
    by_day = stubs.query.Aggregate(
        query_pb2.AggregateRequest(filter=f, group_by=[query_pb2.GROUP_BY_DAY])
    ).rows
    assert [(tuple(r.keys), r.count, r.price_sum) for r in by_day] == [
        (("2025-11-24",), 3, "0.30"),
        (("2025-11-25",), 2, "-0.35"),
    ]
    by_hour = stubs.query.Aggregate(
        query_pb2.AggregateRequest(filter=f, group_by=[query_pb2.GROUP_BY_HOUR])
    ).rows
    assert [r.keys[0] for r in by_hour] == [
        "2025-11-24T16:00:00Z",
        "2025-11-25T16:00:00Z",
        "2025-11-25T17:00:00Z",
    ]
    total = stubs.query.Aggregate(query_pb2.AggregateRequest(filter=f)).rows
    assert [(list(r.keys), r.count, Decimal(r.price_sum)) for r in total] == [([], 5, Decimal("-0.05"))]
    error = rpc_error(lambda: stubs.query.Aggregate(query_pb2.AggregateRequest(group_by=[17])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "group_by[0]" in error.details()
