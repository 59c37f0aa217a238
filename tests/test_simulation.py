"""The lead-flow simulation feeds benchmarks and demos: its events must be ones the
store accepts and a platform would produce, and a seed must always name the same data."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from leadtrail.server.simulation import (
    SNAPSHOT_MAX_BYTES,
    SNAPSHOT_MIN_BYTES,
    LeadFlowSimulator,
    SimulatedEvent,
    snapshot_bytes,
)
from leadtrail.storage import Event, EventLog, Outcome

TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MONEY_PATTERN = re.compile(r"^-?[0-9]+\.[0-9]{2}$")


@pytest.fixture(scope="module")
def leads() -> list[list[SimulatedEvent]]:
    return list(LeadFlowSimulator(seed=7).leads(600))


def all_events(leads: list[list[SimulatedEvent]]) -> list[SimulatedEvent]:
    return [event for lead in leads for event in lead]


def to_event(d: SimulatedEvent) -> Event:
    return Event(**{**d, "outcome": Outcome(d["outcome"])})  # type: ignore[arg-type]


def test_the_same_seed_gives_the_same_events() -> None:
    first = list(LeadFlowSimulator(seed=42, start_ms=1_700_000_000_000).events(200))
    second = list(LeadFlowSimulator(seed=42, start_ms=1_700_000_000_000).events(200))
    assert first == second


def test_another_seed_gives_other_leads() -> None:
    first = {lead[0]["lead_id"] for lead in LeadFlowSimulator(seed=1).leads(50)}
    second = {lead[0]["lead_id"] for lead in LeadFlowSimulator(seed=2).leads(50)}
    assert not first & second


def test_successive_calls_simulate_successive_days_without_repeating_leads() -> None:
    simulator = LeadFlowSimulator(seed=3, start_ms=0)
    day_one = list(simulator.leads(100))
    day_two = list(simulator.leads(100))
    assert not {lead[0]["lead_id"] for lead in day_one} & {lead[0]["lead_id"] for lead in day_two}
    assert max(lead[0]["timestamp_ms"] for lead in day_one) < 86_400_000
    assert min(lead[0]["timestamp_ms"] for lead in day_two) >= 86_400_000


def test_every_lead_has_five_to_eight_events(leads: list[list[SimulatedEvent]]) -> None:
    lengths = Counter(len(lead) for lead in leads)
    assert set(lengths) <= {5, 6, 7, 8}


def test_a_fixed_journey_length_is_honoured() -> None:
    leads = list(LeadFlowSimulator(seed=5).leads(200, events_per_lead=10))
    assert {len(lead) for lead in leads} == {10}


def test_an_impossible_journey_length_is_refused() -> None:
    with pytest.raises(ValueError, match="events_per_lead 4"):
        list(LeadFlowSimulator().leads(1, events_per_lead=4))


def test_twenty_flows_with_sources_buyers_and_enhancements() -> None:
    simulator = LeadFlowSimulator(seed=11)
    assert len(simulator.flows) == 20
    assert len({flow.id for flow in simulator.flows}) == 20
    assert all(flow.sources and flow.recipients and flow.enhancements for flow in simulator.flows)
    services = {e.service for flow in simulator.flows for e in flow.enhancements}
    assert services == {"phone_check", "email_verify", "trustedform"}


def test_snapshots_are_one_to_one_point_four_kilobytes(leads: list[list[SimulatedEvent]]) -> None:
    sizes = [snapshot_bytes(event["lead"]) for event in all_events(leads)]
    assert min(sizes) >= SNAPSHOT_MIN_BYTES >= 1000
    assert max(sizes) <= SNAPSHOT_MAX_BYTES <= 1400


def test_snapshots_of_a_lead_only_gain_fields(leads: list[list[SimulatedEvent]]) -> None:
    for lead in leads:
        for earlier, later in pairwise(lead):
            before, after = earlier["lead"], later["lead"]
            assert {k: after[k] for k in before} == before, later["type"]
            assert before is not after


def test_enhancements_append_namespaced_fields(leads: list[list[SimulatedEvent]]) -> None:
    appended = {
        key
        for event in all_events(leads)
        if event["type"] == "enhancement.success"
        for key in event["lead"]
        if key.startswith("appended.")
    }
    assert "appended.phone_check.carrier" in appended
    assert {key.split(".")[1] for key in appended} == {"phone_check", "email_verify", "trustedform"}


def test_snapshot_of_size_is_exactly_the_size_asked_for() -> None:
    simulator = LeadFlowSimulator(seed=9)
    for target in (1000, 1200, 1400, 4000):
        assert snapshot_bytes(simulator.snapshot_of_size(target)) == target


def test_prices_are_plain_decimal_strings(leads: list[list[SimulatedEvent]]) -> None:
    priced = [event for event in all_events(leads) if event["price"]]
    assert priced
    for event in priced:
        assert MONEY_PATTERN.match(event["price"]), event["price"]
        amount = Decimal(event["price"])
        if event["type"] == "source.accepted":
            assert amount < 0  # what we paid the source
        if event["type"] in ("recipient.delivered", "retry.attempted"):
            assert amount > 0  # what the buyer paid


def test_types_match_the_storage_pattern(leads: list[list[SimulatedEvent]]) -> None:
    types = {event["type"] for event in all_events(leads)}
    assert all(TYPE_PATTERN.match(t) and len(t) <= 64 for t in types)
    assert {"source.submitted", "recipient.delivered", "flow.completed"} <= types


def test_journeys_run_in_platform_order(leads: list[list[SimulatedEvent]]) -> None:
    for lead in leads:
        types = [event["type"] for event in lead]
        assert types[0] == "source.submitted"
        assert types.count("flow.completed") == 1
        tail = types[types.index("flow.completed") + 1 :]
        assert tail in ([], ["feedback.received"])
        if "source.accepted" in types:
            assert types[1] == "source.accepted"
        else:
            assert "source.rejected" in types
        assert len({event["lead_id"] for event in lead}) == 1


def test_timestamps_never_go_backwards_within_a_lead(leads: list[list[SimulatedEvent]]) -> None:
    for lead in leads:
        stamps = [event["timestamp_ms"] for event in lead]
        assert stamps == sorted(stamps)


def test_leads_spread_over_a_day_from_the_start() -> None:
    start = 1_705_294_800_000
    leads = list(LeadFlowSimulator(seed=4, start_ms=start).leads(500))
    arrivals = [lead[0]["timestamp_ms"] for lead in leads]
    assert arrivals == sorted(arrivals)
    assert start <= arrivals[0] and arrivals[-1] < start + 86_400_000
    assert arrivals[-1] - arrivals[0] > 20 * 3_600_000


def test_interleaved_events_come_in_time_order() -> None:
    events = list(LeadFlowSimulator(seed=6).events(300))
    stamps = [event["timestamp_ms"] for event in events]
    assert stamps == sorted(stamps)
    assert len({event["lead_id"] for event in events}) == 300


def test_every_event_builds_a_storage_event(leads: list[list[SimulatedEvent]]) -> None:
    for d in all_events(leads):
        event = Event(**d)  # type: ignore[arg-type]
        assert event.type == d["type"]
        assert Outcome(d["outcome"]) in Outcome


def test_the_store_accepts_and_returns_simulated_leads(
    leads: list[list[SimulatedEvent]], tmp_path: Path
) -> None:
    sample = leads[:20]
    with EventLog.open(tmp_path / "data") as log:
        log.append([to_event(d) for d in all_events(sample)])
        timeline = log.timeline(sample[0][0]["lead_id"])
    assert [e.type for e in timeline] == [d["type"] for d in sample[0]]
    assert dict(timeline[-1].lead) == sample[0][-1]["lead"]
