"""Reading events back: get, timeline, scan with filters and cursors, read_from.

Also the append-side promises that queries make visible: idempotent ids with
no time window, accounts that never see each other, ids the store assigns,
receive time for missing timestamps, and a commit time that never goes back.
"""

from __future__ import annotations

import dataclasses
import random
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import (
    AppendResult,
    Event,
    EventFilter,
    EventLog,
    InvalidCursorError,
    Options,
    Outcome,
    new_event_id,
)
from leadtrail_storage_support import Clock, canon_event  # loaded by conftest.py

ID_PATTERN = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")
DAY_MS = 86_400_000

TYPES = (
    "source.submitted",
    "source.submitted_x",
    "recipient.delivered",
    "recipient.ping.sent",
    "recipient_ping.sent",
    "feedback.received",
)

LEADS = ("L1", "L10", "L2")
FLOWS = ("f1", "f10")
ENTITIES = ("", "e1", "e10")
TIMES = (1_000, 2_000, 2_000, 3_000, 5_000)


def assert_same_events(actual: list[Event], expected: list[Event]) -> None:
    assert [canon_event(e) for e in actual] == [canon_event(e) for e in expected]


def by_time(event: Event) -> tuple[int, int]:
    assert event.timestamp_ms is not None
    return (event.timestamp_ms, event.position)


def random_event(rng: random.Random, account: str = "default", **changes: Any) -> Event:
    event = Event(
        type=rng.choice(TYPES),
        lead_id=rng.choice(LEADS),
        flow_id=rng.choice(FLOWS),
        id=new_event_id(),
        timestamp_ms=rng.choice(TIMES) + rng.choice((0, 0, 1)),
        entity_id=rng.choice(ENTITIES),
        outcome=rng.choice(list(Outcome)),
        reason=rng.choice(("", "Daily cap reached")),
        duration_ms=rng.randrange(1000),
        integration=rng.choice(("", "buyer_api")),
        response_code=rng.choice((0, 200, 503)),
        price=rng.choice(("", "25.00", "-3.5")),
        details={"rules_evaluated": rng.randrange(10)},
        lead={"email": f"{rng.randrange(10**6)}@example.com", "email.valid": rng.random() < 0.5},
        account_id=account,
    )
    return dataclasses.replace(event, **changes)


def append_and_model(log: EventLog, batch: list[Event]) -> list[Event]:
    """Append events that carry ids and timestamps; return them as stored."""
    results = log.append(batch)
    assert not any(r.duplicate for r in results)
    return [
        dataclasses.replace(e, position=r.position, recorded_at_ms=r.recorded_at_ms)
        for e, r in zip(batch, results, strict=True)
    ]


def scan_all(
    log: EventLog,
    flt: EventFilter,
    *,
    limit: int = 1000,
    descending: bool = False,
    include_lead: bool = True,
    between_pages: Callable[[], None] = lambda: None,
) -> list[Event]:
    page = log.scan(flt, limit=limit, descending=descending, include_lead=include_lead)
    events = list(page.events)
    pages = 1
    while page.cursor is not None:
        assert len(page.events) <= limit
        assert pages < 10_000, "paging does not terminate"
        between_pages()
        page = log.scan(flt, after=page.cursor, limit=limit, descending=descending, include_lead=include_lead)
        events.extend(page.events)
        pages += 1
    return events


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> Iterator[EventLog]:
    with EventLog.open(tmp_path / "data", Options(clock_ms=clock)) as store:
        yield store


@pytest.fixture
def stored(log: EventLog) -> list[Event]:
    """104 events of the default account and 48 look-alikes in account acme."""
    rng = random.Random(7)
    events: list[Event] = []
    for _ in range(4):
        batch = [random_event(rng) for _ in range(24)]
        batch += [random_event(rng, account="acme") for _ in range(12)]
        rng.shuffle(batch)
        events += append_and_model(log, batch)
    # One event that every part of the "all parts combined" case picks, and
    # near misses that each fail exactly one part of it.
    hit = random_event(
        rng,
        type="recipient.ping.sent",
        lead_id="L1",
        flow_id="f10",
        entity_id="e10",
        outcome=Outcome.SKIP,
        timestamp_ms=1_001,
    )
    misses = [
        {"type": "recipient_ping.sent"},
        {"lead_id": "L10"},
        {"flow_id": "f1"},
        {"entity_id": "e1"},
        {"outcome": Outcome.FAILURE},
        {"timestamp_ms": 1_000},
        {"timestamp_ms": 5_000},
    ]
    batch = [hit] + [dataclasses.replace(hit, id=new_event_id(), **miss) for miss in misses]
    events += append_and_model(log, batch)
    return events


