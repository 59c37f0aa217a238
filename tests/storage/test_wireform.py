"""The wire form's two twins (compiled C and plain Python) write the same bytes, and those
bytes are what protobuf's own classes serialize for the same content.

Every test runs against both twins. The compiled one must be built (``pip install -e .``
builds it in place): without it its tests fail, unless ``LEADTRAIL_PURE=1`` says this run
is about the pure twin alone.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import hypothesis.strategies as st
import pytest
import zstandard
from google.protobuf import struct_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from leadtrail.client.wire import dict_to_struct, python_to_value
from leadtrail.server.simulation import LeadFlowSimulator
from leadtrail.storage import wireform
from leadtrail.v1 import event_pb2, query_pb2

ROOT = Path(__file__).resolve().parents[2]
TWINS = {"pure": "leadtrail.storage._wireform_py", "compiled": "leadtrail.storage._wireform"}
PURE_ONLY = os.environ.get("LEADTRAIL_PURE") == "1"
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
INT32 = (-(2**31), 2**31 - 1)


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(TWINS[name])
    except ImportError as e:
        if name == "compiled" and PURE_ONLY:
            pytest.skip("LEADTRAIL_PURE=1: the compiled twin is not tested")
        pytest.fail(f"the compiled twin is not built ({e}): run `pip install -e .` with a C compiler")


@pytest.fixture(params=sorted(TWINS))
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


def _both() -> Iterator[ModuleType]:
    """Both twins, for property tests that compare them with each other in one example
    (the pure one alone under ``LEADTRAIL_PURE=1`` when the compiled one is not built)."""
    yield _load("pure")
    try:
        compiled = importlib.import_module(TWINS["compiled"])
    except ImportError:
        if not PURE_ONLY:
            raise
        compiled = _load("pure")
    yield compiled


def _same_message(cls: type[Message], ours: bytes, expected: Message) -> None:
    parsed = cls()
    parsed.ParseFromString(ours)
    assert parsed == expected


# -- strategies -------------------------------------------------------------------------------

texts = st.text()  # any code point but lone surrogates, "" included
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-(2**1023), max_value=2**1023),
    st.floats(allow_nan=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(texts, inner, max_size=4),
    ),
    max_leaves=20,
)
flat_snapshots = st.dictionaries(st.text(max_size=6), scalars, max_size=8)
nested_snapshots = st.dictionaries(st.text(max_size=6), json_values, max_size=6)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _simulated_events(n: int) -> list[dict[str, Any]]:
    return [dict(e) for e in LeadFlowSimulator(seed=42).events(n)]


# -- encode_event / splice_event --------------------------------------------------------------


def _reference_event(fields: dict[str, Any], recorded_at_ms: int | None = None, position: int = 0,
                     account_id: str = "") -> bytes:  # fmt: skip
    message = event_pb2.Event(
        id=fields["id"],
        type=fields["type"],
        lead_id=fields["lead_id"],
        flow_id=fields["flow_id"],
        entity_id=fields["entity_id"],
        outcome=fields["outcome"],  # type: ignore[arg-type]
        reason=fields["reason"],
        duration_ms=fields["duration_ms"],
        integration=fields["integration"],
        response_code=fields["response_code"],
        price=fields["price"],
        details_json=fields["details_json"],
        lead_json=fields["lead_json"],
        position=position,
        account_id=account_id,
    )
    seconds, rest = divmod(fields["timestamp_ms"], 1000)
    message.timestamp.SetInParent()
    message.timestamp.seconds, message.timestamp.nanos = seconds, rest * 1_000_000
    if recorded_at_ms is not None:
        seconds, rest = divmod(recorded_at_ms, 1000)
        message.recorded_at.SetInParent()
        message.recorded_at.seconds, message.recorded_at.nanos = seconds, rest * 1_000_000
    return message.SerializeToString()


EVENT_ORDER = (
    "id", "type", "timestamp_ms", "lead_id", "flow_id", "entity_id", "outcome", "reason",
    "duration_ms", "integration", "response_code", "price", "details_json", "lead_json",
)  # fmt: skip

event_fields = st.fixed_dictionaries(
    {
        "id": texts,
        "type": texts,
        "timestamp_ms": st.one_of(st.integers(*INT64), st.integers(-(10**13), 10**13), st.just(0)),
        "lead_id": texts,
        "flow_id": texts,
        "entity_id": texts,
        "outcome": st.one_of(st.integers(0, 4), st.integers(*INT32)),
        "reason": texts,
        "duration_ms": st.integers(*UINT32),
        "integration": texts,
        "response_code": st.one_of(st.just(0), st.integers(*UINT32)),
        "price": texts,
        "details_json": st.binary(),
        "lead_json": st.binary(max_size=3000),
    }
)


def _encode(twin: ModuleType, fields: Mapping[str, Any]) -> tuple[bytes, int]:
    result: tuple[bytes, int] = twin.encode_event(*(fields[name] for name in EVENT_ORDER))
    return result


@PROPERTY
@given(fields=event_fields, recorded_at_ms=st.integers(*INT64), position=st.integers(0, 2**64 - 1),
       account_id=texts)  # fmt: skip
def test_encoded_and_spliced_events_are_protobufs_own_bytes(
    fields: dict[str, Any], recorded_at_ms: int, position: int, account_id: str
) -> None:
    stored = _reference_event(fields)
    full = _reference_event(fields, recorded_at_ms, position, account_id)
    for twin in _both():
        event_pb, head_len = _encode(twin, fields)
        assert event_pb == stored
        assert event_pb[:head_len] == _head_of(stored, fields)
        spliced = twin.splice_event(event_pb, head_len, recorded_at_ms, position, account_id.encode())
        assert spliced == full
        assert twin.splice_event(memoryview(event_pb), head_len, recorded_at_ms, position,
                                 account_id.encode()) == full  # fmt: skip


def _head_of(stored: bytes, fields: Mapping[str, Any]) -> bytes:
    """Fields 1..3 of a serialized Event: protobuf's bytes of an Event holding only those."""
    head = event_pb2.Event(id=fields["id"], type=fields["type"])
    seconds, rest = divmod(fields["timestamp_ms"], 1000)
    head.timestamp.SetInParent()
    head.timestamp.seconds, head.timestamp.nanos = seconds, rest * 1_000_000
    data = head.SerializeToString()
    assert stored.startswith(data)
    return data


