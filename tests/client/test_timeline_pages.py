"""A long timeline arrives in pages: the SDK follows them to the end, or hands them over one by one."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from leadtrail.client import AsyncClient, Client, Event, Timeline

T0 = datetime(2025, 6, 1, tzinfo=UTC)
GAPS_MS = [0, 50, 1200, 7, 60_000, 3, 3, 86_400_000]
_unique = itertools.count()


def _lead() -> str:
    return f"lead-pages-{time.monotonic_ns()}-{next(_unique)}"


def _journey(client: Client, lead: str) -> None:
    moments = list(itertools.accumulate(GAPS_MS))
    client.append(
        [
            Event("step.done", lead, "flow-pages", timestamp=T0 + timedelta(milliseconds=ms), lead={"n": n})
            for n, ms in enumerate(moments)
        ]
    )


def _shape(timeline: Timeline) -> list[tuple[str, int, list[tuple[str, Any, Any]]]]:
    return [
        (step.event.id, step.since_previous_ms, [(c.field, c.before, c.after) for c in step.changes])
        for step in timeline.steps
    ]


def test_timeline_follows_every_page_and_pages_keep_the_journeys_gaps(leadtrail_server: Any) -> None:
    lead = _lead()
    with Client(leadtrail_server.address, timeout=30) as client:
        _journey(client, lead)
        pages = list(client.timeline_pages(lead, page_size=3))
        joined = client.timeline(lead, page_size=3)
        whole = client.timeline(lead)
    assert [len(page.steps) for page in pages] == [3, 3, 2]
    assert [bool(page.next_page_token) for page in pages] == [True, True, False]
    assert [step.since_previous_ms for page in pages for step in page.steps] == GAPS_MS
    assert all(page.total_ms == sum(GAPS_MS) for page in pages)
    assert _shape(joined) == _shape(whole)
    assert len(joined.steps) == len(GAPS_MS) and joined.next_page_token == ""
    assert (joined.total_ms, joined.lead_id) == (sum(GAPS_MS), lead)
    # The second page's first step still knows the step before it.
    assert pages[1].steps[0].changes[0].before == 2 and pages[1].steps[0].changes[0].after == 3


def test_a_lead_of_2500_events_comes_whole_in_pages_of_1000(leadtrail_server: Any) -> None:
    lead = _lead()
    with Client(leadtrail_server.address, timeout=60) as client:
        for start in range(0, 2500, 500):
            client.append(
                [
                    Event("enhancement.success", lead, "flow-pages", timestamp=T0 + timedelta(seconds=i))
                    for i in range(start, start + 500)
                ]
            )
        pages = [len(page.steps) for page in client.timeline_pages(lead)]
        timeline = client.timeline(lead)
    assert pages == [1000, 1000, 500]
    assert len(timeline.steps) == 2500 and timeline.total_ms == 2499_000
    assert {step.since_previous_ms for step in timeline.steps[1:]} == {1000}


def test_the_async_client_follows_the_pages_too(leadtrail_server: Any) -> None:
    lead = _lead()
    with Client(leadtrail_server.address, timeout=30) as client:
        _journey(client, lead)
        expected = _shape(client.timeline(lead))

    async def scenario() -> tuple[Timeline, list[int]]:
        async with AsyncClient(leadtrail_server.address, timeout=30) as client:
            sizes = [len(page.steps) async for page in client.timeline_pages(lead, page_size=5)]
            return await client.timeline(lead, page_size=2), sizes

    joined, sizes = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert sizes == [5, 3]
    assert _shape(joined) == expected


def test_a_page_size_beyond_the_servers_maximum_is_refused_before_sending(leadtrail_server: Any) -> None:
    with Client(leadtrail_server.address) as client, pytest.raises(ValueError, match="page_size"):
        client.timeline("anyone", page_size=1001)
