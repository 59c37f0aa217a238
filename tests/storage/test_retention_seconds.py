"""Retention ages in seconds (``RetentionPolicy.max_age_seconds``): ages below a day, for
test traffic and the like, with everything else of retention as for ``max_age_days``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from leadtrail.storage import (
    Event,
    EventLog,
    InvalidArgumentError,
    MetadataFileError,
    Options,
    Outcome,
    RetentionPolicy,
    new_event_id,
)
from leadtrail_storage_support import Clock  # loaded by conftest.py

T0 = 1_700_000_000_000
MAX_SECONDS = 36_500 * 86_400


def event(account: str, n: int) -> Event:
    return Event(
        type="source.submitted",
        lead_id=f"lead-{n % 3}",
        flow_id="flow-1",
        id=new_event_id(),
        timestamp_ms=T0 + n,
        entity_id="src-1",
        outcome=Outcome.SUCCESS,
        lead={"email": f"user{n}@example.com", "score": n},
        account_id=account,
    )


def append(log: EventLog, events: list[Event]) -> list[Event]:
    results = log.append(events)
    return [replace(e, position=r.position) for e, r in zip(events, results, strict=True)]


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def log(data: Path, clock: Clock) -> Iterator[EventLog]:
    with EventLog.open(data, Options(segment_bytes=4096, clock_ms=clock)) as store:
        yield store


def ids(events: list[Event]) -> set[str]:
    return {e.id for e in events}


def test_events_older_than_the_seconds_go_and_newer_ones_stay(log: EventLog, clock: Clock) -> None:
    old = append(log, [event("test-traffic", n) for n in range(8)])
    others = append(log, [event("default", n) for n in range(4)])
    clock.now = T0 + 50_000
    at_the_limit = append(log, [event("test-traffic", 100)])  # exactly 40 s old below: kept
    clock.now = T0 + 70_000
    young = append(log, [event("test-traffic", n) for n in range(200, 205)])

    log.set_retention_policy(RetentionPolicy("test-traffic", max_age_seconds=40))
    report = log.apply_retention(now_ms=T0 + 90_000)

    assert report.events_removed == len(old)
    assert {e.id for e in log.read_from(1)} == ids(others + at_the_limit + young)
    for e in old:
        assert log.get(e.id, account_id="test-traffic") is None
    for lead in ("lead-0", "lead-1", "lead-2"):
        shown = ids(log.timeline(lead, account_id="test-traffic"))
        assert shown == {e.id for e in at_the_limit + young if e.lead_id == lead}
    assert log.verify().problems == []
    assert log.verify_chain().problems == []
    # A second pass finds nothing more to do until time moves on.
    assert log.apply_retention(now_ms=T0 + 90_000).events_removed == 0
    assert log.apply_retention(now_ms=T0 + 90_001).events_removed == 1


def test_a_legal_hold_keeps_events_past_their_seconds(log: EventLog) -> None:
    held = append(log, [event("held", n) for n in range(3)])
    log.set_retention_policy(RetentionPolicy("held", legal_hold=True, max_age_seconds=1))
    assert log.apply_retention(now_ms=T0 + 3_600_000).events_removed == 0
    assert {e.id for e in log.read_from(1)} == ids(held)


def test_the_seconds_are_kept_across_a_reopen(data: Path, clock: Clock) -> None:
    policy = RetentionPolicy("test-traffic", max_age_seconds=21_600, pii_max_age_days=2)
    with EventLog.open(data, Options(clock_ms=clock)) as log:
        log.set_retention_policy(policy)
    with EventLog.open(data, Options(clock_ms=clock)) as log:
        assert log.retention_policies() == [policy]


def test_days_and_seconds_together_are_refused_naming_both(log: EventLog) -> None:
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=3))
    with pytest.raises(InvalidArgumentError, match="max_age_days 3 and max_age_seconds 60"):
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=3, max_age_seconds=60))
    limit = f"max_age_seconds {MAX_SECONDS + 1}: must be in 0..{MAX_SECONDS}"
    with pytest.raises(InvalidArgumentError, match=limit):
        log.set_retention_policy(RetentionPolicy("acme", max_age_seconds=MAX_SECONDS + 1))
    with pytest.raises(InvalidArgumentError, match="max_age_seconds -1"):
        log.set_retention_policy(RetentionPolicy("acme", max_age_seconds=-1))
    assert log.retention_policies() == [RetentionPolicy("acme", max_age_days=3)]  # nothing stored


def test_a_policy_file_written_before_ages_in_seconds_loads_with_none(data: Path, clock: Clock) -> None:
    data.mkdir(parents=True)
    (data / "retention.json").write_text(
        json.dumps(
            [
                {"account_id": "acme", "max_age_days": 30, "legal_hold": False},
                {"account_id": "tiers", "max_age_days": 0, "pii_max_age_days": 7, "secret_max_age_days": 1},
            ]
        )
    )
    with EventLog.open(data, Options(clock_ms=clock)) as log:
        assert log.retention_policies() == [
            RetentionPolicy("acme", max_age_days=30),
            RetentionPolicy("tiers", pii_max_age_days=7, secret_max_age_days=1),
        ]
        assert all(p.max_age_seconds == 0 for p in log.retention_policies())


def test_a_policy_file_holding_both_ages_is_refused(data: Path, clock: Clock) -> None:
    data.mkdir(parents=True)
    (data / "retention.json").write_text(
        json.dumps([{"account_id": "acme", "max_age_days": 30, "max_age_seconds": 60}])
    )
    with pytest.raises(MetadataFileError, match="max_age_days 30 and max_age_seconds 60"):
        EventLog.open(data, Options(clock_ms=clock))


def test_a_second_expiry_in_a_segment_with_a_gap_keeps_the_chain(log: EventLog, clock: Clock) -> None:
    # The signed record of a run retired from a segment an earlier pass left a gap in holds
    # the chain hash across that gap (once linked over it: verify found the next event edited).
    append(log, [event("default", 0)])
    first = append(log, [event("test-traffic", 1)])
    append(log, [event("default", 2)])
    clock.now = T0 + 30_000
    second = append(log, [event("test-traffic", 3)])
    kept = append(log, [event("default", 4)])
    log.set_retention_policy(RetentionPolicy("test-traffic", max_age_seconds=20))
    assert log.apply_retention(now_ms=T0 + 40_000).events_removed == len(first)
    assert log.verify_chain().problems == []
    assert log.apply_retention(now_ms=T0 + 60_000).events_removed == len(second)
    report = log.verify_chain()
    assert report.problems == []
    assert report.first_bad_position == 0
    assert [e.id for e in log.read_from(1)][-1] == kept[0].id
