"""The blocking client against a real ``leadtrail serve`` process."""

from __future__ import annotations

import csv
import io
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from leadtrail.client import (
    AggregateRow,
    CaughtUp,
    ChangeKind,
    Checkpoint,
    Client,
    Event,
    InvalidArgumentError,
    NotFoundError,
    Outcome,
    UnavailableError,
)

T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)
_unique = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}-{next(_unique)}"


@pytest.fixture
def client(leadtrail_server: Any) -> Iterator[Client]:
    with Client(leadtrail_server.address, timeout=10) as client:
        yield client


def test_appended_event_reads_back_with_every_field(client: Client) -> None:
    sent = Event(
        type="recipient.delivered",
        lead_id=unique("lead"),
        flow_id="flow-a",
        timestamp=T0,
        entity_id="buyer-1",
        outcome=Outcome.SUCCESS,
        reason="accepted",
        duration_ms=87,
        integration="ping_post",
        response_code=200,
        price=Decimal("25.10"),
        details={"rule_set": "default", "rules_evaluated": 4, "nested": {"a": [1, None, "x"]}},
        lead={"email": "a@example.com", "email.valid": True, "age": None},
    )
    result = client.append(sent)
    assert not result.duplicate and result.position >= 1 and result.id.startswith("evt_")
    assert result.recorded_at.tzinfo is not None
    got = client.get(result.id)
    assert got.position == result.position and got.recorded_at == result.recorded_at
    assert got.account_id == "default"
    for name in (
        "type",
        "lead_id",
        "flow_id",
        "timestamp",
        "entity_id",
        "outcome",
        "reason",
        "duration_ms",
        "integration",
        "response_code",
        "price",
        "details",
        "lead",
    ):
        assert getattr(got, name) == getattr(sent, name), name
    assert isinstance(got.price, Decimal) and str(got.price) == "25.10"


def test_appending_a_known_id_again_returns_the_original_position(client: Client) -> None:
    event = Event("source.submitted", unique("lead"), "flow-a", id="evt_01JNMXW2YQ00000000000000AA")
    first = client.append(event)
    again = client.append(event)
    assert again.duplicate and again.position == first.position and again.id == first.id


def test_a_batch_with_one_invalid_event_stores_nothing(client: Client) -> None:
    lead = unique("lead")
    with pytest.raises(InvalidArgumentError) as caught:
        client.append([Event("source.submitted", lead, "f"), Event("Bad Type", lead, "f")])
    assert "events[1]" in caught.value.details
    assert list(client.query(lead_id=lead)) == []


def test_append_of_several_events_returns_results_in_request_order(client: Client) -> None:
    lead = unique("lead")
    results = client.append(
        [Event("source.submitted", lead, "f", timestamp=T0 + timedelta(seconds=i)) for i in range(5)]
    )
    assert [r.position for r in results] == sorted(r.position for r in results)
    assert len({r.id for r in results}) == 5
    assert client.append([]) == []


def test_unknown_event_and_lead_raise_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.get("evt_01JNMXW2YQ0000000000000ZZZ")
    with pytest.raises(NotFoundError):
        client.timeline(unique("nobody"))


def test_timeline_reports_steps_gaps_and_snapshot_changes(client: Client) -> None:
    lead = unique("lead")
    client.append(
        [
            Event("source.submitted", lead, "f", timestamp=T0, lead={"email": "a@x.com", "phone": "1"}),
            Event(
                "enhancement.appended",
                lead,
                "f",
                timestamp=T0 + timedelta(milliseconds=1500),
                lead={"email": "b@x.com", "carrier": None},
            ),
        ]
    )
    timeline = client.timeline(lead)
    assert timeline.lead_id == lead and timeline.total_ms == 1500
    first, second = timeline.steps
    assert first.since_previous_ms == 0 and second.since_previous_ms == 1500
    assert {c.field: (c.kind, c.after) for c in first.changes} == {
        "email": (ChangeKind.ADDED, "a@x.com"),
        "phone": (ChangeKind.ADDED, "1"),
    }
    changes = {c.field: c for c in second.changes}
    assert (changes["email"].kind, changes["email"].before, changes["email"].after) == (
        ChangeKind.CHANGED,
        "a@x.com",
        "b@x.com",
    )
    assert (changes["phone"].kind, changes["phone"].before, changes["phone"].after) == (
        ChangeKind.REMOVED,
        "1",
        None,
    )
    assert (changes["carrier"].kind, changes["carrier"].after) == (ChangeKind.ADDED, None)


