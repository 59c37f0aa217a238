"""The traffic of `demo --live` without a server: incidents by virtual time, decided by the seed."""

from __future__ import annotations

from leadtrail.server.simulation import IncidentChange, LiveTraffic, SimulatedEvent
from leadtrail.server.simulation.records import ERROR, FAILURE, SUCCESS

RATE, EVERY = 100, 4


def _run(seed: int, n: int) -> tuple[list[SimulatedEvent], list[tuple[int, IncidentChange]]]:
    traffic = LiveTraffic(seed=seed, rate=RATE, incident_every_s=EVERY)
    events: list[SimulatedEvent] = []
    changes: list[tuple[int, IncidentChange]] = []
    for item in traffic.take(n):
        if isinstance(item, IncidentChange):
            changes.append((len(events), item))
        else:
            events.append(item)
    return events, changes


def test_take_returns_exactly_n_events_and_the_same_for_the_same_seed() -> None:
    first, first_changes = _run(3, 2000)
    again, again_changes = _run(3, 2000)
    assert len(first) == 2000
    assert first == again and first_changes == again_changes
    other, _ = _run(4, 2000)
    assert [e["lead_id"] for e in other] != [e["lead_id"] for e in first]


def test_incidents_start_half_a_period_in_and_last_half_a_period() -> None:
    _, changes = _run(3, 20 * RATE)  # 20 virtual seconds: incidents at 2-4, 6-8, 10-12, 14-16, 18-20
    starts = [at for at, change in changes if change.started]
    ends = [at for at, change in changes if not change.started]
    assert starts == [2 * RATE, 6 * RATE, 10 * RATE, 14 * RATE, 18 * RATE]
    assert ends == [4 * RATE, 8 * RATE, 12 * RATE, 16 * RATE]
    kinds = [change.incident.kind for _, change in changes if change.started]
    assert sorted(kinds[:3]) == ["bad-source", "buyer-outage", "slow-enhancement"]


def test_no_incident_when_every_is_zero() -> None:
    traffic = LiveTraffic(seed=3, rate=RATE, incident_every_s=0)
    items = traffic.take(5000)
    assert all(isinstance(item, dict) for item in items)
    assert not any("incident" in item["details"] for item in items if isinstance(item, dict))


def test_each_incident_changes_only_its_entity_while_it_lasts() -> None:
    events, changes = _run(3, 20 * RATE)
    windows = [(at, at + EVERY // 2 * RATE, change.incident) for at, change in changes if change.started]
    for start, end, incident in windows:
        tagged = [i for i in range(start, end) if events[i]["details"].get("incident") == incident.kind]
        assert tagged, incident
        touched = [events[i] for i in tagged]
        if incident.kind == "buyer-outage":
            assert {e["entity_id"] for e in touched} == {incident.entity_id}
            deliveries = [
                e
                for e in events[start:end]
                if e["entity_id"] == incident.entity_id and e["type"].startswith("recipient.")
            ]
            assert deliveries and {e["outcome"] for e in deliveries} <= {FAILURE, ERROR}
            assert all(e["price"] == "" for e in deliveries)
        elif incident.kind == "slow-enhancement":
            assert {e["entity_id"] for e in touched} == {incident.entity_id}
            if incident.down:
                assert {e["type"] for e in touched} == {"enhancement.error"}
        else:
            # A rejected lead's journey ends with the rejection: no buyer, no sale.
            for lead in {e["lead_id"] for e in touched}:
                journey = [e for e in events if e["lead_id"] == lead]
                assert journey[0]["entity_id"] == incident.entity_id
                types = [e["type"] for e in journey]
                assert "source.accepted" not in types and "recipient.delivered" not in types
                assert "source.rejected" in types
                assert all(e["outcome"] != SUCCESS for e in journey if e["type"] == "flow.completed")
    # Outside the incidents nothing is changed (a rejected lead's last steps may follow its incident).
    for i, event in enumerate(events):
        kind = event["details"].get("incident")
        if kind is not None and kind != "bad-source":
            assert any(start <= i < end and incident.kind == kind for start, end, incident in windows)