def test_simulated_events_encode_and_splice_to_protobufs_bytes(twin: ModuleType) -> None:
    import orjson

    for position, event in enumerate(_simulated_events(30), start=1):
        fields = {
            **event,
            "details_json": orjson.dumps(event["details"]),
            "lead_json": orjson.dumps(event["lead"]),
        }
        event_pb, head_len = _encode(twin, fields)
        assert event_pb == _reference_event(fields)
        recorded = event["timestamp_ms"] + 17
        spliced = twin.splice_event(event_pb, head_len, recorded, position, b"acme")
        assert spliced == _reference_event(fields, recorded, position, "acme")


def test_an_event_at_the_epoch_keeps_its_empty_timestamps(twin: ModuleType) -> None:
    fields = dict.fromkeys(EVENT_ORDER, "") | {
        "timestamp_ms": 0, "outcome": 0, "duration_ms": 0, "response_code": 0,
        "details_json": b"", "lead_json": b"",
    }  # fmt: skip
    event_pb, head_len = _encode(twin, fields)
    assert (event_pb, head_len) == (b"\x1a\x00", 2)
    assert twin.splice_event(event_pb, head_len, 0, 0, b"") == b"\x1a\x00\x22\x00"
    parsed = event_pb2.Event.FromString(twin.splice_event(event_pb, head_len, 0, 0, b""))
    assert parsed.HasField("timestamp") and parsed.HasField("recorded_at")


def test_negative_times_are_floored_to_whole_seconds_and_positive_nanos(twin: ModuleType) -> None:
    fields = dict.fromkeys(EVENT_ORDER, "x") | {
        "timestamp_ms": -1, "outcome": 1, "duration_ms": 1, "response_code": 1,
        "details_json": b"{}", "lead_json": b"{}",
    }  # fmt: skip
    event = event_pb2.Event.FromString(_encode(twin, fields)[0])
    assert (event.timestamp.seconds, event.timestamp.nanos) == (-1, 999_000_000)


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("id", b"bytes", TypeError),
        ("type", None, TypeError),
        ("lead_id", 5, TypeError),
        ("timestamp_ms", 1.5, TypeError),
        ("timestamp_ms", "1", TypeError),
        ("timestamp_ms", 2**63, ValueError),
        ("outcome", 2**31, ValueError),
        ("duration_ms", -1, ValueError),
        ("duration_ms", 2**32, ValueError),
        ("response_code", None, TypeError),
        ("details_json", "{}", TypeError),
        ("lead_json", 3, TypeError),
        ("price", "\ud800", UnicodeEncodeError),  # a lone surrogate has no UTF-8
    ],
)
def test_encode_event_rejects_wrong_arguments(twin: ModuleType, name: str, value: Any, error: type) -> None:
    fields = dict.fromkeys(EVENT_ORDER, "a") | {
        "timestamp_ms": 1, "outcome": 1, "duration_ms": 1, "response_code": 1,
        "details_json": b"{}", "lead_json": b"{}",
    }  # fmt: skip
    _encode(twin, fields)
    with pytest.raises(error):
        _encode(twin, fields | {name: value})