# -- timeline ---------------------------------------------------------------


def test_timeline_is_in_timestamp_order_with_ties_broken_by_position(log: EventLog, clock: Clock) -> None:
    rng = random.Random(3)
    mine = []
    for timestamps in ((30, 10), (20, 10, 30), (10,)):
        batch = [random_event(rng, lead_id="T", timestamp_ms=ts) for ts in timestamps]
        noise = [random_event(rng, lead_id="T0"), random_event(rng, lead_id="T", account="acme")]
        mine += append_and_model(log, batch)
        append_and_model(log, noise)
    expected = sorted(mine, key=by_time)
    assert [e.timestamp_ms for e in expected] == [10, 10, 10, 20, 30, 30]
    assert_same_events(log.timeline("T"), expected)


def test_timeline_of_an_unknown_lead_is_empty(stored: list[Event], log: EventLog) -> None:
    assert log.timeline("L") == []
    assert log.timeline("L100") == []


def test_lead_sizes_count_each_leads_events_of_its_account_in_one_call(
    stored: list[Event], log: EventLog
) -> None:
    counts: dict[tuple[str, str], int] = {}
    for e in stored:
        counts[(e.lead_id, e.account_id)] = counts.get((e.lead_id, e.account_id), 0) + 1
    asked = [*sorted(counts), ("L", "default"), ("L1", "nobody"), ("L1", "acme")]
    sizes = log.lead_sizes(asked)
    # At least the lead's own events (a lead sharing its key's hash would add to them) and the
    # same answer, lead by lead, as lead_size.
    assert sizes == [log.lead_size(lead, account) for lead, account in asked]
    assert all(size >= counts.get(pair, 0) for pair, size in zip(asked, sizes, strict=True))
    assert sizes[: len(counts)] == [counts[pair] for pair in sorted(counts)]
    assert sizes[len(counts) :] == [0, 0, counts.get(("L1", "acme"), 0)]
    assert log.lead_sizes([]) == []


# -- scan filters -------------------------------------------------------------

