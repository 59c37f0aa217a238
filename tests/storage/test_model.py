"""The storage engine against an in-memory model of its specification.

A hypothesis state machine appends random batches (valid ones, batches with
one invalid event, client ids that repeat within and across batches and
accounts), reads them back through every query path, reopens the store,
deletes its derived index and rebuilds it, all on 4 KiB segments so that the
log rolls constantly. After every step the store must agree with the model
exactly: same events, same fields, same order, nothing more.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from leadtrail.storage import (
    Event,
    EventFilter,
    EventLog,
    Options,
    Outcome,
    ValidationError,
)
from leadtrail_storage_support import canon_event  # loaded by conftest.py

ID_PATTERN = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")
DAY_MS = 86_400_000
START_CLOCK_MS = 1_700_000_000_000
MAX_TIMESTAMP_MS = 253_402_300_799_999

# Values chosen so that one is a byte prefix of another ("acme"/"acme2",
# "L1"/"L10", "source.submitted"/"source.submitted_x"): composite index keys
# that are not delimited properly leak one into the other.
ACCOUNTS = ("default", "acme", "acme2")
LEADS = ("L1", "L10", "L2", "lead-é")
FLOWS = ("f1", "f10", "flow-β")
ENTITIES = ("", "e1", "e10", "vendor:x")
TYPES = (
    "source.submitted",
    "source.submitted_x",
    "source_x.validated",
    "recipient.delivered",
    "recipient.rejected",
    "feedback.received",
)

TYPE_PATTERNS = (*TYPES, "source.*", "source_x.*", "recipient.*", "feedback.*", "nothing.*")
PRICES = ("", "25.00", "-3.5", "0", "0.10", "1000000.000001", "-12")
TIMESTAMPS = (0, 1, 1_000, 2_000, 5_000, MAX_TIMESTAMP_MS)
# Client ids shared by every account so that duplicates happen within a
# batch, across batches and across accounts.
ID_POOL = tuple(f"evt_01HQ{i:022d}" for i in range(8))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
snapshot_keys = st.sampled_from(
    ("email", "email.valid", "phone", "phone.area", "appended.phone_check.carrier", "state")
)
detail_keys = st.sampled_from(("rule_set", "rules_evaluated", "days_to_convert", "note"))

valid_events = st.builds(
    Event,
    type=st.sampled_from(TYPES),
    lead_id=st.sampled_from(LEADS),
    flow_id=st.sampled_from(FLOWS),
    id=st.one_of(st.just(""), st.sampled_from(ID_POOL)),
    timestamp_ms=st.one_of(st.none(), st.sampled_from(TIMESTAMPS), st.integers(0, 10_000)),
    entity_id=st.sampled_from(ENTITIES),
    outcome=st.sampled_from(Outcome),
    reason=st.sampled_from(("", "Daily cap reached", "Duplicate", "timeout")),
    duration_ms=st.one_of(st.just(0), st.integers(0, 2**32 - 1)),
    integration=st.sampled_from(("", "phone_check", "buyer_api")),
    response_code=st.sampled_from((0, 200, 500, 2**32 - 1)),
    price=st.sampled_from(PRICES),
    details=st.dictionaries(detail_keys, json_values, max_size=2),
    lead=st.dictionaries(snapshot_keys, json_values, max_size=4),
    account_id=st.sampled_from(ACCOUNTS),
)

# Each one breaks exactly one rule of the validation list.
INVALID_CHANGES: tuple[tuple[str, Any], ...] = (
    ("type", "Source.Submitted"),
    ("type", "source"),
    ("lead_id", ""),
    ("flow_id", "f" * 129),
    ("entity_id", "e" * 129),
    ("price", "1e5"),
    ("price", "NaN"),
    ("id", "evt_bad"),
    ("timestamp_ms", -1),
    ("duration_ms", 2**32),
    ("account_id", "bad account"),
    ("lead", {"score": math.nan}),
    ("details", {"ratio": math.inf}),
)


# The engine names a field as the wire contract does where that differs.
WIRE_NAMES = {"timestamp_ms": "timestamp"}


def assert_same_events(actual: list[Event], expected: list[Event]) -> None:
    assert [canon_event(e) for e in actual] == [canon_event(e) for e in expected]


def matches(flt: EventFilter, event: Event) -> bool:
    """The EventFilter rules of the spec, written out independently."""
    assert event.timestamp_ms is not None
    if event.account_id != flt.account_id:
        return False
    if flt.types and not any(
        event.type == pattern or (pattern.endswith(".*") and event.type.startswith(pattern[:-1]))
        for pattern in flt.types
    ):
        return False
    if flt.lead_id and event.lead_id != flt.lead_id:
        return False
    if flt.flow_id and event.flow_id != flt.flow_id:
        return False
    if flt.entity_id and event.entity_id != flt.entity_id:
        return False
    if flt.outcomes and event.outcome not in flt.outcomes:
        return False
    if flt.start_ms is not None and event.timestamp_ms < flt.start_ms:
        return False
    return flt.end_ms is None or event.timestamp_ms < flt.end_ms


def by_time(event: Event) -> tuple[int, int]:
    assert event.timestamp_ms is not None
    return (event.timestamp_ms, event.position)


@st.composite
def filters(draw: st.DrawFn) -> EventFilter:
    # Each part is set in about a quarter of the filters, so that most
    # filters still pick something out of a few dozen events.
    def sometimes(strategy: st.SearchStrategy[Any], unset: Any) -> Any:
        return draw(strategy) if draw(st.integers(0, 3)) == 0 else unset

    bounds = st.one_of(
        st.sampled_from(TIMESTAMPS),
        st.integers(0, 10_000),
        st.integers(START_CLOCK_MS, START_CLOCK_MS + 30 * DAY_MS),
    )
    start, end = sometimes(bounds, None), sometimes(bounds, None)
    if start is not None and end is not None and start > end:
        start, end = end, start
    return EventFilter(
        account_id=draw(st.sampled_from(ACCOUNTS)),
        types=tuple(sometimes(st.lists(st.sampled_from(TYPE_PATTERNS), min_size=1, max_size=3), [])),
        lead_id=sometimes(st.sampled_from(LEADS), ""),
        flow_id=sometimes(st.sampled_from(FLOWS), ""),
        entity_id=sometimes(st.sampled_from(tuple(e for e in ENTITIES if e)), ""),
        outcomes=tuple(sometimes(st.lists(st.sampled_from(Outcome), min_size=1, max_size=2), [])),
        start_ms=start,
        end_ms=end,
    )


class EventLogModel(RuleBasedStateMachine):
    def __init__(self, root: Path) -> None:
        super().__init__()
        EventLogModel.cases += 1
        self.dir = root / f"case{EventLogModel.cases}"
        self.now = START_CLOCK_MS
        self.options = Options(segment_bytes=4096, dictionary_training_samples=200, clock_ms=lambda: self.now)
        self.log = EventLog.open(self.dir, self.options)
        self.events: list[Event] = []  # in position order
        self.by_key: dict[tuple[str, str], Event] = {}  # (account, id) -> event
        self.assigned_ids: set[str] = set()

    cases = 0

    # -- appending ---------------------------------------------------------

    def append_valid(self, batch: list[Event]) -> None:
        last = self.log.last_position
        results = self.log.append(batch)
        assert len(results) == len(batch)
        next_position = last + 1
        for event, result in zip(batch, results, strict=True):
            original = self.by_key.get((event.account_id, event.id)) if event.id else None
            if original is not None:
                assert result.duplicate, f"{event.id} was stored before at {original.position}"
                assert (result.id, result.position) == (original.id, original.position)
                continue
            assert not result.duplicate
            assert result.position == next_position, "positions are gapless"
            assert result.recorded_at_ms == self.now
            if event.id:
                assert result.id == event.id
            else:
                assert ID_PATTERN.match(result.id), result.id
                assert result.id not in self.assigned_ids, "assigned ids are unique"
                self.assigned_ids.add(result.id)
            stored = dataclasses.replace(
                event,
                id=result.id,
                timestamp_ms=self.now if event.timestamp_ms is None else event.timestamp_ms,
                position=next_position,
                recorded_at_ms=self.now,
            )
            next_position += 1
            self.events.append(stored)
            self.by_key[(stored.account_id, stored.id)] = stored
        assert self.log.last_position == next_position - 1

    @initialize(batch=st.lists(valid_events, min_size=1, max_size=40))
    def append_first_batch(self, batch: list[Event]) -> None:
        self.append_valid(batch)

    @rule(batch=st.lists(valid_events, min_size=1, max_size=12))
    def append_batch(self, batch: list[Event]) -> None:
        self.append_valid(batch)

    @rule(
        batch=st.lists(valid_events, min_size=1, max_size=5),
        data=st.data(),
        change=st.sampled_from(INVALID_CHANGES),
    )
    def append_batch_with_one_invalid_event(
        self, batch: list[Event], data: st.DataObject, change: tuple[str, Any]
    ) -> None:
        index = data.draw(st.integers(0, len(batch)), label="invalid index")
        field, bad_value = change
        bad = dataclasses.replace(data.draw(valid_events), **{field: bad_value})
        batch = [*batch[:index], bad, *batch[index:]]
        last = self.log.last_position
        with pytest.raises(ValidationError) as caught:
            self.log.append(batch)
        named = WIRE_NAMES.get(field, field)
        assert caught.value.index == index
        assert caught.value.field == named or caught.value.field.startswith(named + ".")
        assert f"events[{index}].{named}" in str(caught.value)
        assert self.log.last_position == last, "nothing of a rejected batch is stored"
        for event in batch:
            if event.id and (event.account_id, event.id) not in self.by_key:
                assert self.log.get(event.id, account_id=event.account_id) is None

    @rule(ms=st.integers(0, 3 * DAY_MS))
    def advance_clock(self, ms: int) -> None:
        self.now += ms

    # -- reading -----------------------------------------------------------

    @precondition(lambda self: self.by_key)
    @rule(data=st.data())
    def get_by_id(self, data: st.DataObject) -> None:
        account, event_id = data.draw(st.sampled_from(sorted(self.by_key)))
        assert_same_events([self.log.get(event_id, account_id=account)], [self.by_key[account, event_id]])
        for other in ACCOUNTS:
            if (other, event_id) not in self.by_key:
                assert self.log.get(event_id, account_id=other) is None

    @rule(event_id=st.sampled_from(ID_POOL), account=st.sampled_from(ACCOUNTS))
    def get_by_pool_id(self, event_id: str, account: str) -> None:
        expected = self.by_key.get((account, event_id))
        actual = self.log.get(event_id, account_id=account)
        if expected is None:
            assert actual is None
        else:
            assert actual is not None
            assert_same_events([actual], [expected])

    @rule(lead=st.sampled_from((*LEADS, "L")), account=st.sampled_from(ACCOUNTS))
    def timeline(self, lead: str, account: str) -> None:
        expected = sorted(
            (e for e in self.events if e.account_id == account and e.lead_id == lead), key=by_time
        )
        assert_same_events(self.log.timeline(lead, account_id=account), expected)

    @rule(
        flt=filters(),
        limit=st.one_of(st.integers(1, 8), st.just(1000)),
        descending=st.booleans(),
        include_lead=st.booleans(),
        appended_between_pages=st.one_of(st.none(), st.lists(valid_events, min_size=1, max_size=4)),
    )
    def scan_in_pages(
        self,
        flt: EventFilter,
        limit: int,
        descending: bool,
        include_lead: bool,
        appended_between_pages: list[Event] | None,
    ) -> None:
        expected = sorted((e for e in self.events if matches(flt, e)), key=by_time, reverse=descending)
        if not include_lead:
            expected = [dataclasses.replace(e, lead={}) for e in expected]
        seen: list[Event] = []
        page = self.log.scan(flt, limit=limit, descending=descending, include_lead=include_lead)
        pages = 1
        while True:
            assert len(page.events) <= limit
            seen.extend(page.events)
            if page.cursor is None:
                break
            if appended_between_pages is not None and pages == 1:
                # The cursor pins the snapshot of the first page: later
                # appends must not show up in this query, wherever they sort.
                self.append_valid(appended_between_pages)
            assert pages <= len(expected) + 1, "paging does not terminate"
            page = self.log.scan(
                flt,
                after=page.cursor,
                limit=limit,
                descending=descending,
                include_lead=include_lead,
            )
            pages += 1
        assert_same_events(seen, expected)

    @rule(data=st.data(), limit=st.one_of(st.none(), st.integers(1, 10)))
    def read_from(self, data: st.DataObject, limit: int | None) -> None:
        position = data.draw(st.integers(1, len(self.events) + 2), label="position")
        expected = [e for e in self.events if e.position >= position]
        if limit is not None:
            expected = expected[:limit]
        assert_same_events(list(self.log.read_from(position, limit=limit)), expected)

    # -- lifecycle ---------------------------------------------------------

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = EventLog.open(self.dir, self.options)

    @rule()
    def reopen_without_index(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir / "index")
        self.log = EventLog.open(self.dir, self.options)

    @rule()
    def reindex(self) -> None:
        assert self.log.reindex() == len(self.events)

    @rule()
    def stats(self) -> None:
        stats = self.log.stats()
        assert stats.event_count == len(self.events)
        assert stats.last_position == len(self.events)
        assert stats.segment_count == len(list((self.dir / "log").glob("*.log")))

    @invariant()
    def positions_are_gapless(self) -> None:
        assert self.log.last_position == len(self.events)

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_store_behaves_like_its_model_through_appends_queries_reopens_and_rolls(
    tmp_path: Path,
) -> None:
    run_state_machine_as_test(
        lambda: EventLogModel(tmp_path),
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
