"""The write path's two twins (compiled C and plain Python) give the same answers.

``ingest``'s checks only say yes or no. The compiled twin may say no where the pure one
says yes (for unusual types it leaves to the pure one), never the other way round; on
plain values (exact ``dict``, ``list``, ``str``, ``int`` ...) the two agree exactly. And
validation, whichever twin runs it, accepts and rejects the same events with the same
error. ``index_rows`` gives the same rows from both. The compiled twin must be built
(``pip install -e .``); without it its tests fail, unless ``LEADTRAIL_PURE=1`` says this
run is about the pure twin alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import random
from collections import OrderedDict, UserDict
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from leadtrail.server.simulation import LeadFlowSimulator
from leadtrail.storage import Event, Options, Outcome, ingest, new_event_id, validation
from leadtrail.storage._ingest_py import id_key as pure_id_key
from leadtrail.storage.errors import StorageError
from leadtrail.storage.index import Located, lead_hash
from leadtrail.storage.ulid import id_bytes

TWINS = {"pure": "leadtrail.storage._ingest_py", "compiled": "leadtrail.storage._ingest"}
PURE_ONLY = os.environ.get("LEADTRAIL_PURE") == "1"
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(TWINS[name])
    except ImportError as e:
        if name == "compiled" and PURE_ONLY:
            pytest.skip("LEADTRAIL_PURE=1: the compiled twin is not tested")
        pytest.fail(f"the compiled twin is not built ({e}): run `pip install -e .` with a C compiler")


@pytest.fixture
def pure() -> ModuleType:
    return _load("pure")


@pytest.fixture
def compiled() -> ModuleType:
    return _load("compiled")


def test_the_chooser_honours_leadtrail_pure() -> None:
    expected = "pure" if PURE_ONLY else "compiled"
    assert expected == ingest.IMPLEMENTATION
    assert ingest.COMPILED is (not PURE_ONLY)


# -- strategies -------------------------------------------------------------------------------


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class Dict(dict):  # type: ignore[type-arg]
    pass


class List(list):  # type: ignore[type-arg]
    pass


odd_texts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "\x00", "a\x1fb", "\x7f", "\ud800", "a\udfffb", "é", "名前", "\u2028", "1" * 300]),
    st.text(max_size=4).map(Text),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**400]),
    st.floats(),  # NaN and both infinities included
    st.integers(min_value=-5, max_value=5).map(Number),
    st.floats(allow_nan=True).map(Real),
    st.sampled_from([Outcome.SUCCESS, b"bytes", 1j, object(), {1, 2}]),
    odd_texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.lists(inner, max_size=3).map(List),
        st.dictionaries(odd_texts, inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans()), inner, max_size=2),
        st.dictionaries(odd_texts, inner, max_size=3).map(Dict),
        st.dictionaries(odd_texts, inner, max_size=3).map(OrderedDict),
    ),
    max_leaves=24,
)
objects = st.one_of(
    st.dictionaries(odd_texts, json_values, max_size=6),
    st.dictionaries(st.one_of(odd_texts, st.integers(), st.none()), scalars, max_size=4),
    st.dictionaries(odd_texts, json_values, max_size=4).map(UserDict),
    st.dictionaries(odd_texts, json_values, max_size=4).map(Dict),
    json_values,
)


def _nested(depth: int, leaf: Any = 1, kind: str = "dict") -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if kind == "dict" else [value]
    return value


def _plain(value: Any, depth: int = 0) -> bool:
    """Built of exact dict, list, tuple, str, int, float, bool and None only."""
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(_plain(v, depth + 1) for v in value)
    return False


ADVERSARIAL: list[Any] = [
    {},
    {"": 1},
    {"a" * 256: 1},
    {"a" * 257: 1},
    {"a": float("nan")},
    {"a": float("inf")},
    {"a": -float("inf")},
    {"a": [1.0, float("nan")]},
    {"a": 2**63 - 1, "b": -(2**63)},
    {"a": 2**63},
    {"a": [-(2**63) - 1]},
    {"a": "\ud800"},
    {"a": "\x00\x1f\x7f"},
    {"\ud800": 1},
    {"a": {1: 2}},
    {"a": {"b": {None: 2}}},
    {1: "a"},
    {True: "a"},
    {"a": _nested(30)},
    {"a": _nested(31)},
    {"a": _nested(32)},
    {"a": _nested(33)},
    {"a": _nested(30, kind="list")},
    {"a": _nested(31, kind="list")},
    {"a": _nested(32, kind="list")},
    {"a": _nested(31, leaf=float("nan"))},
    {"a": b"bytes"},
    {"a": {"b": object()}},
    {"a": Outcome.SUCCESS},
    {"a": Text("x")},
    {"a": Real(1.5)},
    {"a": Number(3)},
    {"a": Dict(b=1)},
    {"a": (1, "2", None)},
    UserDict(a=1),
    OrderedDict(a=1),
    Dict(a=1),
    [("a", 1)],
    None,
    "text",
    42,
]


# -- json_object_ok ---------------------------------------------------------------------------


def _assert_agree(pure: ModuleType, compiled: ModuleType, value: Any) -> None:
    by_pure = pure.json_object_ok(value)
    by_compiled = compiled.json_object_ok(value)
    assert isinstance(by_compiled, bool)
    if by_compiled:
        assert by_pure, value  # the compiled twin never admits what the pure one refuses
    if _plain(value):
        assert by_compiled == by_pure, value


@pytest.mark.parametrize("value", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_json_object_ok_agrees_on_adversarial_values(
    pure: ModuleType, compiled: ModuleType, value: Any
) -> None:
    _assert_agree(pure, compiled, value)


def test_json_object_ok_answers_as_the_rules_say(pure: ModuleType, compiled: ModuleType) -> None:
    for twin in (pure, compiled):
        assert twin.json_object_ok({"a": 1, "b": "x", "c": None, "d": True, "e": 1.5, "f": [1, {"g": 2}]})
        assert twin.json_object_ok({"a": _nested(31)})
        assert not twin.json_object_ok({"a": _nested(32)})
        assert not twin.json_object_ok({"a": float("nan")})
        assert not twin.json_object_ok({"a": 2**63})
        assert not twin.json_object_ok({"a" * 257: 1})
        assert not twin.json_object_ok({"a": {1: 1}})
        assert not twin.json_object_ok([1])
    assert pure.json_object_ok(UserDict(a=1))  # any Mapping: the compiled twin leaves it to the pure one
    assert not compiled.json_object_ok(UserDict(a=1))


@PROPERTY
@given(objects)
def test_json_object_ok_agrees_on_generated_values(value: Any) -> None:
    pure, compiled = _load("pure"), _load("compiled")
    _assert_agree(pure, compiled, value)


def test_json_object_ok_agrees_on_simulated_snapshots(pure: ModuleType, compiled: ModuleType) -> None:
    for e in LeadFlowSimulator(seed=7).events(200):
        for value in (e["lead"], e["details"]):
            assert compiled.json_object_ok(value) is pure.json_object_ok(value) is True


# -- plain_fields_ok --------------------------------------------------------------------------


def _event(**changes: Any) -> Event:
    base = Event(
        type="recipient.delivered",
        lead_id="lead-1",
        flow_id="flow-1",
        id="evt_01HQ0000000000000000000001",
        timestamp_ms=1_000,
        entity_id="buyer-1",
        outcome=Outcome.SUCCESS,
        reason="Accepted",
        duration_ms=120,
        integration="buyer_api",
        response_code=200,
        price="25.00",
        account_id="acme",
    )
    return dataclasses.replace(base, **changes)


FIELD_VALUES: dict[str, list[Any]] = {
    "id": ["", None, 0, "evt_01HQ0000000000000000000001", "evt_81HQ0000000000000000000001",
           "evt_01HQ000000000000000000000I", "evt_01hq0000000000000000000001", "evt_01HQ", "x" * 30,
           "evt_01HQ0000000000000000000001\n", Text("evt_01HQ0000000000000000000001"), b"evt_"],
    "type": ["a.b", "a", "a.", ".a", "a..b", "a.b.c", "a_1.b_2", "A.b", "1a.b", "a.1b", "a.b\n", "a-b.c",
             "a." + "b" * 62, "a." + "b" * 63, "", "é.b", Text("a.b"), None],
    "lead_id": ["x", "", "x" * 128, "x" * 129, "a\x00", "a\x7f", "a\u0085", "名", "\u2028", Text("x"), 1],
    "flow_id": ["x", "", "x" * 128, "x" * 129, "a\tb", "é", None],
    "entity_id": ["", "x", "x" * 128, "x" * 129, "\x1f", Text(""), None],
    "integration": ["", "x" * 128, "x" * 129, "\x00", None],
    "reason": ["", "x" * 1024, "x" * 1025, "\n", 5],
    "account_id": ["acme", "a", "a" * 64, "a" * 65, "", "-a", "a-b_c.d", "a b", "é", "A9", Text("acme"),
                   None],
    "timestamp_ms": [None, 0, -1, 253_402_300_799_999, 253_402_300_799_999 + 1, True, 1.0, Number(5), 2**70],
    "outcome": [Outcome.SUCCESS, Outcome.UNSPECIFIED, 1, 9, None, "SUCCESS"],
    "duration_ms": [0, -1, 2**32 - 1, 2**32, True, 1.5, Number(1), 2**64, None],
    "response_code": [0, 200, -1, 2**32, False, "200"],
    "price": ["", "25.00", "-3.5", "+1", ".5", "5.", ".", "-", "+.5", "1e3", "1.2.3", " 1", "1" * 32,
              "1" * 33, "١٢", "1\n", Text("1.0"), None, 1],
}  # fmt: skip
FIELD_CASES = [(name, value) for name, values in FIELD_VALUES.items() for value in values]


def _exact_in_both(name: str, value: Any) -> bool:
    """Where the compiled twin's answer must equal the pure one's: values of plain types,
    but for a price with other than ASCII characters (Python's ``\\d`` takes any script's
    digits; the compiled twin leaves those to the pure one)."""
    if name == "price" and type(value) is str and not value.isascii():
        return False
    return value is None or type(value) in (str, int, bool, bytes, Outcome)


@pytest.mark.parametrize(
    ("name", "value"), FIELD_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FIELD_CASES)]
)
def test_plain_fields_ok_agrees_field_by_field(
    pure: ModuleType, compiled: ModuleType, name: str, value: Any
) -> None:
    e = _event(**{name: value})
    by_pure, by_compiled = pure.plain_fields_ok(e), compiled.plain_fields_ok(e)
    if by_compiled:
        assert by_pure
    if _exact_in_both(name, value):
        assert by_compiled == by_pure, (name, value)


def test_plain_fields_ok_accepts_the_simulation(pure: ModuleType, compiled: ModuleType) -> None:
    for d in LeadFlowSimulator(seed=3).events(200):
        e = Event(
            type=d["type"], lead_id=d["lead_id"], flow_id=d["flow_id"], id=d["id"] or new_event_id(),
            timestamp_ms=d["timestamp_ms"], entity_id=d["entity_id"], outcome=Outcome(d["outcome"]),
            reason=d["reason"], duration_ms=d["duration_ms"], integration=d["integration"],
            response_code=d["response_code"], price=d["price"],
        )  # fmt: skip
        assert compiled.plain_fields_ok(e) is pure.plain_fields_ok(e) is True


@PROPERTY
@given(
    st.sampled_from(sorted(FIELD_VALUES)),
    st.one_of(st.text(max_size=70), st.integers(min_value=-(2**70), max_value=2**70), st.none()),
)
def test_plain_fields_ok_agrees_on_generated_fields(name: str, value: Any) -> None:
    pure, compiled = _load("pure"), _load("compiled")
    e = _event(**{name: value})
    by_pure, by_compiled = pure.plain_fields_ok(e), compiled.plain_fields_ok(e)
    assert by_pure or not by_compiled
    if _exact_in_both(name, value):
        assert by_compiled == by_pure, (name, value)


# -- validation through either twin ----------------------------------------------------------


def _outcome(fn: Callable[[], bytes]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except StorageError as e:
        return type(e).__name__, str(e)
    except Exception as e:  # what orjson raises for a lone surrogate, say: the same for both
        return type(e).__name__, str(e)


@pytest.fixture
def through(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[ModuleType, Event, Options], tuple[str, Any]]]:
    def validate(twin: ModuleType, e: Event, options: Options) -> tuple[str, Any]:
        with monkeypatch.context() as m:
            m.setattr(ingest, "plain_fields_ok", twin.plain_fields_ok)
            m.setattr(ingest, "json_object_ok", twin.json_object_ok)
            return _outcome(lambda: validation.validate_event(3, e, options))

    yield validate


@pytest.mark.parametrize(
    ("name", "value"), FIELD_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(FIELD_CASES)]
)
def test_validation_gives_the_same_verdict_and_error_with_either_twin(
    pure: ModuleType, compiled: ModuleType, through: Any, name: str, value: Any
) -> None:
    e = _event(**{name: value})
    assert through(compiled, e, Options()) == through(pure, e, Options())


@pytest.mark.parametrize("value", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_snapshot_validation_is_the_same_with_either_twin(
    pure: ModuleType, compiled: ModuleType, through: Any, value: Any
) -> None:
    options = Options(max_snapshot_bytes=4096, max_details_bytes=64)
    for e in (_event(lead=value), _event(details=value)):
        assert through(compiled, e, options) == through(pure, e, options)


@PROPERTY
@given(objects)
def test_validation_of_generated_snapshots_is_the_same_with_either_twin(value: Any) -> None:
    pure, compiled = _load("pure"), _load("compiled")
    options = Options(max_snapshot_bytes=512)
    outcomes = []
    for twin in (compiled, pure):
        saved = ingest.plain_fields_ok, ingest.json_object_ok
        ingest.plain_fields_ok, ingest.json_object_ok = twin.plain_fields_ok, twin.json_object_ok
        try:
            outcomes.append(_outcome(lambda: validation.validate_event(0, _event(lead=value), options)))
        finally:
            ingest.plain_fields_ok, ingest.json_object_ok = saved
    assert outcomes[0] == outcomes[1]


# -- id_key -----------------------------------------------------------------------------------


def test_id_key_is_the_prefix_and_the_ids_16_bytes(pure: ModuleType, compiled: ModuleType) -> None:
    ids = [new_event_id() for _ in range(200)]
    ids += [
        "evt_00000000000000000000000000",
        "evt_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "evt_01HQ0000000000000000000001",
    ]
    for event_id in ids:
        for prefix in (b"", b"\x00\x00\x00\x07", b"\xff" * 9):
            expected = prefix + id_bytes(event_id)
            assert pure.id_key(prefix, event_id) == expected
            assert compiled.id_key(prefix, event_id) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "evt_", "evt_8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "evt_0000000000000000000000000I", "x" * 30, "é" * 30],
)
def test_compiled_id_key_refuses_what_is_not_an_id(compiled: ModuleType, bad: str) -> None:
    with pytest.raises(ValueError):
        compiled.id_key(b"", bad)


# -- index_rows -------------------------------------------------------------------------------


def _located(n: int, seed: int) -> list[Located]:
    """Events of several accounts, leads, types and flows, some without an entity or a time,
    a few with times past 48 bits, spread over two segments, half with their ids key made."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        account = rng.choice(["default", "acme", "a.b-c_9"])
        timestamp = rng.choice([None, 0, 1_700_000_000_000 + i, 2**48 + 5, rng.randrange(2**47)])
        e = _event(
            id=new_event_id(),
            account_id=account,
            lead_id=rng.choice(["lead-1", "lead-2", "名前", f"lead-{i}"]),
            type=rng.choice(["a.b", "recipient.delivered", "x.y.z"]),
            flow_id=rng.choice(["flow-1", "flow-2"]),
            entity_id=rng.choice(["", "buyer-1", "buyer-2"]),
            timestamp_ms=timestamp,
        )
        e.position = 1_000 + i
        e.recorded_at_ms = rng.choice([5_000, 5_001, 4_999])
        base = 1_000 if i < n // 2 else 1_000 + n // 2
        id_key = pure_id_key(b"\x00\x00\x00\x01", e.id) if rng.random() < 0.5 else None
        out.append(Located(e, base, 64 + 100 * i, rng.randrange(5_000), id_key))
    return out