FILTER_CASES: list[tuple[str, EventFilter, Callable[[Event], bool]]] = [
    ("empty filter", EventFilter(), lambda e: True),
    (
        "exact type",
        EventFilter(types=("source.submitted",)),
        lambda e: e.type == "source.submitted",
    ),
    (
        "prefix pattern",
        EventFilter(types=("recipient.*",)),
        lambda e: e.type in ("recipient.delivered", "recipient.ping.sent"),
    ),
    (
        "deeper prefix pattern",
        EventFilter(types=("recipient.ping.*",)),
        lambda e: e.type == "recipient.ping.sent",
    ),
    (
        "several types",
        EventFilter(types=("feedback.received", "source.*")),
        lambda e: e.type in ("feedback.received", "source.submitted", "source.submitted_x"),
    ),
    (
        "overlapping types and repeated outcomes",
        EventFilter(
            types=("recipient.*", "recipient.delivered", "recipient.*"),
            outcomes=(Outcome.SUCCESS, Outcome.SUCCESS, Outcome.ERROR),
        ),
        lambda e: (
            e.type in ("recipient.delivered", "recipient.ping.sent")
            and e.outcome in (Outcome.SUCCESS, Outcome.ERROR)
        ),
    ),
    ("pattern matching nothing", EventFilter(types=("nothing.*",)), lambda e: False),
    ("lead", EventFilter(lead_id="L1"), lambda e: e.lead_id == "L1"),
    ("flow", EventFilter(flow_id="f1"), lambda e: e.flow_id == "f1"),
    ("entity", EventFilter(entity_id="e1"), lambda e: e.entity_id == "e1"),
    (
        "outcomes",
        EventFilter(outcomes=(Outcome.FAILURE, Outcome.ERROR)),
        lambda e: e.outcome in (Outcome.FAILURE, Outcome.ERROR),
    ),
    ("start inclusive", EventFilter(start_ms=2_000), lambda e: e.timestamp_ms >= 2_000),
    ("end exclusive", EventFilter(end_ms=2_000), lambda e: e.timestamp_ms < 2_000),
    (
        "time range",
        EventFilter(start_ms=2_000, end_ms=3_001),
        lambda e: 2_000 <= e.timestamp_ms < 3_001,
    ),
    ("empty time range", EventFilter(start_ms=2_000, end_ms=2_000), lambda e: False),
    (
        "all parts combined",
        EventFilter(
            types=("recipient.*", "source.submitted"),
            lead_id="L1",
            flow_id="f10",
            entity_id="e10",
            outcomes=(Outcome.SUCCESS, Outcome.SKIP, Outcome.UNSPECIFIED),
            start_ms=1_001,
            end_ms=5_000,
        ),
        lambda e: (
            e.type in ("recipient.delivered", "recipient.ping.sent", "source.submitted")
            and e.lead_id == "L1"
            and e.flow_id == "f10"
            and e.entity_id == "e10"
            and e.outcome in (Outcome.SUCCESS, Outcome.SKIP, Outcome.UNSPECIFIED)
            and 1_001 <= e.timestamp_ms < 5_000
        ),
    ),
    (
        "type and time",
        EventFilter(types=("recipient.*",), start_ms=2_000, end_ms=3_000),
        lambda e: e.type.startswith("recipient.") and 2_000 <= e.timestamp_ms < 3_000,
    ),
    (
        "lead and outcome",
        EventFilter(lead_id="L10", outcomes=(Outcome.SUCCESS,)),
        lambda e: e.lead_id == "L10" and e.outcome == Outcome.SUCCESS,
    ),
]


@pytest.mark.parametrize(("flt", "wanted"), [pytest.param(f, w, id=name) for name, f, w in FILTER_CASES])
@pytest.mark.parametrize("account", ["default", "acme"])
def test_scan_returns_exactly_the_matching_events_of_the_account(
    stored: list[Event],
    log: EventLog,
    flt: EventFilter,
    wanted: Callable[[Event], bool],
    account: str,
) -> None:
    flt = dataclasses.replace(flt, account_id=account)
    expected = sorted((e for e in stored if e.account_id == account and wanted(e)), key=by_time)
    assert_same_events(scan_all(log, flt), expected)
    assert_same_events(scan_all(log, flt, limit=5), expected)
    assert_same_events(scan_all(log, flt, limit=3, descending=True), expected[::-1])


def test_the_combined_filter_case_is_not_vacuous(stored: list[Event]) -> None:
    # Guard for the table above: the dataset must give filters something to pick.
    for name, _, wanted in FILTER_CASES:
        picked = [e for e in stored if e.account_id == "default" and wanted(e)]
        if "nothing" in name or "empty time range" in name or name == "empty filter":
            continue
        assert 0 < len(picked) < 104, name


def test_scan_without_lead_returns_everything_but_the_snapshot(stored: list[Event], log: EventLog) -> None:
    expected = sorted((e for e in stored if e.account_id == "default"), key=by_time)
    lean = scan_all(log, EventFilter(), limit=10, include_lead=False)
    assert_same_events(lean, [dataclasses.replace(e, lead={}) for e in expected])
    assert any(e.details for e in lean), "details are not the snapshot"


def test_scan_of_an_account_without_events_is_empty(stored: list[Event], log: EventLog) -> None:
    page = log.scan(EventFilter(account_id="acme2"))
    assert (page.events, page.cursor) == ([], None)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize(
    ("start_ms", "end_ms", "everything"),
    [
        (-5, None, True),  # before 1970: the same as no start
        (None, 2**60, True),  # past any timestamp an event may have
        (-(2**62), 2**62, True),
        (2**50, None, False),  # after every event
        (None, -5, False),
    ],
)
def test_time_bounds_beyond_what_an_event_can_hold_mean_the_ends_of_time(
    stored: list[Event],
    log: EventLog,
    start_ms: int | None,
    end_ms: int | None,
    everything: bool,
    descending: bool,
) -> None:
    own = [e for e in stored if e.account_id == "default"]
    found = scan_all(log, EventFilter(start_ms=start_ms, end_ms=end_ms), limit=17, descending=descending)
    expected = sorted(own, key=by_time, reverse=descending) if everything else []
    assert [e.position for e in found] == [e.position for e in expected]