def test_the_first_wrong_argument_decides_the_error_in_both_twins() -> None:
    fields = dict.fromkeys(EVENT_ORDER, "a") | {
        "timestamp_ms": 1, "outcome": 1, "duration_ms": 1, "response_code": 1,
        "details_json": b"{}", "lead_json": b"{}",
    }  # fmt: skip
    for wrong, error in (
        ({"lead_id": 5, "timestamp_ms": 2**63}, ValueError),  # timestamp_ms comes first
        ({"type": None, "timestamp_ms": 2**63}, TypeError),
        ({"price": "\ud800", "lead_json": "no bytes"}, UnicodeEncodeError),
        ({"reason": b"bytes", "duration_ms": -1}, TypeError),  # reason comes first
        ({"response_code": -1, "price": 5}, ValueError),
    ):
        for twin in _both():
            with pytest.raises(error):
                _encode(twin, fields | wrong)


def test_bools_and_bytes_likes_are_taken_alike_by_both_twins() -> None:
    fields = dict.fromkeys(EVENT_ORDER, "a") | {
        "timestamp_ms": True, "outcome": True, "duration_ms": False, "response_code": True,
        "details_json": bytearray(b"{}"), "lead_json": memoryview(b'{"a":1}'),
    }  # fmt: skip
    pure, compiled = (_encode(twin, fields) for twin in _both())
    assert pure == compiled
    assert pure == _encode(_load("pure"), fields | {"timestamp_ms": 1, "outcome": 1, "duration_ms": 0,
                                                    "response_code": 1, "details_json": b"{}",
                                                    "lead_json": b'{"a":1}'})  # fmt: skip


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"\x1a\x00", 3, 0, 0, b""), ValueError),  # head beyond the event
        ((b"\x1a\x00", -1, 0, 0, b""), ValueError),
        ((b"\x1a\x00", 2, 0, -1, b""), ValueError),  # a negative position
        ((b"\x1a\x00", 2, 0, 2**64, b""), ValueError),
        ((b"\x1a\x00", 2, 2**63, 1, b""), ValueError),
        ((b"\x1a\x00", 2, 0, 1, "acme"), TypeError),
        (("\x1a\x00", 2, 0, 1, b""), TypeError),
        ((b"\x1a\x00", 2.0, 0, 1, b""), TypeError),
        ((b"\x1a\x00", 2, None, 1, b""), TypeError),
    ],
)
def test_splice_event_rejects_wrong_arguments(twin: ModuleType, args: tuple[Any, ...], error: type) -> None:
    with pytest.raises(error):
        twin.splice_event(*args)


def test_splice_event_takes_any_bytes_like_event(twin: ModuleType) -> None:
    stored = b"\x0a\x01a\x1a\x00\x3a\x01b"
    expected = twin.splice_event(stored, 5, 1500, 7, b"x")
    assert expected == b"\x0a\x01a\x1a\x00\x22\x08\x08\x01\x10\x80\xca\xb5\xee\x01\x28\x07\x32\x01x\x3a\x01b"
    assert twin.splice_event(bytearray(stored), 5, 1500, 7, b"x") == expected
    assert twin.splice_event(memoryview(b"--" + stored)[2:], 5, 1500, 7, memoryview(b"x")) == expected


# -- value_bytes / struct_bytes ---------------------------------------------------------------


