"""Timelines page: bounded work a page, durations and changes right across page boundaries,
the whole journey's total, answers under a default gRPC client's 4 MB, and the store's own
records about a lead shown apart from its steps."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from leadtrail.server.timelines import MAX_TIMELINE_PAGE, key_of, read_page
from leadtrail.storage import DEFAULT_ACCOUNT, Event, StoredEvent
from leadtrail.storage.wirebody import of_event
from leadtrail.v1 import admin_pb2, event_pb2, query_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
T0 = 1_735_000_000_000  # 2024-12-24


def append_all(stubs: Stubs, events: list[event_pb2.Event]) -> None:
    for start in range(0, len(events), 1000):
        request = submission_pb2.AppendRequest(events=events[start : start + 1000])
        stubs.submission.Append(request, timeout=120)


def step_event(lead_id: str, i: int, **lead: Any) -> event_pb2.Event:
    event = event_pb2.Event(type="source.submitted", lead_id=lead_id, flow_id="flow-pages")
    event.timestamp.FromMilliseconds(T0 + i * 1000)
    event.lead.update({"step": i, **lead})
    return event


def pages(stubs: Stubs, lead_id: str, **kwargs: Any) -> list[query_pb2.Timeline]:
    out: list[query_pb2.Timeline] = []
    token = ""
    while True:
        request = query_pb2.GetTimelineRequest(lead_id=lead_id, page_token=token, **kwargs)
        page = stubs.query.GetTimeline(request, timeout=60)
        out.append(page)
        token = page.next_page_token
        if not token:
            return out
        assert len(out) < 1000, "pages never end"


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_a_20000_event_journey_pages_with_durations_and_changes_across_page_boundaries(
    stubs: Stubs,
) -> None:
    count = 20_000
    append_all(stubs, [step_event("lead-long", i) for i in range(count)])
    got = pages(stubs, "lead-long")
    assert [len(p.steps) for p in got] == [MAX_TIMELINE_PAGE] * (count // MAX_TIMELINE_PAGE)
    steps = [s for p in got for s in p.steps]
    assert [s.event.lead["step"] for s in steps] == list(range(count))
    assert all(p.total_ms == (count - 1) * 1000 for p in got)  # the whole journey's, on every page
    assert steps[0].since_previous_ms == 0
    for page in got[1:]:  # the first step of a page is measured against the previous page's last
        first = page.steps[0]
        assert first.since_previous_ms == 1000
        assert [(c.field, c.kind) for c in first.changes] == [("step", query_pb2.CHANGE_KIND_CHANGED)]
        assert first.changes[0].before.number_value == first.event.lead["step"] - 1
    assert all(not p.audit for p in got)


def test_page_size_chooses_the_steps_a_page_holds(stubs: Stubs) -> None:
    append_all(stubs, [step_event("lead-seven", i) for i in range(7)])
    got = pages(stubs, "lead-seven", page_size=3)
    assert [len(p.steps) for p in got] == [3, 3, 1]
    assert [s.event.lead["step"] for p in got for s in p.steps] == list(range(7))
    assert got[2].steps[0].since_previous_ms == 1000


def test_a_page_size_over_the_limit_and_a_foreign_page_token_are_invalid_arguments(stubs: Stubs) -> None:
    append_all(stubs, [step_event("lead-args", i) for i in range(3)])
    append_all(stubs, [step_event("lead-other", i) for i in range(3)])
    over = rpc_error(
        lambda: stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-args", page_size=1001))
    )
    assert over.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in over.details() and "1000" in over.details()
    for token in ("nonsense", "t1.!!!", "t1.AAAA"):
        bad = rpc_error(
            lambda token=token: stubs.query.GetTimeline(
                query_pb2.GetTimelineRequest(lead_id="lead-args", page_token=token)
            )
        )
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert "page_token" in bad.details()
    [first, _, _] = pages(stubs, "lead-other", page_size=1)
    foreign = rpc_error(
        lambda: stubs.query.GetTimeline(
            query_pb2.GetTimelineRequest(lead_id="lead-args", page_token=first.next_page_token)
        )
    )
    assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lead-args" in foreign.details()


def test_timeline_and_query_pages_fit_a_default_grpc_client(stubs: Stubs) -> None:
    # 60 events of ~60 KB snapshots, each step changing them all: 3.6 MB of events, and
    # twice that again in changes. The stubs' channel keeps gRPC's 4 MB receive limit.
    blob = "x" * 60_000
    events = [step_event("lead-big", i, blob=f"{i:05d}{blob}") for i in range(60)]
    append_all(stubs, events)
    got = pages(stubs, "lead-big", json_snapshots=True)
    assert len(got) > 1
    assert all(p.ByteSize() < 4 * 1024 * 1024 for p in got)
    assert [json.loads(s.event.lead_json)["step"] for p in got for s in p.steps] == list(range(60))
    f = event_pb2.EventFilter(lead_id="lead-big")
    seen: list[str] = []
    token = ""
    while True:
        request = query_pb2.QueryEventsRequest(filter=f, page_size=1000, include_lead=True, page_token=token)
        page = stubs.query.QueryEvents(request, timeout=60)
        assert page.ByteSize() < 4 * 1024 * 1024
        seen.extend(e.id for e in page.events)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 60


def test_after_an_erasure_the_journey_is_the_leads_own_and_the_erasure_is_shown_apart(stubs: Stubs) -> None:
    append_all(stubs, [step_event("lead-erased", i, email="pat@example.com") for i in range(5)])
    erased = stubs.admin.EraseLead(
        admin_pb2.EraseLeadRequest(lead_id="lead-erased", reason="asked"), timeout=60
    )
    [page] = pages(stubs, "lead-erased")
    assert [s.event.type for s in page.steps] == ["source.submitted"] * 5
    assert page.total_ms == 4000  # not the years to the erasure
    assert [(e.type, e.id) for e in page.audit] == [("audit.erased", erased.audit_event_id)]
    [later] = pages(stubs, "lead-erased", page_size=2)[1:2]
    assert not later.audit  # shown on the first page only


class CountingLead:
    """A lead of ``count`` events behind ``lead_stored``, counting the events handed out."""

    def __init__(self, count: int) -> None:
        self.events = [
            of_event(
                Event("source.submitted", "lead", "flow", id=f"e{i}", timestamp_ms=T0 + i, position=i + 1)
            )
            for i in range(count)
        ]
        self.read = 0

    def lead_stored(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        start: tuple[int, int] | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[StoredEvent]:
        ordered = self.events[::-1] if descending else self.events
        if start is not None:
            ordered = [e for e in ordered if (key_of(e) <= start if descending else key_of(e) >= start)]
        out = ordered[:limit]
        self.read += len(out)
        return out


def test_a_page_reads_its_own_events_and_a_few_more_whatever_the_journey_length() -> None:
    lead = CountingLead(50_000)
    first = read_page(lead, "lead", DEFAULT_ACCOUNT, lambda e: True, 1000, None)
    assert len(first.steps) == 1000 and first.more and first.total_ms == 49_999
    assert lead.read <= 1000 + 2 + 2 * 4
    lead.read = 0
    middle = read_page(lead, "lead", DEFAULT_ACCOUNT, lambda e: True, 1000, key_of(lead.events[24_999]))
    assert middle.previous is lead.events[24_999]
    assert middle.steps[0] is lead.events[25_000]
    assert lead.read <= 1000 + 2 + 2 * 4
