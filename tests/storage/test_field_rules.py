"""Field rules (``EventFilter.where``): evaluation against a naive oracle over random snapshots,
the stored form matching as the decoded one, the shape checks, and scans that page through
rule-filtered events, with and without snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leadtrail.storage import Event, EventFilter, EventLog, FieldRule, RuleError, RuleOp
from leadtrail.storage.field_rules import MAX_IN_VALUES, MAX_OPERAND_BYTES, MAX_RULES, personal_rule
from leadtrail.storage.fields import default_classify
from leadtrail.storage.wirebody import of_event

OPERANDS = ("0", "1", "-1", "0.1", "2.50", "2.5", "10", "9", "1e2", "abc", "TX", "true", "false", "")
NAMES = ("a", "b", "c.d")

values = st.one_of(
    st.none(),
    st.booleans(),
    # Mostly values some operand equals, so that every operator meets its edge.
    st.sampled_from([0, 1, -1, 9, 10, 100, 0.1, 2.5, -1.0, 100.0, 1e-7]),
    st.integers(-12, 12),
    st.sampled_from(OPERANDS),
    st.text(alphabet="TXabc19", max_size=3),
    st.lists(st.sampled_from(["TX", 1]), max_size=2),
    st.fixed_dictionaries({"d": st.sampled_from(["TX", 1])}),
)
snapshots = st.dictionaries(st.sampled_from(NAMES), values, min_size=2, max_size=3)
rules = st.builds(
    lambda name, op, operands: (name, op, operands),
    st.sampled_from(NAMES),
    st.sampled_from(list(RuleOp)),
    st.lists(st.sampled_from(OPERANDS), min_size=1, max_size=3),
)


def _number(text: str) -> Fraction | None:
    """The oracle's own reading of a number operand (Fraction, not Decimal)."""
    try:
        as_float = float(text)
    except ValueError:
        return None
    return Fraction(text) if as_float == as_float and abs(as_float) != float("inf") else None


def _oracle_value(snapshot: dict[str, Any], name: str) -> Any:
    if name in snapshot:
        return snapshot[name]
    head, _, rest = name.partition(".")
    inner = snapshot.get(head)
    return inner.get(rest) if rest and isinstance(inner, dict) else None


def _oracle_equal(value: Any, operand: str) -> bool:
    if isinstance(value, str):
        return value == operand
    if isinstance(value, bool):
        return operand == ("true" if value else "false")
    if isinstance(value, int | float):
        number = _number(operand)
        return number is not None and Fraction(repr(value)) == number
    return False


def _oracle_order(value: Any, operand: str) -> int | None:
    if isinstance(value, str):
        return -1 if value < operand else 1 if value > operand else 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = _number(operand)
    if number is None:
        return None
    mine = Fraction(repr(value))
    return -1 if mine < number else 1 if mine > number else 0


def oracle(snapshot: dict[str, Any], name: str, op: RuleOp, operands: list[str]) -> bool:
    value = _oracle_value(snapshot, name)
    if value is None:
        return op is RuleOp.NOT_EXISTS
    if op in (RuleOp.EXISTS, RuleOp.NOT_EXISTS):
        return op is RuleOp.EXISTS
    if op is RuleOp.EQ:
        return _oracle_equal(value, operands[0])
    if op is RuleOp.NE:
        return not _oracle_equal(value, operands[0])
    if op is RuleOp.IN:
        return any(_oracle_equal(value, o) for o in operands)
    if op is RuleOp.CONTAINS:
        return isinstance(value, str) and operands[0] in value
    order = _oracle_order(value, operands[0])
    if order is None:
        return False
    return {RuleOp.LT: order < 0, RuleOp.LE: order <= 0, RuleOp.GT: order > 0, RuleOp.GE: order >= 0}[op]


def _rule(root: str, name: str, op: RuleOp, operands: list[str]) -> FieldRule:
    if op in (RuleOp.EXISTS, RuleOp.NOT_EXISTS):
        operands = []
    elif op is not RuleOp.IN:
        operands = operands[:1]
    return FieldRule(f"{root}.{name}", op, tuple(operands))