def _reference_value(value: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    python_to_value(value, message)
    return message


def _has_mapping(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    return isinstance(value, list | tuple) and any(_has_mapping(v) for v in value)


@PROPERTY
@given(value=json_values)
def test_values_are_protobufs_own_bytes(value: Any) -> None:
    expected = _reference_value(value)
    pure, compiled = (twin.value_bytes(value) for twin in _both())
    assert pure == compiled
    if _has_mapping(value):  # protobuf writes a map in an order of its own
        _same_message(struct_pb2.Value, pure, expected)
    else:
        assert pure == expected.SerializeToString()


@PROPERTY
@given(obj=st.dictionaries(texts, json_values, max_size=6))
def test_structs_parse_as_dict_to_struct_fills_them(obj: dict[str, Any]) -> None:
    expected = struct_pb2.Struct()
    dict_to_struct(obj, expected)
    pure, compiled = (twin.struct_bytes(obj) for twin in _both())
    assert pure == compiled
    _same_message(struct_pb2.Struct, pure, expected)
    assert _load("pure").value_bytes(obj) == b"\x2a" + _varint(len(pure)) + pure


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes([*out, n])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"\x08\x00"),
        (False, b"\x20\x00"),
        (True, b"\x20\x01"),
        (0, b"\x11" + bytes(8)),
        (0.0, b"\x11" + bytes(8)),
        (-0.0, b"\x11" + bytes(7) + b"\x80"),
        ("", b"\x1a\x00"),
        ([], b"\x32\x00"),
        ((), b"\x32\x00"),
        ({}, b"\x2a\x00"),
        ({"": None}, b"\x2a\x08\x0a\x06\x0a\x00\x12\x02\x08\x00"),
        ([None, [True]], b"\x32\x0c\x0a\x02\x08\x00\x0a\x06\x32\x04\x0a\x02\x20\x01"),
    ],
)
def test_every_value_kind_is_written_even_when_it_is_a_default(
    twin: ModuleType, value: Any, expected: bytes
) -> None:
    assert twin.value_bytes(value) == expected
    _same_message(struct_pb2.Value, expected, _reference_value(value))


def test_numbers_are_doubles_as_protobuf_converts_them(twin: ModuleType) -> None:
    for number in (1, -1, 2**53 + 1, -(2**64) - 1, 10**300, math.inf, -math.inf, 1e-310, 0.1):
        assert twin.value_bytes(number) == _reference_value(number).SerializeToString()
    nan = twin.value_bytes(math.nan)
    assert math.isnan(struct_pb2.Value.FromString(nan).number_value)


def test_mappings_and_subclasses_are_written_in_their_iteration_order(twin: ModuleType) -> None:
    class Ordered(dict[str, Any]):
        pass

    ordered = OrderedDict([("b", 1), ("a", 2)])
    ordered.move_to_end("b")
    assert twin.struct_bytes(ordered) == twin.struct_bytes({"a": 2, "b": 1})
    assert twin.value_bytes(Ordered(z=True, y=[1])) == twin.value_bytes({"z": True, "y": [1]})
    assert twin.value_bytes(Ordered(z=True)) != twin.value_bytes({})


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, TypeError),
        (b"bytes", TypeError),
        (object(), TypeError),
        ({"a": [1, {"b": object()}]}, TypeError),
        ({1: "a"}, TypeError),  # a key that is no string
        (10**400, ValueError),  # past a double's range
        ([1, -(10**400)], ValueError),
    ],
)
def test_value_bytes_rejects_what_is_no_json_value(twin: ModuleType, value: Any, error: type) -> None:
    with pytest.raises(error):
        twin.value_bytes(value)


def test_struct_bytes_takes_only_mappings(twin: ModuleType) -> None:
    with pytest.raises(TypeError):
        twin.struct_bytes([("a", 1)])
    with pytest.raises(TypeError):
        twin.struct_bytes({"a": {2: 1}})


def test_deep_nesting_is_a_recursion_error_not_a_crash(twin: ModuleType) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        twin.value_bytes(deep)


# -- field_changes ----------------------------------------------------------------------------


# The timeline changes as reads computed them before format 1.2 stored them: field by
# field with protobuf objects. Kept here as the reference the twins must equal.
def _same_json(a: Any, b: Any) -> bool:
    # JSON values: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


_ABSENT = object()


def changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    out: RepeatedCompositeFieldContainer[query_pb2.FieldChange],
) -> None:
    # Most fields of a lead stay the same from one step to the next: find the
    # changed ones with the cheapest test that can say "same", sort only those.
    changed = [field for field in before if field not in after]
    for field, value in after.items():
        old = before.get(field, _ABSENT)
        if old is value or (type(old) is type(value) and old == value):
            continue
        if old is _ABSENT or not _same_json(old, value):
            changed.append(field)
    for field in sorted(changed):
        if field not in before:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[field], change.after)
        elif field not in after:
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[field], change.before)
        elif not _same_json(before[field], after[field]):
            change = out.add(field=field, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[field], change.before)
            python_to_value(after[field], change.after)


