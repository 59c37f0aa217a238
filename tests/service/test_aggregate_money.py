"""Money by sign in Aggregate: revenue (positive prices), cost (negative prices, as a
negative decimal) and profit (their sum), exact at any scale, against an oracle in
fractions that shares no code or rounding with ``decimal``; through a real store and a
real server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leadtrail.server.aggregates import MoneySums, aggregate
from leadtrail.server.convert import plain_decimal
from leadtrail.storage import Event, EventFilter, EventLog
from leadtrail.v1 import event_pb2, query_pb2, submission_pb2

Stubs = Any  # conftest.Stubs


@st.composite
def prices(draw: st.DrawFn) -> str:
    """A plain decimal string as an event carries it: a sign or none, up to 16 digits
    before the point and up to 15 after (32 characters at most, as validation allows)."""
    whole = draw(st.integers(0, 10**16 - 1))
    scale = draw(st.integers(0, 15))
    fraction = draw(st.integers(0, 10**scale - 1)) if scale else 0
    sign = draw(st.sampled_from(["", "-", "+"]))
    return f"{sign}{whole}" + (f".{fraction:0{scale}d}" if scale else "")


def oracle(values: Sequence[str]) -> tuple[str, str, str, str]:
    """(price_sum, revenue_sum, cost_sum, profit) in fractions, written at the largest
    scale among the values summed ("0" when there are none)."""

    def written(terms: Sequence[str]) -> str:
        if not terms:
            return "0"
        total = sum((Fraction(t) for t in terms), Fraction(0))
        scale = max(len(t.split(".")[1]) if "." in t else 0 for t in terms)
        units = total * 10**scale
        assert units.denominator == 1
        digits = str(abs(units.numerator)).rjust(scale + 1, "0")
        text = digits[:-scale] + "." + digits[-scale:] if scale else digits
        return ("-" if units.numerator < 0 else "") + text

    positive = [v for v in values if Fraction(v) > 0]
    negative = [v for v in values if Fraction(v) < 0]
    signed = positive + negative
    return written(values), written(positive), written(negative), written(signed)


@settings(max_examples=300, deadline=None)
@given(st.lists(prices(), max_size=40))
def test_sums_by_sign_are_exact_at_every_scale(values: list[str]) -> None:
    money = MoneySums()
    for value in values:
        money.add(value)
    got = tuple(plain_decimal(x) for x in (money.price, money.revenue, money.cost, money.profit))
    assert got == oracle(values)


_entity = itertools.count()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventLog]:
    with EventLog.open(tmp_path_factory.mktemp("money")) as log:
        yield log


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.just(""), prices()), min_size=1, max_size=30))
def test_aggregate_rows_hold_the_exact_sums_of_a_stored_group(log: EventLog, values: list[str]) -> None:
    entity = f"entity-{next(_entity)}"
    log.append([Event("buyer.sold", f"lead-{entity}", "flow", entity_id=entity, price=p) for p in values])
    [row] = aggregate(log, EventFilter(entity_id=entity), [query_pb2.GROUP_BY_ENTITY]).rows
    priced = [p for p in values if p]
    assert row.keys == [entity] and row.count == len(values)
    assert (row.price_sum, row.revenue_sum, row.cost_sum, row.profit) == oracle(priced)


def sold(entity: str, type: str, price: str) -> event_pb2.Event:
    event = event_pb2.Event(
        type=type, lead_id=f"lead-{entity}-{type}", flow_id="flow-money", entity_id=entity
    )
    if price:
        event.price = price
    return event


def test_groups_with_only_revenue_only_costs_or_no_prices_over_grpc(stubs: Stubs) -> None:
    events = [
        sold("buyer-a", "buyer.sold", "25.50"),
        sold("buyer-a", "buyer.sold", "0.125"),
        sold("source-b", "source.bought", "-7.25"),
        sold("source-b", "source.bought", "-0.75"),
        sold("filter-c", "filter.checked", ""),
        sold("filter-c", "filter.checked", "0.00"),
        sold("mixed-d", "buyer.sold", "10"),
        sold("mixed-d", "source.bought", "-12.5"),
    ]
    stubs.submission.Append(submission_pb2.AppendRequest(events=events), timeout=60)
    response = stubs.query.Aggregate(
        query_pb2.AggregateRequest(
            filter=event_pb2.EventFilter(flow_id="flow-money"), group_by=[query_pb2.GROUP_BY_ENTITY]
        ),
        timeout=60,
    )
    rows = {
        row.keys[0]: (row.count, row.price_sum, row.revenue_sum, row.cost_sum, row.profit)
        for row in response.rows
    }
    assert rows == {
        "buyer-a": (2, "25.625", "25.625", "0", "25.625"),
        "source-b": (2, "-8.00", "0", "-8.00", "-8.00"),
        "filter-c": (2, "0.00", "0", "0", "0"),
        "mixed-d": (2, "-2.5", "10", "-12.5", "-2.5"),
    }
