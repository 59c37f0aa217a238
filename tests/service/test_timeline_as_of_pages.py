"""A timeline as of a moment, read from a real store: the journey cut at the moment, its
total over the steps shown, pages that join up only at the same moment, and a moment
before the lead existed refused as NOT_FOUND."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from leadtrail.server.status import ServiceError
from leadtrail.server.timelines import TimelinePage, key_of_token, page_message, read_page
from leadtrail.storage import DEFAULT_ACCOUNT, Event, EventLog
from leadtrail.v1 import query_pb2

T0 = 1_735_000_000_000
STEPS = [0, 1_000, 3_500, 10_000, 60_000]
"""Step i of lead-five is at T0 + STEPS[i]."""


def step(lead_id: str, i: int) -> Event:
    return Event(
        "source.submitted",
        lead_id,
        "flow-as-of",
        timestamp_ms=T0 + STEPS[i],
        lead={"step": i, "state": "CA" if i < 3 else "TX", f"field{i}": True},
    )


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLog]:
    with EventLog.open(tmp_path_factory.mktemp("as-of")) as log:
        log.append([step("lead-five", i) for i in range(5)])
        yield log


def sees_all(event: object) -> bool:
    return True


def message(page: TimelinePage, lead_id: str = "lead-five") -> query_pb2.Timeline:
    return query_pb2.Timeline.FromString(page_message(lead_id, DEFAULT_ACCOUNT, page, None, False)[0])


def test_as_of_between_steps_3_and_4_shows_3_steps_and_the_lead_as_it_was(log: EventLog) -> None:
    page = read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 1000, None, as_of=T0 + 5_000)
    shown = message(page)
    assert [s.event.lead["step"] for s in shown.steps] == [0, 1, 2]
    assert dict(shown.steps[-1].event.lead) == step("lead-five", 2).lead
    assert shown.total_ms == 3_500
    assert [s.since_previous_ms for s in shown.steps] == [0, 1_000, 2_500]
    assert not shown.next_page_token


def test_a_step_exactly_at_as_of_is_in_and_without_as_of_the_whole_journey_is(log: EventLog) -> None:
    at = message(read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 1000, None, as_of=T0 + 10_000))
    assert [s.event.lead["step"] for s in at.steps] == [0, 1, 2, 3]
    assert at.total_ms == 10_000
    whole = message(read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 1000, None))
    assert len(whole.steps) == 5 and whole.total_ms == 60_000


def test_pages_as_of_a_moment_join_up_and_end_at_it(log: EventLog) -> None:
    as_of = T0 + 10_000
    got: list[query_pb2.TimelineStep] = []
    totals: list[int] = []
    after = None
    for _ in range(10):
        page = read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 1, after, as_of=as_of)
        shown = message(page)
        got.extend(shown.steps)
        totals.append(shown.total_ms)
        if not shown.next_page_token:
            break
        after = key_of_token(shown.next_page_token, "lead-five", DEFAULT_ACCOUNT)
    assert [s.event.lead["step"] for s in got] == [0, 1, 2, 3]
    assert totals == [10_000] * 4  # the journey as of then, on every page
    assert [s.since_previous_ms for s in got] == [0, 1_000, 2_500, 6_500]
    # The first step of a page is measured against the previous page's last.
    assert {(c.field, c.kind) for c in got[3].changes} == {
        ("field2", query_pb2.CHANGE_KIND_REMOVED),
        ("field3", query_pb2.CHANGE_KIND_ADDED),
        ("state", query_pb2.CHANGE_KIND_CHANGED),
        ("step", query_pb2.CHANGE_KIND_CHANGED),
    }


def test_a_page_token_goes_on_only_at_the_moment_it_was_issued_for(log: EventLog) -> None:
    first = message(read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 2, None, as_of=T0 + 10_000))
    after = key_of_token(first.next_page_token, "lead-five", DEFAULT_ACCOUNT)
    for other in (None, T0 + 60_000):
        with pytest.raises(ServiceError) as info:
            read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 2, after, as_of=other)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(info.value).startswith("as_of: ") and "2024-12-24T00:26:50.000Z" in str(info.value)
    whole = message(read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 2, None))
    with pytest.raises(ServiceError) as info:
        read_page(
            log,
            "lead-five",
            DEFAULT_ACCOUNT,
            sees_all,
            2,
            key_of_token(whole.next_page_token, "lead-five", DEFAULT_ACCOUNT),
            as_of=T0 + 10_000,
        )
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "whole journey" in str(info.value)


def test_as_of_before_the_first_step_is_not_found_saying_when_the_journey_begins(log: EventLog) -> None:
    with pytest.raises(ServiceError) as info:
        read_page(log, "lead-five", DEFAULT_ACCOUNT, sees_all, 1000, None, as_of=T0 - 1)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "before as_of 2024-12-24T00:26:39.999Z" in str(info.value)
    assert "begins at 2024-12-24T00:26:40.000Z" in str(info.value)
    # An unknown lead is left to the service's own NOT_FOUND: an empty page.
    page = read_page(log, "lead-none", DEFAULT_ACCOUNT, sees_all, 1000, None, as_of=T0)
    assert not page.steps and not page.audit


def test_an_erasure_made_after_the_moment_is_shown_with_the_steps_it_changed(tmp_path: Path) -> None:
    with EventLog.open(tmp_path) as log:
        log.append([step("lead-erased", i) for i in range(5)])
        report = log.erase_lead("lead-erased", reason="asked")
        assert report is not None
        for page_size in (1000, 2):  # the page reads the whole journey as of then, or not
            page = read_page(log, "lead-erased", DEFAULT_ACCOUNT, sees_all, page_size, None, as_of=T0 + 5_000)
            shown = message(page, "lead-erased")
            assert [s.event.lead["step"] for s in shown.steps] == [0, 1, 2][:page_size]
            assert [e.id for e in shown.audit] == [report.audit_event_id]
            assert shown.total_ms == 3_500