def _reference_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> query_pb2.TimelineStep:
    step = query_pb2.TimelineStep()
    changes(before, after, step.changes)
    return step


@PROPERTY
@given(before=flat_snapshots, after=flat_snapshots, shared=flat_snapshots)
def test_flat_snapshot_changes_are_protobufs_own_bytes(
    before: dict[str, Any], after: dict[str, Any], shared: dict[str, Any]
) -> None:
    before, after = shared | before, shared | after
    expected = _reference_changes(before, after).SerializeToString()
    for twin in _both():
        assert twin.field_changes(before, after) == expected


@PROPERTY
@given(before=nested_snapshots, after=nested_snapshots, shared=nested_snapshots)
def test_nested_snapshot_changes_parse_as_the_timeline_fills_them(
    before: dict[str, Any], after: dict[str, Any], shared: dict[str, Any]
) -> None:
    before, after = shared | before, shared | after
    pure, compiled = (twin.field_changes(before, after) for twin in _both())
    assert pure == compiled
    _same_message(query_pb2.TimelineStep, pure, _reference_changes(before, after))


def test_changes_follow_the_timelines_notion_of_same(twin: ModuleType) -> None:
    nan, other_nan = float("nan"), float("nan")
    before = {"n": 1, "flag": True, "zero": 0, "same": {"a": [1, 2]}, "gone": "x", "": 1, "nan": nan}
    after = {
        "n": 1.0,
        "flag": 1,
        "zero": False,
        "same": {"a": [1.0, 2]},
        "new": None,
        "": 2,
        "nan": other_nan,
    }
    ours = twin.field_changes(before, after)
    expected = _reference_changes(before, after)
    assert ours == expected.SerializeToString()
    assert [(c.field, c.kind) for c in expected.changes] == [
        ("", query_pb2.CHANGE_KIND_CHANGED),
        ("flag", query_pb2.CHANGE_KIND_CHANGED),
        ("gone", query_pb2.CHANGE_KIND_REMOVED),
        ("nan", query_pb2.CHANGE_KIND_CHANGED),
        ("new", query_pb2.CHANGE_KIND_ADDED),
        ("zero", query_pb2.CHANGE_KIND_CHANGED),
    ]
    assert twin.field_changes(before, before) == b""  # the very same NaN is the same
    assert twin.field_changes({}, {}) == b""


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3, "d": 4}),  # fields added at the end
        ({"a": 1, "b": 2, "c": 3}, {"a": 1, "c": 3}),  # one removed in the middle
        ({"a": 1, "b": 2, "c": 3}, {"c": 3, "b": 5, "a": 1}),  # the same fields in another order
        ({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}),  # the last removed
        ({"a": 1, "x": 2}, {"a": 1, "y": 2, "x": 2}),  # a field put in between
        ({"a": "é", "b": "e"}, {"a": "é", "b": "é"}),
        ({}, {"a": 1}),
        ({"a": 1}, {}),
    ],
)
def test_changes_of_snapshots_whose_fields_move(
    twin: ModuleType, before: dict[str, Any], after: dict[str, Any]
) -> None:
    expected = _reference_changes(before, after).SerializeToString()
    assert twin.field_changes(before, after) == expected
    assert twin.field_changes(OrderedDict(before), after) == expected  # the path for other mappings


def test_simulated_journeys_changes_are_the_timelines(twin: ModuleType) -> None:
    previous: dict[str, dict[str, Any]] = {}
    for event in _simulated_events(40):
        before = previous.get(event["lead_id"], {})
        assert (
            twin.field_changes(before, event["lead"])
            == _reference_changes(before, event["lead"]).SerializeToString()
        )
        previous[event["lead_id"]] = event["lead"]


@pytest.mark.parametrize(
    ("before", "after", "error"),
    [
        ([], {}, TypeError),
        ({}, "a", TypeError),
        ({}, {"a": {1, 2}}, TypeError),
        ({"a": object()}, {}, TypeError),
        ({}, {"a": 10**400}, ValueError),
        ({1: "a"}, {}, TypeError),  # a field name that is no string
    ],
)
def test_field_changes_rejects_what_is_no_snapshot(
    twin: ModuleType, before: Any, after: Any, error: type
) -> None:
    with pytest.raises(error):
        twin.field_changes(before, after)