# -- cursors ----------------------------------------------------------------


def test_paging_never_skips_or_repeats_while_appends_continue(stored: list[Event], log: EventLog) -> None:
    appended = 0
    progress = threading.Condition()
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_appending() -> None:
        nonlocal appended
        rng = random.Random(11)
        while not stop.is_set():
            try:
                log.append([random_event(rng) for _ in range(5)])
            except BaseException as e:  # reported by the main thread
                failures.append(e)
                return
            with progress:
                appended += 1
                progress.notify_all()

    def let_appends_happen() -> None:
        with progress:
            target = appended + 1
            assert progress.wait_for(lambda: appended >= target or failures, timeout=10)

    queries: list[tuple[EventFilter, bool, Callable[[Event], bool]]] = [
        (EventFilter(), False, lambda e: e.account_id == "default"),
        (EventFilter(), True, lambda e: e.account_id == "default"),
        (
            EventFilter(types=("recipient.*",)),
            False,
            lambda e: e.account_id == "default" and e.type.startswith("recipient."),
        ),
        (
            EventFilter(lead_id="L1", start_ms=2_000),
            True,
            lambda e: e.account_id == "default" and e.lead_id == "L1" and e.timestamp_ms >= 2_000,
        ),
    ]
    appender = threading.Thread(target=keep_appending)
    appender.start()
    try:
        for flt, descending, wanted in queries:
            let_appends_happen()
            first_possible = log.last_position
            page = log.scan(flt, limit=7, descending=descending)
            last_possible = log.last_position
            seen = list(page.events)
            while page.cursor is not None:
                let_appends_happen()
                page = log.scan(flt, after=page.cursor, limit=7, descending=descending)
                seen.extend(page.events)
            assert log.last_position > last_possible, "appends ran while paging"

            positions = [e.position for e in seen]
            assert len(set(positions)) == len(positions), "an event was repeated"
            keys = [by_time(e) for e in seen]
            assert keys == sorted(keys, reverse=descending)
            everything = [e for e in log.read_from(1) if e.position <= last_possible]
            snapshots = {
                pinned: {e.position for e in everything if e.position <= pinned and wanted(e)}
                for pinned in range(first_possible, last_possible + 1)
            }
            if set(positions) not in snapshots.values():
                expected = snapshots[first_possible]
                pytest.fail(
                    f"not a snapshot of the store: missing {sorted(expected - set(positions))}, "
                    f"extra {sorted(set(positions) - snapshots[last_possible])}"
                )
    finally:
        stop.set()
        appender.join()
    assert not failures


def test_cursor_pins_the_snapshot_of_its_first_page(stored: list[Event], log: EventLog) -> None:
    rng = random.Random(5)
    expected = sorted((e for e in stored if e.account_id == "default"), key=by_time)
    page = log.scan(EventFilter(), limit=10)
    seen = list(page.events)
    # Land before, inside and after the part already read.
    for ts in (0, 2_000, 9_999):
        append_and_model(log, [random_event(rng, timestamp_ms=ts)])
    while page.cursor is not None:
        page = log.scan(EventFilter(), after=page.cursor, limit=10)
        seen.extend(page.events)
    assert_same_events(seen, expected)


@pytest.mark.parametrize("garbage", ["not-a-cursor", "AAAA", "%%%", "\x00\xff", "eyJ9"])
def test_garbage_cursor_is_an_invalid_cursor_error(stored: list[Event], log: EventLog, garbage: str) -> None:
    with pytest.raises(InvalidCursorError):
        log.scan(EventFilter(), after=garbage, limit=5)


def test_cursor_of_another_accounts_query_is_rejected(stored: list[Event], log: EventLog) -> None:
    page = log.scan(EventFilter(account_id="acme"), limit=5)
    assert page.cursor is not None
    with pytest.raises(InvalidCursorError):
        log.scan(EventFilter(account_id="default"), after=page.cursor, limit=5)


# -- read_from ----------------------------------------------------------------


