"""GetTimeline as of a moment over a real server: the journey cut there, NOT_FOUND for a
moment before the lead existed, pages that keep to their moment; and `leadtrail timeline
--as-of` printing the lead as it was then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from leadtrail.v1 import event_pb2, query_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
AT = [0, 2_000, 5_000, 65_000, 3_600_000]
"""Step i of a lead is at T0 + AT[i]."""
TYPES = ["source.submitted", "source.accepted", "service.called", "recipient.delivered", "feedback.received"]


def step(lead_id: str, i: int) -> event_pb2.Event:
    event = event_pb2.Event(
        type=TYPES[i],
        lead_id=lead_id,
        flow_id="flow-as-of",
        entity_id=f"entity-{i}",
    )
    event.timestamp.FromMilliseconds(T0 + AT[i])
    event.lead.update({"step": i, "state": "CA" if i < 3 else "TX", "email": "ada@example.com"})
    return event


def timeline(stubs: Stubs, lead_id: str, as_of: int | None, **kwargs: Any) -> query_pb2.Timeline:
    request = query_pb2.GetTimelineRequest(lead_id=lead_id, **kwargs)
    if as_of is not None:
        request.as_of.FromMilliseconds(as_of)
    page: query_pb2.Timeline = stubs.query.GetTimeline(request, timeout=30)
    return page


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def five(stubs: Stubs) -> str:
    stubs.submission.Append(
        submission_pb2.AppendRequest(events=[step("lead-five", i) for i in range(5)]), timeout=30
    )
    return "lead-five"


def test_as_of_between_steps_3_and_4_gives_3_steps_ending_in_the_lead_as_it_was(
    stubs: Stubs, five: str
) -> None:
    cut = timeline(stubs, five, T0 + 30_000)
    assert [s.event.type for s in cut.steps] == ["source.submitted", "source.accepted", "service.called"]
    assert dict(cut.steps[-1].event.lead) == dict(step(five, 2).lead)
    assert cut.total_ms == 5_000 and not cut.next_page_token
    whole = timeline(stubs, five, None)
    assert len(whole.steps) == 5 and whole.total_ms == 3_600_000
    assert list(whole.steps[:3]) == list(cut.steps)  # the same steps, changes and durations
    at_step_4 = timeline(stubs, five, T0 + 65_000)  # a step exactly at the moment is in it
    assert len(at_step_4.steps) == 4 and at_step_4.steps[-1].event.lead["state"] == "TX"


def test_a_moment_before_the_lead_existed_is_not_found_and_says_so(stubs: Stubs, five: str) -> None:
    before = rpc_error(lambda: timeline(stubs, five, T0 - 1))
    assert before.code() == grpc.StatusCode.NOT_FOUND
    assert "no events at or before as_of 2025-12-31T23:59:59.999Z" in before.details()
    assert "begins at 2026-01-01T00:00:00.000Z" in before.details()
    unknown = rpc_error(lambda: timeline(stubs, "lead-never", T0))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_pages_as_of_a_moment_keep_to_it(stubs: Stubs, five: str) -> None:
    as_of = T0 + 65_000
    first = timeline(stubs, five, as_of, page_size=3)
    second = timeline(stubs, five, as_of, page_size=3, page_token=first.next_page_token)
    assert [s.event.lead["step"] for s in [*first.steps, *second.steps]] == [0, 1, 2, 3]
    assert not second.next_page_token
    assert second.steps[0].since_previous_ms == 60_000
    assert first.total_ms == second.total_ms == 65_000
    for other in (None, as_of + 1):

        def go_on(moment: int | None = other) -> query_pb2.Timeline:
            return timeline(stubs, five, moment, page_size=3, page_token=first.next_page_token)

        refused = rpc_error(go_on)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.details().startswith("as_of: ")


def test_the_cli_prints_the_journey_as_of_a_time(server: Any, five: str) -> None:
    command = [sys.executable, "-m", "leadtrail.server.cli", "timeline", five, "--server", server.address]
    env = {k: v for k, v in os.environ.items() if k != "LEADTRAIL_API_KEY"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, env=env)

    shown = run("--as-of", "2026-01-01T00:00:30Z", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    journey = json.loads(shown.stdout)
    assert [s["event"]["lead"]["step"] for s in journey["steps"]] == [0, 1, 2]
    assert journey["total_ms"] == 5_000
    table = run("--as-of", str(T0 + 65_000))
    assert table.returncode == 0, table.stderr
    assert "4 steps" in table.stdout.splitlines()[0] and "recipient.delivered" in table.stdout
    assert "feedback.received" not in table.stdout
    before = run("--as-of", "2025-12-31T00:00:00Z")
    assert before.returncode == 1 and before.stderr.startswith("leadtrail: ")