def _event(lead: dict[str, Any], details: dict[str, Any] | None = None, **fields: Any) -> Event:
    return Event(
        "source.submitted", "lead-1", "flow-1", lead=lead, details=details or {}, position=1, **fields
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=snapshots, rule=rules)
def test_a_rule_on_the_snapshot_holds_exactly_when_the_naive_oracle_says(
    snapshot: dict[str, Any], rule: tuple[str, RuleOp, list[str]]
) -> None:
    name, op, operands = rule
    made = _rule("lead", name, op, operands)
    expected = oracle(snapshot, name, made.op, list(made.values))
    event = _event(snapshot)
    assert EventFilter(where=(made,)).matches(event) is expected
    # The same rule on details, and on the stored (undecoded) form of the event.
    assert (
        EventFilter(where=(_rule("details", name, op, operands),)).matches(_event({}, snapshot)) is expected
    )
    assert EventFilter(where=(made,)).matches(of_event(event)) is expected


@settings(max_examples=150, deadline=None)
@given(snapshot=snapshots, first=rules, second=rules)
def test_every_rule_of_a_filter_must_hold(
    snapshot: dict[str, Any], first: tuple[str, RuleOp, list[str]], second: tuple[str, RuleOp, list[str]]
) -> None:
    a, b = _rule("lead", *first), _rule("lead", *second)
    expected = oracle(snapshot, first[0], a.op, list(a.values)) and oracle(
        snapshot, second[0], b.op, list(b.values)
    )
    assert EventFilter(where=(a, b)).matches(_event(snapshot)) is expected


def test_price_compares_as_an_exact_decimal_and_event_fields_by_their_kind() -> None:
    event = _event(
        {}, price="25.10", duration_ms=0, reason="daily cap reached", integration="", response_code=0
    )

    def holds(field: str, op: RuleOp, *operands: str) -> bool:
        return EventFilter(where=(FieldRule(field, op, operands),)).matches(event)

    assert holds("price", RuleOp.EQ, "25.1") and holds("price", RuleOp.GT, "25.0999999999999999999")
    assert not holds("price", RuleOp.LT, "25.10") and holds("price", RuleOp.IN, "3", "2.51e1")
    assert holds("price", RuleOp.LE, "25.100") and holds("price", RuleOp.GE, "25.1")
    assert holds("duration_ms", RuleOp.EQ, "0")  # always there
    assert holds("response_code", RuleOp.NOT_EXISTS) and not holds("response_code", RuleOp.NE, "200")
    assert holds("reason", RuleOp.CONTAINS, "cap") and not holds("reason", RuleOp.CONTAINS, "Cap")
    assert holds("integration", RuleOp.NOT_EXISTS) and not holds("integration", RuleOp.EQ, "")
    assert holds("price", RuleOp.NE, "3") and not holds("price", RuleOp.NE, "25.100")
    assert not EventFilter(where=(FieldRule("price", RuleOp.EXISTS),)).matches(_event({}))


def test_a_flat_dotted_name_wins_and_nested_objects_are_followed_otherwise() -> None:
    event = _event({"appended.phone_check.carrier": "Acme", "geo": {"state": "TX", "zip": None}})

    def holds(rule: str, op: RuleOp, *operands: str) -> bool:
        return EventFilter(where=(FieldRule(rule, op, operands),)).matches(event)

    assert holds("lead.appended.phone_check.carrier", RuleOp.EQ, "Acme")
    assert holds("lead.geo.state", RuleOp.EQ, "TX")
    assert holds("lead.geo.zip", RuleOp.NOT_EXISTS)  # null is missing
    assert not holds("lead.geo", RuleOp.EQ, "TX")