# -- timeline_bytes / repeated_field ----------------------------------------------------------

event_bytes = st.builds(
    lambda id, lead: event_pb2.Event(id=id, lead_id=lead, position=7).SerializeToString(), texts, texts
)
change_lists = st.tuples(flat_snapshots, flat_snapshots).map(lambda pair: _reference_changes(*pair))


@PROPERTY
@given(
    lead_id=texts,
    steps=st.lists(st.tuples(event_bytes, st.integers(*INT64), change_lists), max_size=5),
    total_ms=st.one_of(st.just(0), st.integers(*INT64)),
    token=texts,
    audit=st.lists(event_bytes, max_size=3),
)
def test_timelines_are_protobufs_own_bytes(
    lead_id: str,
    steps: list[tuple[bytes, int, query_pb2.TimelineStep]],
    total_ms: int,
    token: str,
    audit: list[bytes],
) -> None:
    expected = query_pb2.Timeline(lead_id=lead_id, total_ms=total_ms, next_page_token=token)
    for event, since, step_changes in steps:
        step = expected.steps.add(since_previous_ms=since)
        step.event.ParseFromString(event)
        step.changes.extend(step_changes.changes)
    for event in audit:
        expected.audit.add().ParseFromString(event)
    stored = [(event, since, c.SerializeToString()) for event, since, c in steps]
    for twin in _both():
        assert twin.timeline_bytes(lead_id, stored, total_ms, token, audit) == expected.SerializeToString()


def test_a_timeline_step_with_an_empty_event_still_holds_it(twin: ModuleType) -> None:
    data = twin.timeline_bytes("", [(b"", 0, b"")], 0, "", [])
    assert data == b"\x12\x02\x0a\x00"
    assert query_pb2.Timeline.FromString(data).steps[0].HasField("event")
    assert twin.timeline_bytes("", [], 0, "", []) == b""


def test_timeline_bytes_takes_bytes_like_pieces_and_any_iterables(twin: ModuleType) -> None:
    event = event_pb2.Event(id="evt_1").SerializeToString()
    expected = twin.timeline_bytes("l", [(event, 5, b"")], -1, "t", [event])
    steps = iter([[memoryview(event), 5, bytearray()]])
    assert twin.timeline_bytes("l", steps, -1, "t", (memoryview(event),)) == expected


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"lead", [], 0, "", []), TypeError),
        (("lead", [(b"", 0)], 0, "", []), ValueError),  # a step is (event, since, changes)
        (("lead", [(b"", 0, b"", b"")], 0, "", []), ValueError),
        (("lead", [5], 0, "", []), TypeError),
        (("lead", [("event", 0, b"")], 0, "", []), TypeError),
        (("lead", [(b"", 0.5, b"")], 0, "", []), TypeError),
        (("lead", [(b"", 2**63, b"")], 0, "", []), ValueError),
        (("lead", [(b"", 0, None)], 0, "", []), TypeError),
        (("lead", [], -(2**63) - 1, "", []), ValueError),
        (("lead", [], 0, b"token", []), TypeError),
        (("lead", [], 0, "", ["audit"]), TypeError),
        (("lead", 5, 0, "", []), TypeError),
    ],
)
def test_timeline_bytes_rejects_wrong_arguments(twin: ModuleType, args: tuple[Any, ...], error: type) -> None:
    with pytest.raises(error):
        twin.timeline_bytes(*args)


@PROPERTY
@given(field_number=st.integers(1, 2**29 - 1), messages=st.lists(st.binary(max_size=300), max_size=6))
def test_repeated_fields_are_protobufs_own_bytes(field_number: int, messages: list[bytes]) -> None:
    expected = b"".join(_varint(field_number << 3 | 2) + _varint(len(m)) + m for m in messages)
    for twin in _both():
        assert twin.repeated_field(field_number, messages) == expected
        assert twin.repeated_field(field_number, iter(messages)) == expected


def test_a_page_of_events_is_a_query_events_response(twin: ModuleType) -> None:
    events = [event_pb2.Event(id=f"evt_{i}", position=i) for i in range(1, 4)]
    data = twin.repeated_field(1, (e.SerializeToString() for e in events))
    assert data == query_pb2.QueryEventsResponse(events=events).SerializeToString()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, []), ValueError),
        ((2**29, []), ValueError),
        ((-1, []), ValueError),
        ((1.0, []), TypeError),
        ((1, [b"", "text"]), TypeError),
        ((1, None), TypeError),
    ],
)
def test_repeated_field_rejects_wrong_arguments(twin: ModuleType, args: tuple[Any, ...], error: type) -> None:
    with pytest.raises(error):
        twin.repeated_field(*args)