def test_query_pages_through_every_match_in_order(client: Client) -> None:
    flow = unique("flow")
    sent = client.append(
        [
            Event(
                "source.submitted" if i % 2 else "recipient.delivered",
                f"lead-{i}",
                flow,
                timestamp=T0 + timedelta(seconds=i),
                outcome=Outcome.SUCCESS if i % 3 else Outcome.FAILURE,
            )
            for i in range(23)
        ]
    )
    got = list(client.query(flow_id=flow, page_size=5))
    assert [e.id for e in got] == [r.id for r in sent]
    assert all(e.lead == {} for e in got)  # snapshots only when asked for
    newest_first = list(client.query(flow_id=flow, descending=True, page_size=7))
    assert [e.id for e in newest_first] == [r.id for r in reversed(sent)]
    delivered = list(client.query(flow_id=flow, types="recipient.*"))
    assert len(delivered) == 12 and {e.type for e in delivered} == {"recipient.delivered"}
    failures = list(client.query(flow_id=flow, outcomes=[Outcome.FAILURE]))
    assert len(failures) == 8
    window = list(client.query(flow_id=flow, start=T0 + timedelta(seconds=5), end=T0 + timedelta(seconds=9)))
    assert [e.timestamp for e in window] == [T0 + timedelta(seconds=s) for s in range(5, 9)]


def test_query_page_hands_back_a_token_until_the_last_page(client: Client) -> None:
    flow = unique("flow")
    client.append(
        [
            Event("source.submitted", "l", flow, timestamp=T0 + timedelta(seconds=i), lead={"i": i})
            for i in range(5)
        ]
    )
    page, token = client.query_page(flow_id=flow, page_size=2, include_lead=True)
    seen = list(page)
    while token:
        page, token = client.query_page(flow_id=flow, page_size=2, page_token=token, include_lead=True)
        seen += page
    assert [e.lead["i"] for e in seen] == [0, 1, 2, 3, 4]


def test_aggregate_counts_and_sums_money_exactly(client: Client) -> None:
    flow = unique("flow")
    client.append(
        [
            Event(
                "recipient.delivered", "l1", flow, timestamp=T0, outcome=Outcome.SUCCESS, price=Decimal(".10")
            ),
            Event(
                "recipient.delivered", "l2", flow, timestamp=T0, outcome=Outcome.SUCCESS, price=Decimal(".20")
            ),
            Event("recipient.delivered", "l3", flow, timestamp=T0, outcome=Outcome.FAILURE),
            Event("source.submitted", "l4", flow, timestamp=T0 + timedelta(days=1), price=Decimal("-3.5")),
        ]
    )
    rows = {row.keys: row for row in client.aggregate(("type", "outcome"), flow_id=flow)}
    success = rows[("recipient.delivered", "SUCCESS")]
    assert success.count == 2 and success.price_sum == Decimal("0.30")
    assert rows[("recipient.delivered", "FAILURE")] == AggregateRow(
        ("recipient.delivered", "FAILURE"), 1, Decimal(0)
    )
    by_day = client.aggregate("day", flow_id=flow)
    assert [row.count for row in by_day] == [3, 1]
    assert sum((row.price_sum for row in by_day), Decimal(0)) == Decimal("-3.2")