def test_read_from_returns_every_account_in_position_order(stored: list[Event], log: EventLog) -> None:
    assert_same_events(list(log.read_from()), stored)
    assert_same_events(list(log.read_from(1)), stored)
    assert_same_events(list(log.read_from(50)), stored[49:])
    assert_same_events(list(log.read_from(50, limit=7)), stored[49:56])
    assert_same_events(list(log.read_from(len(stored))), stored[-1:])
    assert list(log.read_from(len(stored) + 1)) == []
    assert list(log.read_from(10**12)) == []


def test_read_from_an_empty_store_is_empty(log: EventLog) -> None:
    assert list(log.read_from(1)) == []
    assert log.last_position == 0


# -- accounts -------------------------------------------------------------------


def test_accounts_never_see_each_others_events(log: EventLog) -> None:
    rng = random.Random(9)
    shared_id, acme_only = new_event_id(), new_event_id()
    [mine] = append_and_model(log, [random_event(rng, id=shared_id, lead_id="L1", flow_id="f1")])
    theirs = append_and_model(
        log,
        [
            random_event(rng, account="acme", id=shared_id, lead_id="L1", flow_id="f1"),
            random_event(rng, account="acme", id=acme_only, lead_id="L1", flow_id="f1"),
        ],
    )
    assert mine.position != theirs[0].position, "the same id in another account is separate"
    assert_same_events([log.get(shared_id)], [mine])
    assert_same_events([log.get(shared_id, account_id="acme")], [theirs[0]])
    assert log.get(acme_only) is None
    assert log.get(acme_only, account_id="acme2") is None
    assert_same_events(log.timeline("L1"), [mine])
    assert_same_events(log.timeline("L1", account_id="acme"), sorted(theirs, key=by_time))
    for part in ({}, {"lead_id": "L1"}, {"flow_id": "f1"}, {"types": (mine.type,)}):
        assert_same_events(log.scan(EventFilter(**part)).events, [mine])
        assert log.scan(EventFilter(account_id="acme2", **part)).events == []
    assert [e.position for e in log.read_from(1)] == [1, 2, 3], "read_from is global"


# -- idempotency ------------------------------------------------------------------


def test_duplicate_id_returns_the_original_position_and_stores_nothing(log: EventLog, clock: Clock) -> None:
    rng = random.Random(1)
    original = random_event(rng)
    [first] = log.append([original])
    clock.now += 5
    again = log.append([dataclasses.replace(random_event(rng), id=original.id), random_event(rng)])
    assert (again[0].id, again[0].position, again[0].duplicate) == (original.id, 1, True)
    assert (again[1].position, again[1].duplicate) == (2, False)
    assert log.last_position == 2
    assert_same_events(
        [log.get(original.id)],
        [dataclasses.replace(original, position=1, recorded_at_ms=first.recorded_at_ms)],
    )


def test_same_id_twice_in_one_batch_is_stored_once(log: EventLog) -> None:
    rng = random.Random(2)
    event = random_event(rng)
    results = log.append([event, random_event(rng), dataclasses.replace(event, reason="again")])
    assert [(r.position, r.duplicate) for r in results] == [(1, False), (2, False), (1, True)]
    assert results[2].id == event.id
    assert log.last_position == 2
    stored = log.get(event.id)
    assert stored is not None
    assert stored.reason == event.reason


def test_concurrent_appends_of_one_id_store_it_once(log: EventLog) -> None:
    rng = random.Random(12)
    contested = random_event(rng)
    barrier = threading.Barrier(8)
    results: list[list[AppendResult]] = []

    def race() -> None:
        barrier.wait()
        results.append(log.append([random_event(rng), contested]))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = [batch[1] for batch in results]
    assert len(outcomes) == 8
    assert sum(not r.duplicate for r in outcomes) == 1
    assert len({r.position for r in outcomes}) == 1
    assert log.last_position == 9
    assert [e.id for e in log.read_from(1)].count(contested.id) == 1