def test_large_answers_are_the_same_bytes_from_both_twins() -> None:
    """Answers far past any inline buffer, sized up front (lists) or grown (iterators)."""
    events = [
        event_pb2.Event(id=f"evt_{i}", lead_json=b"x" * (500 * i)).SerializeToString() for i in range(40)
    ]
    expected = query_pb2.QueryEventsResponse(events=[event_pb2.Event.FromString(e) for e in events])
    snapshot = {f"field.{i}": ["v" * i, {"n": i, "deep": [None, True, "é" * i]}] for i in range(300)}
    diff = _reference_changes({"a": 1}, {"a": "x" * 3000}).SerializeToString()
    steps = [(event, i - 20, diff) for i, event in enumerate(events)]
    for twin in _both():
        assert twin.repeated_field(1, events) == expected.SerializeToString()
        assert twin.repeated_field(1, iter(events)) == expected.SerializeToString()
        assert twin.repeated_field(1, tuple(events)) == expected.SerializeToString()
        _same_message(struct_pb2.Value, twin.value_bytes(snapshot), _reference_value(snapshot))
        timeline = query_pb2.Timeline.FromString(twin.timeline_bytes("l", steps, 5, "t", events[:3]))
        assert [step.event.id for step in timeline.steps] == [f"evt_{i}" for i in range(40)]
        assert twin.timeline_bytes("l", steps, 5, "t", events) == twin.timeline_bytes(
            "l", iter(steps), 5, "t", events
        )
    pure, compiled = _both()
    assert pure.value_bytes(snapshot) == compiled.value_bytes(snapshot)
    assert pure.timeline_bytes("l", steps, 5, "t", events) == compiled.timeline_bytes(
        "l", steps, 5, "t", events
    )


# -- bodies compressed against a base ---------------------------------------------------------


def _simulated_bodies(count: int) -> list[tuple[bytes, bytes]]:
    """(body, base) pairs: each simulated event's protobuf bytes, with its lead's previous
    one as the base (what the store compresses against)."""
    import orjson

    previous: dict[str, bytes] = {}
    pairs = []
    for e in _simulated_events(count):
        fields = {**e, "details_json": orjson.dumps(e["details"]), "lead_json": orjson.dumps(e["lead"])}
        body, _ = _encode(_load("pure"), fields)
        pairs.append((body, previous.get(e["lead_id"], b"")))
        previous[e["lead_id"]] = body
    return pairs


def test_frames_of_either_twin_decode_with_the_other_to_the_same_body() -> None:
    pairs = _simulated_bodies(300)
    assert sum(1 for _, base in pairs if base) > 100, "the scenario needs leads of several steps"
    twins = list(_both())
    for body, base in pairs:
        for maker in twins:
            frame = maker.prefix_compress(body, base, 3)
            if base:
                assert len(frame) < len(body) // 2, "compressing against the base must pay"
            for reader in twins:
                assert reader.prefix_decompress(frame, base, len(body)) == body


def test_a_prefix_frame_is_magicless_and_states_its_size_and_checksum(twin: ModuleType) -> None:
    body, base = b"0123456789abcdef" * 40 + b"tail", b"0123456789abcdef" * 30
    frame = twin.prefix_compress(body, base, 3)
    descriptor = frame[0]
    assert frame[:4] != b"\x28\xb5\x2f\xfd"  # no magic number
    assert descriptor & 0x04, "content checksum flag"
    assert descriptor & 0x03 == 0, "no dictionary id"
    assert descriptor >> 6 or descriptor & 0x20, "content size stated"
    assert zstd_frame_content(frame, base) == body