def test_export_writes_json_lines_and_csv_with_chosen_columns(client: Client, tmp_path: Path) -> None:
    flow = unique("flow")
    sent = client.append(
        [
            Event(
                "source.submitted",
                f"l{i}",
                flow,
                timestamp=T0 + timedelta(seconds=i),
                lead={"email": f"{i}@x.com"},
            )
            for i in range(4)
        ]
    )
    lines = b"".join(client.export(flow_id=flow)).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r.id for r in sent]
    target = tmp_path / "out.csv"
    written = client.export_to(target, format="csv", fields=("id", "lead.email"), flow_id=flow)
    assert written == target.stat().st_size > 0
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["id", "lead.email"]
    assert rows[1:] == [[r.id, f"{i}@x.com"] for i, r in enumerate(sent)]
    buffer = io.BytesIO()
    assert client.export_to(buffer, flow_id=flow) == len(buffer.getvalue()) > 0


def test_subscription_replays_history_catches_up_then_follows_live_events(client: Client) -> None:
    flow = unique("flow")
    history = client.append([Event("source.submitted", "l", flow) for _ in range(3)])
    with client.subscribe(from_start=True, flow_id=flow, include_checkpoints=True) as subscription:
        items = iter(subscription)
        replayed = [next(items) for _ in range(3)]
        assert [e.id for e in replayed] == [r.id for r in history]  # type: ignore[union-attr]
        marker = next(item for item in items if not isinstance(item, Checkpoint))
        assert isinstance(marker, CaughtUp) and subscription.caught_up
        live = client.append(Event("recipient.delivered", "l", flow))
        arrived = next(item for item in items if isinstance(item, Event))
        assert arrived.id == live.id and subscription.position >= live.position


def test_a_subscription_position_names_the_last_event_handed_over_even_inside_a_batch(
    client: Client,
) -> None:
    flow = unique("flow")
    sent = client.append([Event("source.submitted", f"l{i}", flow) for i in range(40)])
    with client.subscribe(from_start=True, flow_id=flow) as subscription:
        items = iter(subscription)
        for result in sent:  # the server sends these in a few batches; the caller sees one at a time
            event = next(items)
            assert isinstance(event, Event) and event.id == result.id
            assert subscription.position == result.position


def test_subscription_without_start_point_sees_only_new_events(client: Client) -> None:
    flow = unique("flow")
    client.append(Event("source.submitted", "old", flow))
    with client.subscribe(flow_id=flow, include_checkpoints=True) as subscription:
        items = iter(subscription)
        for item in items:  # the end of the log is reached when it says it caught up
            assert not isinstance(item, Event), item
            if isinstance(item, CaughtUp):
                break
        new = client.append(Event("source.submitted", "new", flow))
        first = next(item for item in items if not isinstance(item, Checkpoint))
    assert isinstance(first, Event) and first.id == new.id


def test_stop_from_another_thread_ends_the_iteration_promptly(client: Client) -> None:
    subscription = client.subscribe(flow_id=unique("flow"))
    threading.Timer(0.3, subscription.stop).start()
    started = time.monotonic()
    assert list(subscription) == []
    assert time.monotonic() - started < 10  # stopped, not ended by a timeout of its own


def test_administration_reports_stats_verification_and_retention(client: Client) -> None:
    client.append(Event("source.submitted", unique("lead"), "f"))
    stats = client.stats()
    assert stats.event_count >= 1 and stats.last_position >= stats.event_count and stats.writable
    report = client.verify()
    assert report.records_checked == stats.event_count and report.problems == []
    policy = client.set_retention_policy("archive-co", max_age_days=30, legal_hold=True)
    assert (policy.account_id, policy.max_age_days, policy.legal_hold) == ("archive-co", 30, True)
    removed = client.apply_retention(now=datetime.now(UTC))
    assert removed.events_removed == 0


def test_unreachable_server_raises_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=2) as client, pytest.raises(UnavailableError):
        client.stats()