def _numbering() -> tuple[Callable[[bytes, str], bytes], list[tuple[bytes, str]]]:
    asked: list[tuple[bytes, str]] = []
    numbers: dict[tuple[bytes, str], bytes] = {}

    def number(kind: bytes, name: str) -> bytes:
        asked.append((kind, name))
        return numbers.setdefault((kind, name), (len(numbers) + 1).to_bytes(4, "big"))

    return number, asked


@pytest.mark.parametrize(("n", "seed"), [(0, 0), (1, 1), (7, 2), (100, 3), (1_000, 4)])
def test_index_rows_are_the_same_from_both_twins(
    pure: ModuleType, compiled: ModuleType, n: int, seed: int
) -> None:
    located = _located(n, seed)
    pure_number, pure_asked = _numbering()
    compiled_number, compiled_asked = _numbering()
    by_pure = pure.index_rows(located, pure_number, lead_hash)
    by_compiled = compiled.index_rows(located, compiled_number, lead_hash)
    assert by_compiled == by_pure
    assert sorted(set(compiled_asked)) == sorted(set(pure_asked))
    assert by_pure[8] == n and by_pure[9] == sum(item.raw_bytes for item in located)


def test_index_rows_hold_the_documented_keys(pure: ModuleType, compiled: ModuleType) -> None:
    e = _event(id="evt_01HQ0000000000000000000001", timestamp_ms=0x0102030405, entity_id="")
    e.position, e.recorded_at_ms = 0x0A0B0C, 77
    item = Located(e, 0x0A0000, 300, 10)
    number, _ = _numbering()
    for twin in (pure, compiled):
        ids, positions, leads, types, times, flows, entities, segacct, added, raw = twin.index_rows(
            [item], number, lead_hash
        )
        acct = number(b"a", "acme")
        value = (0x0102030405).to_bytes(6, "big") + (0x0A0B0C).to_bytes(6, "big")
        assert ids == [(acct + id_bytes(e.id), (0x0A0B0C).to_bytes(6, "big"))]
        assert positions == [
            ((0x0A0000).to_bytes(8, "big"), (0x0B0C).to_bytes(4, "big") + (300).to_bytes(4, "big"))
        ]
        assert leads == [(acct + lead_hash("lead-1"), value)]
        assert types == [(acct + number(b"t", "recipient.delivered"), value)]
        assert times == [(acct, value)]
        assert flows == [(acct + number(b"f", "flow-1"), value)]
        assert entities == []
        assert segacct == {(0x0A0000).to_bytes(8, "big") + acct: (77, 77)}
        assert (added, raw) == (1, 10)


def test_compiled_index_rows_pass_on_errors_of_the_callbacks(compiled: ModuleType) -> None:
    def broken(kind: bytes, name: str) -> bytes:
        raise KeyError(name)

    with pytest.raises(KeyError):
        compiled.index_rows(_located(3, 5), broken, lead_hash)
    with pytest.raises(TypeError):
        compiled.index_rows(_located(3, 5), lambda kind, name: 7, lead_hash)
