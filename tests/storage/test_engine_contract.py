"""The engine's side of the contract the server and the CLI build on: its error classes,
the legal hold refusing an erasure, named errors for malformed metadata files, the
conflict flag of a re-sent id, pages of a lead's journey, per-account counts, progress
of long maintenance calls, and ids without control characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import (
    AUDIT_FLOW,
    DataDirectoryError,
    Event,
    EventFilter,
    EventLog,
    InvalidArgumentError,
    InvalidCursorError,
    LegalHoldError,
    LimitExceededError,
    MetadataFileError,
    Options,
    Outcome,
    RetentionPolicy,
    StorageError,
    ValidationError,
    new_event_id,
)

DAY_MS = 86_400_000
T0 = 1_767_225_600_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def make(n: int, lead_id: str = "lead-1", **changes: Any) -> Event:
    values: dict[str, Any] = {
        "type": "recipient.delivered",
        "lead_id": lead_id,
        "flow_id": "flow-1",
        "id": new_event_id(),
        "timestamp_ms": T0 + n,
        "entity_id": "buyer-1",
        "outcome": Outcome.SUCCESS,
        "lead": {"email": "someone@example.com", "step": n},
    }
    values.update(changes)
    return Event(**values)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> Iterator[EventLog]:
    with EventLog.open(tmp_path / "data", Options(segment_bytes=4096, clock_ms=clock)) as store:
        yield store


# -- errors ---------------------------------------------------------------------


def test_bad_arguments_share_one_class() -> None:
    assert issubclass(ValidationError, InvalidArgumentError)
    assert issubclass(LimitExceededError, InvalidArgumentError)
    assert issubclass(InvalidCursorError, InvalidArgumentError)
    assert issubclass(InvalidArgumentError, StorageError)
    assert not issubclass(LegalHoldError, InvalidArgumentError)
    assert issubclass(MetadataFileError, DataDirectoryError)


def test_a_page_size_out_of_range_is_a_bad_argument(log: EventLog) -> None:
    with pytest.raises(InvalidArgumentError, match="limit 0"):
        log.scan(EventFilter(), limit=0)
    with pytest.raises(InvalidArgumentError, match="limit 0"):
        log.lead_events("lead-1", limit=0)


def test_a_retention_age_out_of_range_is_a_bad_argument(log: EventLog) -> None:
    with pytest.raises(InvalidArgumentError, match="max_age_days"):
        log.set_retention_policy(RetentionPolicy("default", max_age_days=40_000))
    assert log.retention_policies() == []


def test_a_bad_field_pattern_is_a_bad_argument(log: EventLog) -> None:
    from leadtrail.storage import FieldPolicy

    with pytest.raises(InvalidArgumentError, match="empty pattern"):
        log.set_field_policy(FieldPolicy("default", pii=("",)))


# -- the legal hold -----------------------------------------------------------


def test_the_engine_refuses_to_erase_under_a_legal_hold(log: EventLog) -> None:
    log.append([make(i) for i in range(3)])
    log.set_retention_policy(RetentionPolicy("default", legal_hold=True))
    before = log.timeline("lead-1")
    with pytest.raises(LegalHoldError) as raised:
        log.erase_lead("lead-1")
    assert str(raised.value) == (
        "account 'default' is under a legal hold: nothing of it may be erased until it is lifted"
    )
    assert log.timeline("lead-1") == before
    log.set_retention_policy(RetentionPolicy("default", legal_hold=False))
    report = log.erase_lead("lead-1")
    assert report is not None and report.events_erased == 3


def test_a_hold_on_another_account_does_not_refuse(log: EventLog) -> None:
    log.append([make(0)])
    log.set_retention_policy(RetentionPolicy("other", legal_hold=True))
    assert log.erase_lead("lead-1") is not None


def test_the_erasure_record_uses_the_one_audit_flow(log: EventLog) -> None:
    log.append([make(0)])
    report = log.erase_lead("lead-1")
    assert report is not None
    assert AUDIT_FLOW == "audit"
    assert log.get(report.audit_event_id) is not None
    assert log.get(report.audit_event_id).flow_id == AUDIT_FLOW  # type: ignore[union-attr]


# -- malformed metadata files ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("retention.json", b"{not json"),
        ("retention.json", b'[{"max_age_days": 3}]'),
        ("retention.json", b'[{"account_id": "a", "max_age_days": "many"}]'),
        ("retention.json", b'[{"account_id": "a", "max_age_days": -1}]'),
        ("retention.json", b"7"),
        ("fields.json", b"{not json"),
        ("fields.json", b'[{"secret": []}]'),
        ("fields.json", b'[{"account_id": "a", "pii": [""]}]'),
        ("retired.json", b"{not json"),
        ("retired.json", b"[1, 2]"),
        ("recorded_at.json", b'{"when": 1}'),
    ],
)
def test_a_malformed_metadata_file_is_named(tmp_path: Path, name: str, content: bytes) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([make(0)])
    (data / name).write_bytes(content)
    with pytest.raises(MetadataFileError, match=name.replace(".", r"\.")), EventLog.open(data) as log:
        log.apply_retention()  # recorded_at.json is read by retention
    # The directory is whole once the file is: nothing was changed by the failed open.
    (data / name).unlink()
    with EventLog.open(data) as log:
        assert log.stats().event_count == 1


# -- a re-sent id -----------------------------------------------------------------


def test_a_resent_id_with_other_content_is_a_conflict(log: EventLog) -> None:
    first = make(0)
    [stored] = log.append([first])
    assert not stored.duplicate and not stored.conflict
    same = log.append([first])[0]
    assert same.duplicate and not same.conflict and same.position == stored.position
    unset_time = log.append([make(0, id=first.id, timestamp_ms=None)])[0]
    assert unset_time.duplicate and not unset_time.conflict
    for change in (
        {"type": "recipient.rejected"},
        {"lead_id": "lead-2"},
        {"flow_id": "flow-2"},
        {"timestamp_ms": T0 + 5},
    ):
        other = log.append([make(0, id=first.id, **change)])[0]
        assert other.duplicate and other.conflict, change
        assert other.position == stored.position
    # The first event is the one kept.
    assert log.get(first.id) == log.timeline("lead-1")[0]
    assert log.get(first.id).type == "recipient.delivered"  # type: ignore[union-attr]


def test_a_conflict_inside_one_batch(log: EventLog) -> None:
    first = make(0)
    results = log.append([first, make(0, id=first.id, lead_id="lead-9"), make(0, id=first.id)])
    assert [(r.duplicate, r.conflict) for r in results] == [(False, False), (True, True), (True, False)]
    assert log.timeline("lead-9") == []


# -- pages of a lead's journey -------------------------------------------------------


def test_lead_events_pages_in_time_order_from_an_inclusive_key(log: EventLog) -> None:
    # Timestamps out of position order, some equal: the order is (timestamp, position).
    stamps = [50, 10, 30, 10, 70, 20, 30, 60, 0, 40]
    log.append([make(s, id=new_event_id()) for s in stamps])
    log.append([make(5, lead_id="lead-2")])
    whole = log.timeline("lead-1")
    keys = [(e.timestamp_ms or 0, e.position) for e in whole]
    assert keys == sorted(keys) and len(whole) == len(stamps)
    assert log.lead_events("lead-1") == whole
    assert log.lead_events("lead-1", descending=True) == whole[::-1]
    pages: list[Event] = []
    start: tuple[int, int] | None = None
    while True:
        page = log.lead_events("lead-1", start=start, limit=3)
        assert len(page) <= 3
        pages.extend(page if start is None else page[1:])  # ``start`` is inclusive
        if len(page) < 3:
            break
        start = (page[-1].timestamp_ms or 0, page[-1].position)
    assert pages == whole
    middle = whole[4]
    at = (middle.timestamp_ms or 0, middle.position)
    assert log.lead_events("lead-1", start=at, limit=2) == whole[4:6]
    assert log.lead_events("lead-1", start=at, limit=2, descending=True) == [whole[4], whole[3]]
    bare = log.lead_events("lead-1", limit=1, include_lead=False)
    assert bare[0].id == whole[0].id and bare[0].lead == {}
    assert log.lead_events("nobody") == []


def test_a_page_of_a_long_journey_reads_only_its_own_events(log: EventLog, monkeypatch: Any) -> None:
    log.append([make(i) for i in range(1000)])
    log.append([make(i) for i in range(1000, 2000)])
    reads = []
    real = log.event_at

    def counting(*args: Any, **kwargs: Any) -> Event | None:
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(log, "event_at", counting)
    whole_before = 2000
    page = log.lead_events("lead-1", start=(T0 + 1500, 0), limit=10)
    assert [e.timestamp_ms for e in page] == [T0 + 1500 + i for i in range(10)]
    assert len(reads) <= 10 < whole_before


# -- statistics ----------------------------------------------------------------------


def test_stats_count_events_per_account(log: EventLog, clock: Clock) -> None:
    log.append([make(i, account_id="acme") for i in range(5)])
    log.append([make(i, account_id="beta") for i in range(3)])
    log.append([make(i) for i in range(2)])
    stats = log.stats()
    assert stats.account_events == {"acme": 5, "beta": 3, "default": 2}
    assert sum(stats.account_events.values()) == stats.event_count
    log.set_retention_policy(RetentionPolicy("acme", max_age_days=1))
    clock.now += 2 * DAY_MS
    log.append([make(i, account_id="beta", id=new_event_id()) for i in range(200)])
    log.apply_retention()
    stats = log.stats()
    assert stats.account_events == {"beta": 203, "default": 2}
    assert sum(stats.account_events.values()) == stats.event_count


# -- progress of long calls ---------------------------------------------------------------


def _recorder() -> tuple[list[tuple[int, int]], Any]:
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))

    return calls, progress


def _check(calls: list[tuple[int, int]]) -> None:
    assert calls, "progress was never reported"
    assert all(0 <= done <= total for done, total in calls), calls
    assert calls[-1][0] == calls[-1][1], calls
    dones = [done / total if total else 1.0 for done, total in calls]
    assert dones == sorted(dones), calls


def test_maintenance_calls_report_progress(log: EventLog, clock: Clock) -> None:
    for i in range(20):
        log.append([make(j, lead_id=f"lead-{i % 3}") for j in range(20)])
    assert len(log.segments) > 3
    calls, progress = _recorder()
    assert log.verify(progress=progress).problems == []
    _check(calls)
    assert calls[-1][1] == len(log.segments)
    calls, progress = _recorder()
    assert log.reindex(progress=progress) == 400
    _check(calls)
    calls, progress = _recorder()
    assert log.erase_lead("lead-1", progress=progress) is not None
    _check(calls)
    calls, progress = _recorder()
    log.set_retention_policy(RetentionPolicy("default", max_age_days=1))
    clock.now += 2 * DAY_MS
    log.apply_retention(progress=progress)
    _check(calls)


# -- control characters in ids ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "lead_id", "flow_id", "entity_id"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "tab\there", "del\x7f", "\x1b[31mred"])
def test_ids_with_control_characters_are_refused(log: EventLog, field: str, bad: str) -> None:
    value = new_event_id() + bad if field == "id" else bad
    with pytest.raises(ValidationError) as raised:
        log.append([make(0), make(1, **{field: value})])
    assert raised.value.field == field and raised.value.index == 1
    assert raised.value.rule == "must not contain control characters"
    assert log.stats().event_count == 0


def test_an_id_ending_in_a_newline_is_refused(log: EventLog) -> None:
    # A regular expression's "$" matches before a final newline: the id must not slip by.
    with pytest.raises(ValidationError, match="control characters"):
        log.append([make(0, id=new_event_id() + "\n")])
    with pytest.raises(ValidationError, match="type"):
        log.append([make(0, type="recipient.delivered\n")])
    assert log.get(new_event_id() + "\n") is None


def test_ordinary_unicode_ids_are_kept(log: EventLog) -> None:
    [result] = log.append([make(0, lead_id="lead-é-李-🙂", entity_id="buyer ü")])
    assert not result.duplicate
    assert [e.lead_id for e in log.timeline("lead-é-李-🙂")] == ["lead-é-李-🙂"]


def test_retention_json_written_by_the_engine_reads_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=3, legal_hold=True))
    assert json.loads((data / "retention.json").read_text())[0]["account_id"] == "acme"
    with EventLog.open(data) as log:
        assert log.retention_policies() == [RetentionPolicy("acme", max_age_days=3, legal_hold=True)]