def test_duplicates_are_recognised_forever_across_reopen_and_rebuilt_index(
    tmp_path: Path, clock: Clock
) -> None:
    rng = random.Random(4)
    options = Options(clock_ms=clock, segment_bytes=4096)
    events = [random_event(rng) for _ in range(60)]
    with EventLog.open(tmp_path / "data", options) as log:
        positions = [r.position for r in log.append(events)]

    def assert_all_duplicates(log: EventLog) -> None:
        results = log.append(events[::7])
        assert [(r.position, r.duplicate) for r in results] == [(p, True) for p in positions[::7]]
        assert log.last_position == 60

    clock.now += 400 * DAY_MS
    with EventLog.open(tmp_path / "data", options) as log:
        assert_all_duplicates(log)
        assert log.reindex() == 60
        assert_all_duplicates(log)
    shutil.rmtree(tmp_path / "data" / "index")
    with EventLog.open(tmp_path / "data", options) as log:
        assert_all_duplicates(log)


# -- what the store fills in ---------------------------------------------------


def test_recorded_at_never_goes_backwards_when_the_clock_does(tmp_path: Path, clock: Clock) -> None:
    rng = random.Random(6)
    options = Options(clock_ms=clock)
    recorded: list[int] = []
    with EventLog.open(tmp_path / "data", options) as log:
        for now in (10_000, 50_000, 30_000, 20_000, 60_000, 55_000):
            clock.now = now
            results = log.append([random_event(rng) for _ in range(3)])
            assert all(r.recorded_at_ms >= now for r in results)
            recorded += [r.recorded_at_ms for r in results]
    assert recorded == sorted(recorded)
    clock.now = 1_000  # the wall clock jumped back while the store was closed
    with EventLog.open(tmp_path / "data", options) as log:
        [result] = log.append([random_event(rng)])
        assert result.recorded_at_ms >= recorded[-1]
        stored = [e.recorded_at_ms for e in log.read_from(1)]
    assert stored == [*recorded, result.recorded_at_ms]


def test_assigned_ids_are_ulids_and_unique(log: EventLog) -> None:
    rng = random.Random(8)
    ids: list[str] = []
    for _ in range(3):
        results = log.append([random_event(rng, id="") for _ in range(200)])
        ids += [r.id for r in results]
    ids += [new_event_id() for _ in range(1000)]
    assert all(ID_PATTERN.match(i) for i in ids), [i for i in ids if not ID_PATTERN.match(i)]
    assert len(set(ids)) == len(ids)
    assert [e.id for e in log.read_from(1)] == ids[:600]


def test_missing_timestamp_is_filled_with_the_receive_time(log: EventLog, clock: Clock) -> None:
    rng = random.Random(10)
    clock.now = 1_650_000_000_123
    [result] = log.append([random_event(rng, lead_id="T", timestamp_ms=None)])
    stored = log.get(result.id)
    assert stored is not None
    assert stored.timestamp_ms == 1_650_000_000_123
    assert result.recorded_at_ms == 1_650_000_000_123
    earlier = append_and_model(log, [random_event(rng, lead_id="T", timestamp_ms=5)])
    assert [e.position for e in log.timeline("T")] == [earlier[0].position, result.position]
    window = EventFilter(start_ms=1_650_000_000_123, end_ms=1_650_000_000_124)
    assert [e.position for e in log.scan(window).events] == [result.position]


def test_a_scope_hides_events_outside_it_and_pages_stay_whole(stored: list[Event], log: EventLog) -> None:
    entities = sorted({e.entity_id for e in stored if e.account_id == "default"})[:2]
    flows = sorted({e.flow_id for e in stored if e.account_id == "default"})[:1]
    assert entities and flows
    for flt in (
        EventFilter(entity_scope=tuple(entities)),
        EventFilter(flow_scope=tuple(flows)),
        EventFilter(entity_scope=tuple(entities), flow_scope=tuple(flows)),
    ):
        expected = sorted(
            (
                e
                for e in stored
                if e.account_id == "default"
                and (not flt.entity_scope or e.entity_id in flt.entity_scope)
                and (not flt.flow_scope or e.flow_id in flt.flow_scope)
            ),
            key=by_time,
        )
        assert expected
        assert_same_events(scan_all(log, flt, limit=4), expected)
        # A cursor belongs to its scope: it cannot be replayed without it.
        page = log.scan(flt, limit=1)
        if page.cursor is not None:
            with pytest.raises(InvalidCursorError):
                log.scan(EventFilter(), after=page.cursor, limit=1)