@pytest.mark.parametrize(
    ("field", "op", "operands", "problem"),
    [
        ("state", RuleOp.EQ, ("TX",), "field 'state' is not lead.<name>, details.<name> or one of"),
        ("lead.", RuleOp.EQ, ("TX",), "names no field"),
        ("lead.state", 0, ("TX",), "RULE_OP_UNSPECIFIED"),
        ("lead.state", 42, ("TX",), "not a known RuleOp"),
        ("lead.state", RuleOp.EQ, (), "takes exactly one value, 0 given"),
        ("lead.state", RuleOp.EQ, ("a", "b"), "takes exactly one value, 2 given"),
        ("lead.state", RuleOp.EXISTS, ("x",), "takes no value, 1 given"),
        ("lead.state", RuleOp.IN, (), f"IN takes 1 to {MAX_IN_VALUES} values, 0 given"),
        ("lead.state", RuleOp.IN, ("x",) * (MAX_IN_VALUES + 1), f"IN takes 1 to {MAX_IN_VALUES} values"),
        ("lead.note", RuleOp.EQ, ("x" * (MAX_OPERAND_BYTES + 1),), f"over the limit of {MAX_OPERAND_BYTES}"),
        ("price", RuleOp.GE, ("twenty",), "'twenty' is not a number; price compares with an exact decimal"),
        ("duration_ms", RuleOp.LT, ("NaN",), "is not a number"),
        ("response_code", RuleOp.IN, ("200", "x"), "values[1] 'x' is not a number"),
        ("price", RuleOp.CONTAINS, ("1",), "CONTAINS applies to text"),
        ("lead." + "x" * 300, RuleOp.EXISTS, (), "over the limit of 256"),
    ],
)
def test_a_malformed_rule_is_refused_naming_the_problem_and_the_limit(
    field: str, op: Any, operands: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(RuleError) as raised:
        FieldRule(field, op, operands)
    assert problem in raised.value.problem


def test_a_filter_holds_at_most_the_limit_of_rules() -> None:
    rule = FieldRule("lead.state", RuleOp.EXISTS)
    assert len(EventFilter(where=(rule,) * MAX_RULES).where) == MAX_RULES
    with pytest.raises(RuleError, match=f"over the limit of {MAX_RULES}"):
        EventFilter(where=(rule,) * (MAX_RULES + 1))


def test_rules_on_personal_fields_are_found_for_masked_roles() -> None:
    plain = FieldRule("lead.state", RuleOp.EQ, ("TX",))
    assert personal_rule((plain, FieldRule("price", RuleOp.GT, ("1",))), default_classify) is None
    assert personal_rule((plain, FieldRule("lead.contact.email", RuleOp.EXISTS)), default_classify) == 1
    assert personal_rule((FieldRule("details.phone_number", RuleOp.EQ, ("1",)),), default_classify) == 0
    assert personal_rule((FieldRule("lead.ssn", RuleOp.EXISTS),), default_classify) is None  # fingerprints


# -- scans ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EventLog, list[Event]]]:
    path: Path = tmp_path_factory.mktemp("rules") / "data"
    with EventLog.open(path) as log:
        events = [
            Event(
                "source.submitted" if i % 3 else "recipient.delivered",
                f"lead-{i}",
                "flow-1",
                timestamp_ms=1_700_000_000_000 + i * 1000,
                price=str(i - 20),
                lead={"state": ("TX", "CA", "NY")[i % 3], "score": i, "email": f"p{i}@x.io"},
            )
            for i in range(60)
        ]
        log.append(events)
        yield log, log.scan(EventFilter(), limit=1000).events


def test_a_scan_pages_through_the_rule_matches_without_skipping_or_repeating(
    store: tuple[EventLog, list[Event]],
) -> None:
    log, everything = store
    f = EventFilter(
        where=(FieldRule("lead.state", RuleOp.EQ, ("TX",)), FieldRule("price", RuleOp.LT, ("25",)))
    )
    expected = [e.id for e in everything if e.lead["state"] == "TX" and int(e.price) < 25]
    assert len(expected) == 15
    seen: list[str] = []
    cursor = None
    while True:
        page = log.scan(f, after=cursor, limit=4, include_lead=False)
        seen += [e.id for e in page.events]
        assert all(e.lead == {} for e in page.events)  # read for the rule, not answered
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == expected
    stored, _ = log.scan_stored(f, limit=1000)
    assert [e.id for e in stored] == expected


def test_a_cursor_belongs_to_its_rules(store: tuple[EventLog, list[Event]]) -> None:
    log, _ = store
    texas = EventFilter(where=(FieldRule("lead.state", RuleOp.EQ, ("TX",)),))
    page = log.scan(texas, limit=2)
    assert page.cursor is not None
    with pytest.raises(Exception, match="another filter"):
        log.scan(
            EventFilter(where=(FieldRule("lead.state", RuleOp.EQ, ("CA",)),)), after=page.cursor, limit=2
        )
