"""Every rule of the validation list, each at its valid and its invalid boundary.

A rejected event rejects its whole batch: the error names the index and the
field, and nothing of the batch is stored (no position consumed, the valid
events beside it absent, their ids free to be retried).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from leadtrail.storage import (
    Event,
    EventFilter,
    EventLog,
    LimitExceededError,
    Options,
    Outcome,
    StorageError,
    ValidationError,
    new_event_id,
)
from leadtrail_storage_support import canon  # loaded by conftest.py

MAX_TIMESTAMP_MS = 253_402_300_799_999
SNAPSHOT_LIMIT = 1000
DETAILS_LIMIT = 800


# The engine names a field as the wire contract does where that differs.
WIRE_NAMES = {"timestamp_ms": "timestamp"}


def valid_id(n: int) -> str:
    return f"evt_01HQ{n:022d}"


def event(n: int = 0, **changes: Any) -> Event:
    base = Event(
        type="recipient.delivered",
        lead_id=f"lead-{n}",
        flow_id="flow-1",
        id=valid_id(n),
        timestamp_ms=1_000 + n,
        entity_id="buyer-1",
        outcome=Outcome.SUCCESS,
        reason="Accepted",
        duration_ms=120,
        integration="buyer_api",
        response_code=200,
        price="25.00",
        details={"rule_set": "default"},
        lead={"email": "a@example.com", "email.valid": True},
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    options = Options(max_snapshot_bytes=SNAPSHOT_LIMIT, max_details_bytes=DETAILS_LIMIT)
    with EventLog.open(tmp_path / "data", options) as store:
        store.append([event(900, lead_id="already-there")])
        yield store


def assert_batch_rejected(
    log: EventLog, field: str, bad_value: Any, error: type[ValidationError] = ValidationError
) -> None:
    """Put the bad value at index 2 of a four-event batch and check the rejection."""
    before = log.last_position
    batch = [event(1), event(2), event(3, **{field: bad_value}), event(4)]
    with pytest.raises(error) as caught:
        log.append(batch)
    e = caught.value
    named = WIRE_NAMES.get(field, field)
    assert e.index == 2
    assert e.field == named or e.field.startswith(named + "."), e.field
    assert f"events[2].{named}" in str(e)
    assert log.last_position == before, "a rejected batch consumes no position"
    for n in (1, 2, 4):
        assert log.get(valid_id(n)) is None
        assert log.timeline(f"lead-{n}") == []
    assert list(log.read_from(before + 1)) == []


def assert_stored(log: EventLog, field: str, good_value: Any) -> None:
    before = log.last_position
    results = log.append([event(1), event(2, **{field: good_value})])
    assert [r.position for r in results] == [before + 1, before + 2]
    account = good_value if field == "account_id" else "default"
    stored = log.get(results[1].id, account_id=account)
    assert stored is not None
    if field in ("lead", "details"):
        assert canon(dict(getattr(stored, field))) == canon(good_value)
    elif good_value not in ("", None) or field not in ("id", "timestamp_ms"):
        assert getattr(stored, field) == good_value
        assert type(getattr(stored, field)) is type(good_value)


# (field, valid boundary values, invalid boundary values)
FIELD_RULES: list[tuple[str, list[Any], list[Any]]] = [
    (
        "id",
        ["", "evt_7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "evt_00000000000000000000000000"],
        [
            "evt_8ZZZZZZZZZZZZZZZZZZZZZZZZZ",  # first ULID char above 7 overflows 128 bits
            "evt_01hq0000000000000000000000",  # lowercase
            "evt_01HQ000000000000000000000I",  # I, L, O, U are not Crockford
            "evt_01HQ000000000000000000000U",
            "evt_01HQ" + "0" * 21,  # 25 chars
            "evt_01HQ" + "0" * 23,  # 27 chars
            "01HQ0000000000000000000000",  # no prefix
            "EVT_01HQ0000000000000000000000",
            " evt_01HQ0000000000000000000000",
        ],
    ),
    (
        "type",
        ["a.b", "source.submitted", "retry.scheduled_2.v2", "a." + "b" * 62],
        [
            "a." + "b" * 63,  # 65 chars
            "Source.submitted",
            "source",
            "source.",
            ".submitted",
            "1source.submitted",
            "source.sub-mitted",
            "source..submitted",
            "source.submitted ",
            "",
        ],
    ),
    ("lead_id", ["x", "l" * 128, "é" * 128], ["", "l" * 129]),
    ("flow_id", ["x", "f" * 128, "🌊" * 128], ["", "f" * 129]),
    ("entity_id", ["", "e" * 128], ["e" * 129]),
    ("integration", ["", "i" * 128], ["i" * 129]),
    ("reason", ["", "r" * 1024], ["r" * 1025]),
    (
        "account_id",
        ["a", "A-z_0.9", "a" * 64],
        ["", "a" * 65, "acme corp", "a/b", "acmé", "a\nb"],
    ),
    ("timestamp_ms", [None, 0, MAX_TIMESTAMP_MS], [-1, MAX_TIMESTAMP_MS + 1, 1.5, "1000"]),
    ("duration_ms", [0, 2**32 - 1], [-1, 2**32, 1.0, "5"]),
    ("response_code", [0, 2**32 - 1], [-1, 2**32]),
    ("outcome", list(Outcome), [7, -1, "success"]),
    (
        "price",
        ["", "25.00", "-3.5", "0", "1000000", "1" * 32, "-" + "1" * 31],
        ["1e5", "NaN", "nan", "Infinity", "1,00", "abc", "1.2.3", "--1", " 1", "1 ", "1" * 33, 3.5],
    ),
    (
        "lead",
        [{}, {"a.b.c": [1, 2.5, None, True, {"x": "y"}]}, {"big": 2**53, "small": -(2**53)}],
        [
            {"score": math.nan},
            {"score": math.inf},
            {"nested": [1, {"x": -math.inf}]},
            {1: "non-string key"},
            {"bytes": b"raw"},
            {"set": {1, 2}},
            {"object": object()},
            ["not", "a", "mapping"],
        ],
    ),
    (
        "details",
        [{}, {"rules_evaluated": 12, "days_to_convert": 3.5}],
        [{"ratio": math.nan}, {2: "x"}, {"when": object()}],
    ),
]


def rule_cases(kind: int) -> list[Any]:
    return [
        pytest.param(field, value, id=f"{field}={ascii(value)[:30]}")
        for field, *values in FIELD_RULES
        for value in values[kind - 1]
    ]


@pytest.mark.parametrize(("field", "value"), rule_cases(1))
def test_value_at_the_valid_boundary_is_stored(log: EventLog, field: str, value: Any) -> None:
    assert_stored(log, field, value)


@pytest.mark.parametrize(("field", "value"), rule_cases(2))
def test_value_past_the_boundary_rejects_the_whole_batch(log: EventLog, field: str, value: Any) -> None:
    assert_batch_rejected(log, field, value)


def test_longest_multibyte_ids_of_a_longest_account_are_indexed(log: EventLog) -> None:
    # 128 four-byte characters are 512 UTF-8 bytes: more than an LMDB key
    # holds, so composite index keys must not just concatenate them.
    account = "a" * 64
    lead, flow, entity = "😀" * 128, "🌊" * 128, "🏦" * 128
    stored = event(5, account_id=account, lead_id=lead, flow_id=flow, entity_id=entity)
    [result] = log.append([stored])
    assert log.get(result.id, account_id=account) is not None
    assert [e.position for e in log.timeline(lead, account_id=account)] == [result.position]
    for flt in (
        EventFilter(account_id=account, lead_id=lead),
        EventFilter(account_id=account, flow_id=flow),
        EventFilter(account_id=account, entity_id=entity),
        EventFilter(account_id=account, types=("recipient.delivered",)),
    ):
        assert [e.position for e in log.scan(flt).events] == [result.position]


def snapshot_of_json_size(size: int) -> dict[str, str]:
    snapshot = {"k": "x" * (size - len(b'{"k":""}'))}
    assert len(orjson.dumps(snapshot)) == size
    return snapshot


def test_snapshot_at_its_size_limit_is_stored(log: EventLog) -> None:
    assert_stored(log, "lead", snapshot_of_json_size(SNAPSHOT_LIMIT))


def test_snapshot_over_its_size_limit_is_a_limit_error(log: EventLog) -> None:
    assert_batch_rejected(log, "lead", snapshot_of_json_size(SNAPSHOT_LIMIT + 1), error=LimitExceededError)


def test_details_at_their_size_limit_are_stored(log: EventLog) -> None:
    assert_stored(log, "details", snapshot_of_json_size(DETAILS_LIMIT))


def test_details_over_their_size_limit_are_a_limit_error(log: EventLog) -> None:
    assert_batch_rejected(log, "details", snapshot_of_json_size(DETAILS_LIMIT + 1), error=LimitExceededError)


def test_batch_of_max_events_is_stored_and_one_more_is_a_limit_error(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "data", Options(max_events_per_append=5)) as log:
        results = log.append([event(n) for n in range(5)])
        assert [r.position for r in results] == [1, 2, 3, 4, 5]
        with pytest.raises(LimitExceededError):
            log.append([event(n) for n in range(10, 16)])
        assert log.last_position == 5
        assert all(log.get(valid_id(n)) is None for n in range(10, 16))


def test_empty_batch_stores_nothing(log: EventLog) -> None:
    before = log.last_position
    with contextlib.suppress(ValidationError):
        assert log.append([]) == []
    assert log.last_position == before


def test_first_invalid_event_is_the_one_named(log: EventLog) -> None:
    batch = [event(1), event(2, lead_id=""), event(3, type="Bad")]
    with pytest.raises(ValidationError) as caught:
        log.append(batch)
    assert (caught.value.index, caught.value.field) == (1, "lead_id")


def test_error_names_the_rule_that_was_broken(log: EventLog) -> None:
    with pytest.raises(ValidationError) as caught:
        log.append([event(1, lead_id="l" * 129)])
    assert caught.value.rule
    assert "128" in str(caught.value), "the message names the limit"


def test_rejected_batch_ids_are_free_to_be_retried(log: EventLog) -> None:
    before = log.last_position
    with pytest.raises(ValidationError):
        log.append([event(1), event(2, price="1e5")])
    results = log.append([event(1), event(2)])
    assert [(r.position, r.duplicate) for r in results] == [
        (before + 1, False),
        (before + 2, False),
    ]


def test_duplicate_of_a_stored_event_does_not_save_an_invalid_batch(log: EventLog) -> None:
    [first] = log.append([event(1)])
    with pytest.raises(ValidationError):
        log.append([event(1), event(2, reason="r" * 1025)])
    assert log.last_position == first.position
    assert log.get(valid_id(2)) is None


def test_store_keeps_accepting_after_rejections(log: EventLog) -> None:
    before = log.last_position
    for bad in ({"type": "x"}, {"price": "NaN"}, {"lead": {"n": math.nan}}):
        with pytest.raises(ValidationError):
            log.append([event(1, **bad)])
    [result] = log.append([event(1)])
    assert result.position == before + 1
    assert log.verify().problems == []


def test_append_failing_inside_the_engine_stores_nothing_and_keeps_accounts_apart(
    tmp_path: Path,
) -> None:
    # Whatever makes an append fail after validation (here: the longest
    # multibyte flow id, if the index cannot take it), the failed batch is
    # not stored, and nothing it half-created leaks into later appends.
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([event(0)])
        try:
            log.append([event(1, account_id="acme"), event(2, flow_id="🌊" * 128)])
        except StorageError:
            failed = True
            assert log.last_position == 1
            assert [e.position for e in log.read_from(2)] == []
            assert log.get(valid_id(1), account_id="acme") is None
        else:
            failed = False
        shared = new_event_id()
        [theirs] = log.append([event(3, account_id="globex", id=shared)])
        [mine] = log.append([event(4, account_id="acme", id=shared)])
        assert not mine.duplicate, "another account's id is never revealed"
        assert mine.position == theirs.position + 1
        acme = log.get(shared, account_id="acme")
        assert acme is not None and acme.lead_id == "lead-4"
        assert [e.lead_id for e in log.scan(EventFilter(account_id="acme")).events] == (
            ["lead-4"] if failed else ["lead-1", "lead-4"]
        )
    with EventLog.open(data) as log:
        stored = [(e.account_id, e.lead_id) for e in log.read_from(1)]
        if failed:
            assert stored == [("default", "lead-0"), ("globex", "lead-3"), ("acme", "lead-4")]
        assert log.verify().problems == []
