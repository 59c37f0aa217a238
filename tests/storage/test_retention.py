"""Retention: per-account maximum age on recorded_at, legal holds, compaction.

Expired events disappear from every read path; whole expired segments are
deleted, mixed ones rewritten with their survivors at the same positions;
positions are never handed out twice; policies are durable state, not index
state.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import (
    Event,
    EventFilter,
    EventLog,
    Options,
    Outcome,
    RetentionPolicy,
    RetentionReport,
    new_event_id,
)
from leadtrail_storage_support import Clock, canon_event  # loaded by conftest.py

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def assert_same_events(actual: list[Event], expected: list[Event]) -> None:
    assert [canon_event(e) for e in actual] == [canon_event(e) for e in expected]


_rng = random.Random(42)


def event(account: str = "default", **changes: Any) -> Event:
    n = _rng.randrange(10**9)
    base = Event(
        type=_rng.choice(("source.submitted", "recipient.delivered", "feedback.received")),
        lead_id=f"lead-{n % 4}",
        flow_id=f"flow-{n % 2}",
        id=new_event_id(),
        timestamp_ms=T0 + n % 1000,
        entity_id=f"buyer-{n % 3}",
        outcome=Outcome.SUCCESS,
        price="25.00",
        details={"rule_set": "default", "n": n},
        lead={
            "email": f"user{n}@example.com",
            "phone": f"+1555{n:07d}",
            "first_name": _rng.choice(("Ana", "Bo", "Chen", "Dara")),
            "appended.phone_check.carrier": "Verizon",
            "score": n % 100,
        },
        account_id=account,
    )
    return replace(base, **changes)


def append(log: EventLog, events: list[Event], batch: int = 5) -> list[Event]:
    """Append in batches; return the events as stored."""
    stored = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        results = log.append(chunk)
        stored += [
            replace(e, position=r.position, recorded_at_ms=r.recorded_at_ms)
            for e, r in zip(chunk, results, strict=True)
        ]
    return stored


def log_files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data / "log").glob("*.log"))}


def ordered(events: list[Event]) -> list[Event]:
    """Timeline and scan order: (timestamp, position)."""
    return sorted(events, key=lambda e: (e.timestamp_ms or 0, e.position))


def assert_store_holds_exactly(log: EventLog, survivors: list[Event], gone: list[Event]) -> None:
    """Every read path shows the survivors and nothing of the removed events."""
    survivors = sorted(survivors, key=lambda e: e.position)
    assert_same_events(list(log.read_from(1)), survivors)
    for e in gone:
        assert log.get(e.id, account_id=e.account_id) is None
    for e in survivors:
        assert_same_events([log.get(e.id, account_id=e.account_id)], [e])
    accounts = {e.account_id for e in survivors + gone}
    for account in accounts:
        mine = [e for e in survivors if e.account_id == account]

        for lead in {e.lead_id for e in survivors + gone}:
            expected = ordered([e for e in mine if e.lead_id == lead])
            assert_same_events(log.timeline(lead, account_id=account), expected)
        for flt, wanted in (
            (EventFilter(account_id=account), lambda e: True),
            (
                EventFilter(account_id=account, types=("recipient.*",)),
                lambda e: e.type == "recipient.delivered",
            ),
            (EventFilter(account_id=account, flow_id="flow-1"), lambda e: e.flow_id == "flow-1"),
            (
                EventFilter(account_id=account, entity_id="buyer-2"),
                lambda e: e.entity_id == "buyer-2",
            ),
            (EventFilter(account_id=account, lead_id="lead-3"), lambda e: e.lead_id == "lead-3"),
            (
                EventFilter(account_id=account, start_ms=T0 + 500),
                lambda e: e.timestamp_ms >= T0 + 500,
            ),
        ):
            expected = ordered([e for e in mine if wanted(e)])
            assert_same_events(log.scan(flt, limit=1000).events, expected)
    report = log.verify()
    assert report.problems == []
    assert report.records_checked == len(survivors)
    assert log.stats().event_count == len(survivors)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def options(clock: Clock) -> Options:
    return Options(segment_bytes=4096, clock_ms=clock)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def log(data: Path, options: Options) -> Iterator[EventLog]:
    with EventLog.open(data, options) as store:
        yield store


def test_events_older_than_max_age_are_removed_and_younger_ones_kept(log: EventLog, clock: Clock) -> None:
    old_acme = append(log, [event("acme") for _ in range(10)])
    old_default = append(log, [event() for _ in range(10)])
    clock.now = T0 + 20 * DAY_MS
    young_acme = append(log, [event("acme") for _ in range(10)])
    last = log.last_position

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=30))
    report = log.apply_retention(now_ms=T0 + 30 * DAY_MS + 1)

    assert report.events_removed == 10
    assert log.last_position == last
    assert_store_holds_exactly(log, old_default + young_acme, old_acme)


def test_age_is_measured_on_recorded_at_not_on_timestamp(log: EventLog, clock: Clock) -> None:
    recorded_long_ago = append(log, [event("acme", timestamp_ms=T0 + 31 * DAY_MS)])
    clock.now = T0 + 31 * DAY_MS
    recorded_now = append(log, [event("acme", timestamp_ms=0)])

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=30))
    report = log.apply_retention(now_ms=T0 + 31 * DAY_MS)

    assert report.events_removed == 1
    assert_store_holds_exactly(log, recorded_now, recorded_long_ago)


def test_only_events_older_than_the_limit_expire(log: EventLog, clock: Clock) -> None:
    just_over = append(log, [event("acme")])
    clock.now += 2
    just_under = append(log, [event("acme")])

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=30))
    report = log.apply_retention(now_ms=T0 + 30 * DAY_MS + 1)

    assert report.events_removed == 1
    assert_store_holds_exactly(log, just_under, just_over)


def test_retention_uses_the_store_clock_when_no_time_is_given(log: EventLog, clock: Clock) -> None:
    old = append(log, [event("acme") for _ in range(3)])
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    assert log.apply_retention().events_removed == 0
    clock.now += 2 * DAY_MS
    assert log.apply_retention().events_removed == 3
    assert_store_holds_exactly(log, [], old)


def test_policy_applies_to_its_account_only(log: EventLog) -> None:
    # "acme" is a prefix of "acme2": account-prefixed keys must not mix.
    acme = append(log, [event("acme") for _ in range(5)])
    others = append(log, [event("acme2") for _ in range(5)] + [event() for _ in range(5)])

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    report = log.apply_retention(now_ms=T0 + 400 * DAY_MS)

    assert report.events_removed == 5
    assert_store_holds_exactly(log, others, acme)


def test_legal_hold_keeps_everything_until_it_is_lifted(log: EventLog) -> None:
    held = append(log, [event("acme") for _ in range(7)])

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1, legal_hold=True))
    report = log.apply_retention(now_ms=T0 + 400 * DAY_MS)
    assert report == RetentionReport(0, 0, 0, 0)
    assert_store_holds_exactly(log, held, [])

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1, legal_hold=False))
    assert log.apply_retention(now_ms=T0 + 400 * DAY_MS).events_removed == 7
    assert_store_holds_exactly(log, [], held)


def test_max_age_zero_keeps_events_forever(log: EventLog) -> None:
    kept = append(log, [event("acme") for _ in range(4)])
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=0))
    assert log.apply_retention(now_ms=T0 + 10_000 * DAY_MS) == RetentionReport(0, 0, 0, 0)
    assert_store_holds_exactly(log, kept, [])


def test_no_policy_removes_nothing_and_a_second_run_is_a_no_op(log: EventLog) -> None:
    acme = append(log, [event("acme") for _ in range(40)])
    assert log.apply_retention(now_ms=T0 + 10_000 * DAY_MS) == RetentionReport(0, 0, 0, 0)
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    assert log.apply_retention(now_ms=T0 + 2 * DAY_MS).events_removed == 40
    assert log.apply_retention(now_ms=T0 + 3 * DAY_MS) == RetentionReport(0, 0, 0, 0)
    assert_store_holds_exactly(log, [], acme)


def test_expired_segments_are_deleted_and_mixed_ones_rewritten(
    clock: Clock, data: Path, options: Options
) -> None:
    log = EventLog.open(data, options)
    expired = append(log, [event("acme") for _ in range(60)])  # whole segments of acme
    mixed = append(log, [event(account) for _ in range(15) for account in ("acme", "default")], 2)
    expired += [e for e in mixed if e.account_id == "acme"]
    kept = [e for e in mixed if e.account_id == "default"]
    clock.now = T0 + 20 * DAY_MS
    kept += append(log, [event(a) for _ in range(40) for a in ("acme", "default")])

    before = log_files(data)
    firsts = sorted(int(name[:20]) for name in before)
    lasts = [*(f - 1 for f in firsts[1:]), log.last_position]
    gone = {e.position for e in expired}
    spans = {f: set(range(f, last + 1)) for f, last in zip(firsts, lasts, strict=True)}
    deleted = [f for f in firsts if spans[f] <= gone]
    rewritten = [f for f in firsts if f not in deleted and spans[f] & gone]
    untouched = [f for f in firsts if f not in deleted and f not in rewritten]
    assert len(deleted) >= 2 and rewritten and untouched, "the data covers every case"
    assert firsts[-1] in untouched, "the active segment holds no expired event"

    log.set_retention_policy(RetentionPolicy("acme", max_age_days=10))
    report = log.apply_retention(now_ms=T0 + 20 * DAY_MS)

    after = log_files(data)
    assert report.events_removed == len(expired)
    assert report.segments_deleted == len(deleted)
    assert report.segments_rewritten == len(rewritten)
    assert report.bytes_freed == sum(map(len, before.values())) - sum(map(len, after.values()))
    for first in deleted:
        assert f"{first:020d}.log" not in after
    for first in untouched:
        assert after[f"{first:020d}.log"] == before[f"{first:020d}.log"]
    assert len(after) == len(untouched) + len(rewritten)
    assert log.stats().segment_count == len(after)
    assert_store_holds_exactly(log, kept, expired)

    log.close()
    with EventLog.open(data, options) as reopened:
        assert_store_holds_exactly(reopened, kept, expired)
    shutil.rmtree(data / "index")
    with EventLog.open(data, options) as rebuilt:
        assert_store_holds_exactly(rebuilt, kept, expired)
        assert rebuilt.reindex() == len(kept)
        assert_store_holds_exactly(rebuilt, kept, expired)


def test_appends_continue_after_compaction_with_the_next_position(log: EventLog) -> None:
    expired = append(log, [event("acme") for _ in range(30)])
    kept = append(log, [event() for _ in range(30)])
    last = log.last_position
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    log.apply_retention(now_ms=T0 + 2 * DAY_MS)

    fresh = event()
    again = log.append([kept[3], fresh])
    assert [(r.position, r.duplicate) for r in again] == [
        (kept[3].position, True),
        (last + 1, False),
    ]
    fresh = replace(fresh, position=last + 1, recorded_at_ms=again[1].recorded_at_ms)
    assert_store_holds_exactly(log, [*kept, fresh], expired)


def test_store_reopens_after_retention_removed_its_newest_events(data: Path, options: Options) -> None:
    log = EventLog.open(data, options)
    kept = append(log, [event() for _ in range(10)])
    expired = append(log, [event("acme") for _ in range(3)])
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    assert log.apply_retention(now_ms=T0 + 2 * DAY_MS).events_removed == 3
    log.close()

    with EventLog.open(data, options) as reopened:
        assert reopened.last_position == 13
        assert_store_holds_exactly(reopened, kept, expired)


def test_positions_are_never_reused_after_retention_removes_the_log_tail(
    data: Path, options: Options
) -> None:
    log = EventLog.open(data, options)
    kept = append(log, [event() for _ in range(10)])
    expired = append(log, [event("acme") for _ in range(60)])  # the tail: whole segments
    last = log.last_position
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    assert log.apply_retention(now_ms=T0 + 2 * DAY_MS).events_removed == 60
    assert log.last_position == last
    log.close()

    shutil.rmtree(data / "index")
    with EventLog.open(data, options) as reopened:
        assert reopened.last_position == last
        assert_store_holds_exactly(reopened, kept, expired)
        [result] = reopened.append([event()])
        assert result.position == last + 1
    with EventLog.open(data, options) as reopened:
        assert reopened.last_position == last + 1


def test_recorded_at_never_goes_backwards_after_retention_removes_the_newest_events(
    data: Path, options: Options, clock: Clock
) -> None:
    # Clients were told the removed events' recorded_at (and subscribers saw
    # them): the next position must not be recorded earlier, even after a
    # restart with a clock that is behind.
    with EventLog.open(data, options) as log:
        append(log, [event() for _ in range(10)])
        clock.now = T0 + 5 * DAY_MS
        newest = append(log, [event("acme") for _ in range(3)])
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
        assert log.apply_retention(now_ms=T0 + 7 * DAY_MS).events_removed == 3
    clock.now = T0 + 1 * DAY_MS
    with EventLog.open(data, options) as log:
        [result] = log.append([event()])
    assert result.position == newest[-1].position + 1
    assert result.recorded_at_ms >= newest[-1].recorded_at_ms


def test_policies_survive_reopen_and_loss_of_the_index(data: Path, options: Options, clock: Clock) -> None:
    with EventLog.open(data, options) as log:
        acme = append(log, [event("acme") for _ in range(6)])
        held = append(log, [event("globex") for _ in range(6)])
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=5))
        log.set_retention_policy(RetentionPolicy("globex", max_age_days=1, legal_hold=True))
    assert (data / "retention.json").exists()

    shutil.rmtree(data / "index")
    with EventLog.open(data, options) as log:
        report = log.apply_retention(now_ms=T0 + 6 * DAY_MS)
        assert report.events_removed == 6
        assert_store_holds_exactly(log, held, acme)


def test_audit_records_outlive_every_retention_policy(clock: Clock, data: Path, options: Options) -> None:
    with EventLog.open(data, options) as log:
        mixed = [event("acme", type="audit.read") if i % 10 == 0 else event("acme") for i in range(80)]
        stored = append(log, mixed)
        audit = [e for e in stored if e.type.startswith("audit.")]
        expired = [e for e in stored if not e.type.startswith("audit.")]
        clock.now = T0 + 20 * DAY_MS
        young = append(log, [event("acme") for _ in range(5)])

        log.set_retention_policy(RetentionPolicy("acme", max_age_days=10))
        report = log.apply_retention(now_ms=T0 + 20 * DAY_MS)

        assert report.events_removed == len(expired)
        assert report.segments_rewritten >= 1  # segments of expired events still hold audit records
        assert_store_holds_exactly(log, audit + young, expired)
    with EventLog.open(data, options) as reopened:
        assert_store_holds_exactly(reopened, audit + young, expired)


def test_retention_of_one_account_leaves_the_others_policies_for_later(log: EventLog, clock: Clock) -> None:
    old_acme = append(log, [event("acme") for _ in range(5)])
    old_default = append(log, [event() for _ in range(5)])
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    log.set_retention_policy(RetentionPolicy("default", max_age_days=1))

    report = log.apply_retention(now_ms=T0 + 10 * DAY_MS, account_id="acme")

    assert report.events_removed == len(old_acme)
    assert_store_holds_exactly(log, old_default, old_acme)