def zstd_frame_content(frame: bytes, base: bytes) -> bytes:
    """The frame decoded by python-zstandard, independently of either twin."""
    prefix = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdDecompressor(dict_data=prefix, format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompress(
        frame
    )


def test_a_frame_decoded_against_another_base_fails_cleanly(twin: ModuleType) -> None:
    pairs = [(body, base) for body, base in _simulated_bodies(200) if base]
    wrong_bodies = 0
    for (body, base), (_, other) in zip(pairs, pairs[1:] + pairs[:1], strict=True):
        frame = twin.prefix_compress(body, base, 3)
        for wrong in (other, b"", base[:-1], base[: len(base) // 2] + b"?" + base[len(base) // 2 + 1 :]):
            try:
                decoded = twin.prefix_decompress(frame, wrong, 1 << 24)
            except ValueError:
                continue
            # Only bytes of the base that the frame never refers to may differ.
            assert decoded == body
            wrong_bodies += 1
    assert wrong_bodies < len(pairs), "most wrong bases must fail"


def test_damaged_and_oversized_frames_fail_cleanly(twin: ModuleType) -> None:
    body, base = _simulated_bodies(40)[-1]
    frame = twin.prefix_compress(body, base, 3)
    with pytest.raises(ValueError, match="over"):
        twin.prefix_decompress(frame, base, len(body) - 1)
    for damaged in (b"", frame[:1], frame[:5], frame[:-1], frame + b"\x00", b"\xff" * 40):
        with pytest.raises(ValueError):
            twin.prefix_decompress(damaged, base, 1 << 24)
    rng = random.Random(5)
    for _ in range(300):  # random damage: an error or (rarely) other bytes, never a crash
        flipped = bytearray(frame)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        try:
            twin.prefix_decompress(bytes(flipped), base, 1 << 24)
        except ValueError:
            pass


def test_prefix_functions_check_their_arguments(twin: ModuleType) -> None:
    with pytest.raises(TypeError):
        twin.prefix_compress("text", b"", 3)
    with pytest.raises(TypeError):
        twin.prefix_decompress(b"\x00", None, 10)
    with pytest.raises(ValueError):
        twin.prefix_compress(b"body", b"", 99)
    assert twin.prefix_decompress(twin.prefix_compress(b"", b"base", 3), b"base", 0) == b""
    frame = twin.prefix_compress(bytearray(b"x" * 99), memoryview(b"x"), 1)
    assert twin.prefix_decompress(frame, b"x", 99) == b"x" * 99


def test_the_compiled_twin_compresses_against_a_base_where_libzstd_loads() -> None:
    if PURE_ONLY:
        assert not wireform.PREFIX_COMPILED
        return
    compiled = _load("compiled")
    # Every machine here has libzstd.so.1 (dpkg needs it): the C path must be the one in use.
    assert hasattr(compiled, "prefix_compress")
    assert wireform.PREFIX_COMPILED
    assert wireform.prefix_decompress is compiled.prefix_decompress


# -- the public module ------------------------------------------------------------------------


def test_the_public_module_names_the_twin_it_uses() -> None:
    implementation, compiled = wireform.IMPLEMENTATION, wireform.COMPILED
    expected = "pure" if PURE_ONLY else "compiled"
    assert implementation == expected
    assert compiled is (expected == "compiled")
    module = importlib.import_module(TWINS[expected])
    assert wireform.splice_event is module.splice_event
    assert sorted(wireform.__all__) == sorted(
        ["COMPILED", "IMPLEMENTATION", "encode_event", "splice_event", "value_bytes", "field_changes",
         "struct_bytes", "timeline_bytes", "repeated_field", "PREFIX_COMPILED", "prefix_compress",
         "prefix_decompress", "CHAIN_COMPILED", "chain_block"]
    )  # fmt: skip


def test_leadtrail_pure_forces_the_pure_twin() -> None:
    script = "from leadtrail.storage import wireform; print(wireform.IMPLEMENTATION, wireform.COMPILED)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "LEADTRAIL_PURE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["pure", "False"]


def test_the_benchmark_runs_and_reports_both_twins(tmp_path: Path) -> None:
    """``benchmarks/wireform_bench.py --tiny``: every function measured, each figure a median of
    its runs (the figures of a tiny run mean nothing; that it runs against this code does)."""
    out = tmp_path / "wireform.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/wireform_bench.py", "--tiny", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())["figures"]
    twins = ["pure"] if PURE_ONLY and "compiled" not in figures["splice_event"] else ["pure", "compiled"]
    for function in (
        "encode_event",
        "splice_event",
        "field_changes",
        "value_bytes",
        "struct_bytes",
        "timeline_bytes",
        "repeated_field",
    ):
        for twin in twins:
            runs = figures[function][twin]["runs"]
            assert len(runs) == 3 and all(run > 0 for run in runs), (function, twin)
            assert min(runs) <= figures[function][twin]["median"] <= max(runs)
    assert "protobuf" in figures["encode_event"] and "protobuf" in figures["field_changes"]
    assert "splice_event" in result.stdout
