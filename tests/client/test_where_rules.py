"""Field rules in the SDK: the command-line forms parse to ``FieldRule``, a malformed rule is a
``ValueError`` naming it, and every filter-taking request carries ``where`` on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from leadtrail.client import EventFilter, FieldRule, RuleOp, parse_rule
from leadtrail.client._convert import (
    aggregate_row_from_proto,
    event_filter_from_proto,
    event_filter_to_proto,
    lead_match_from_proto,
)
from leadtrail.client._requests import (
    aggregate_request,
    export_request,
    find_leads_request,
    query_request,
    subscribe_request,
    timeline_request,
)
from leadtrail.v1 import event_pb2, query_pb2


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("lead.state==TX", FieldRule("lead.state", RuleOp.EQ, ("TX",))),
        ("lead.state != TX", FieldRule("lead.state", RuleOp.NE, ("TX",))),
        ("price<20", FieldRule("price", RuleOp.LT, ("20",))),
        ("price<=20.50", FieldRule("price", RuleOp.LE, ("20.50",))),
        ("duration_ms>100", FieldRule("duration_ms", RuleOp.GT, ("100",))),
        ("lead.score >= -3.5", FieldRule("lead.score", RuleOp.GE, ("-3.5",))),
        ("lead.state in TX, CA", FieldRule("lead.state", RuleOp.IN, ("TX", "CA"))),
        ("reason contains cap reached", FieldRule("reason", RuleOp.CONTAINS, ("cap reached",))),
        ("lead.phone exists", FieldRule("lead.phone", RuleOp.EXISTS)),
        ("lead.phone not exists", FieldRule("lead.phone", RuleOp.NOT_EXISTS)),
        ("details.rule_set==a contains b", FieldRule("details.rule_set", RuleOp.EQ, ("a contains b",))),
        ("lead.appended.phone_check.carrier==X", FieldRule("lead.appended.phone_check.carrier", "==", "X")),
    ],
)
def test_each_command_line_form_parses_and_prints_back(text: str, rule: FieldRule) -> None:
    assert parse_rule(text) == rule
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("lead.state=TX", "use =="),
        ("state==TX", "field 'state' is not lead.<name>"),
        ("lead.==TX", "field 'lead.' is not"),
        ("lead.state in TX,,CA", "an empty value"),
        ("lead.state", "expected FIELD OP VALUE"),
        ("", "expected FIELD OP VALUE"),
    ],
)
def test_a_malformed_rule_is_a_value_error_naming_it(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="rule") as raised:
        parse_rule(text)
    assert f"rule {text!r}" in str(raised.value)
    assert problem in str(raised.value)


def test_a_field_rule_checks_its_operand_count_and_takes_numbers_as_text() -> None:
    assert FieldRule("price", "ge", Decimal("1E+2")).values == ("100",)
    assert FieldRule("lead.score", ">", 7).values == ("7",)
    assert FieldRule("lead.state", "in", ["TX", "CA"]).op is RuleOp.IN
    with pytest.raises(ValueError, match="exists takes no value"):
        FieldRule("lead.phone", RuleOp.EXISTS, ("x",))
    with pytest.raises(ValueError, match="in takes one or more values"):
        FieldRule("lead.state", RuleOp.IN, ())
    with pytest.raises(ValueError, match="rule operator"):
        FieldRule("lead.state", "~", "x")


def test_every_filter_request_carries_the_rules() -> None:
    expected = [event_pb2.FieldRule(field="lead.state", op=event_pb2.RULE_OP_EQ, values=["TX"])]
    both = ["lead.state==TX", FieldRule("price", RuleOp.GE, ("20",))]
    assert list(query_request({"where": "lead.state==TX"}).filter.where) == expected
    assert list(export_request({"where": both}).filter.where)[1].op == event_pb2.RULE_OP_GE
    assert list(aggregate_request({"where": parse_rule("lead.state==TX")}).filter.where) == expected
    assert list(subscribe_request({"where": ["lead.state==TX"]}).filter.where) == expected
    with pytest.raises(ValueError, match=r"rule 'lead\.state=TX'"):
        query_request({"where": "lead.state=TX"})


def test_an_event_filter_keeps_its_rules_over_the_wire() -> None:
    f = EventFilter(types="recipient.*", where=("lead.state in TX,CA", "lead.phone exists"))
    assert f.where == (
        FieldRule("lead.state", RuleOp.IN, ("TX", "CA")),
        FieldRule("lead.phone", RuleOp.EXISTS),
    )
    assert event_filter_from_proto(event_filter_to_proto(f)) == f


def test_aggregate_rows_read_revenue_cost_and_profit_as_decimals() -> None:
    row = aggregate_row_from_proto(
        query_pb2.AggregateRow(
            keys=["source.submitted"],
            count=3,
            price_sum="21.5",
            revenue_sum="25.00",
            cost_sum="-3.5",
            profit="21.5",
        )
    )
    assert (row.revenue_sum, row.cost_sum, row.profit) == (Decimal("25.00"), Decimal("-3.5"), Decimal("21.5"))
    older = aggregate_row_from_proto(query_pb2.AggregateRow(keys=["x"], count=1, price_sum="2"))
    assert (older.revenue_sum, older.cost_sum, older.profit) == (0, 0, 0)


def test_find_leads_takes_exactly_one_value_and_timelines_an_as_of() -> None:
    assert find_leads_request(email="A@x.io") == query_pb2.FindLeadsRequest(field="email", value="A@x.io")
    assert find_leads_request(phone="+1 555").field == "phone"
    assert find_leads_request(field="lead.ssn4", value="1234").value == "1234"
    for wrong in ({}, {"email": "a", "phone": "1"}, {"field": "x"}):
        with pytest.raises(ValueError, match="give"):
            find_leads_request(**wrong)
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    request = timeline_request("lead-1", as_of=moment)
    assert request.HasField("as_of") and request.as_of.ToMilliseconds() == int(moment.timestamp() * 1000)
    assert not timeline_request("lead-1").HasField("as_of")
    match = query_pb2.LeadMatch(lead_id="lead-1", events=4)
    match.first_timestamp.FromMilliseconds(1000)
    match.last_timestamp.FromMilliseconds(2000)
    found = lead_match_from_proto(match)
    assert (found.lead_id, found.events) == ("lead-1", 4)
    assert found.first_timestamp == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
