"""`leadtrail report` against a real server: revenue, cost and profit per group as a table,
JSON or CSV, every figure equal to an exact Decimal sum of the events appended."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import CLI

FLOW = "flow_report"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
GROUPS = [
    ("buyer_a", "recipient.delivered"),
    ("buyer_b", "recipient.delivered"),
    ("src_acme", "source.accepted"),
    ("src_acme", "source.submitted"),
    ("svc_check", "service.called"),
]


def price(rng: random.Random, entity: str) -> str:
    """Buyers pay (positive), sources are paid (negative), a service sometimes costs and
    sometimes has no price: at scales from 0 to 12 digits, some of them long."""
    if entity.startswith("svc") and rng.random() < 0.5:
        return ""
    scale = rng.choice([0, 1, 2, 2, 3, 4, 8, 12])
    units = rng.randrange(0, 10 ** rng.randint(1, 18))
    text = str(units).rjust(scale + 1, "0")
    amount = f"{text[:-scale]}.{text[-scale:]}" if scale else text
    negative = entity.startswith("src") or (entity.startswith("svc") and rng.random() < 0.8)
    return f"-{amount}" if negative else amount


def journey() -> list[dict[str, Any]]:
    rng = random.Random(17)
    events = []
    for i in range(120):
        entity, type = GROUPS[i % len(GROUPS)]
        event: dict[str, Any] = {
            "type": type,
            "lead_id": f"lead_report_{i % 7}",
            "flow_id": FLOW,
            "entity_id": entity,
            "timestamp": T0 + i * 60_000,
            "outcome": "SUCCESS",
            "lead": {"state": "TX" if i % 3 else "CA"},
        }
        if p := price(rng, entity):
            event["price"] = p
        events.append(event)
    return events


EVENTS = journey()


def expected(
    events: Iterable[dict[str, Any]],
) -> dict[tuple[str, str], tuple[int, Decimal, Decimal, Decimal]]:
    """(count, revenue, cost, profit) per (entity, type), summed exactly."""
    out: dict[tuple[str, str], tuple[int, Decimal, Decimal, Decimal]] = {}
    with localcontext() as exact:
        exact.prec = 200
        for e in events:
            count, revenue, cost, _ = out.get(
                (e["entity_id"], e["type"]), (0, Decimal(0), Decimal(0), Decimal(0))
            )
            value = Decimal(e.get("price", "0"))
            revenue += max(value, Decimal(0))
            cost += min(value, Decimal(0))
            out[(e["entity_id"], e["type"])] = (count + 1, revenue, cost, revenue + cost)
    return out


def total(figures: Iterable[tuple[int, Decimal, Decimal, Decimal]]) -> tuple[int, Decimal, Decimal, Decimal]:
    rows = list(figures)
    with localcontext() as exact:
        exact.prec = 200
        return (
            sum(r[0] for r in rows),
            sum((r[1] for r in rows), Decimal(0)),
            sum((r[2] for r in rows), Decimal(0)),
            sum((r[3] for r in rows), Decimal(0)),
        )


@pytest.fixture(scope="module")
def stored(cli: CLI, server: str) -> str:
    run = cli("append", "--server", server, input="".join(json.dumps(e) + "\n" for e in EVENTS))
    assert run.status == 0, run.stderr
    return server


def test_json_rows_are_the_exact_sums_per_entity_and_type_sorted_by_keys(cli: CLI, stored: str) -> None:
    run = cli("report", "--flow", FLOW, "--format", "json", "--server", stored)
    assert run.status == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [(r["entity"], r["type"]) for r in rows] == sorted(GROUPS)
    got = {(r["entity"], r["type"]): (r["count"], r["revenue_sum"], r["cost_sum"], r["profit"]) for r in rows}
    # Money as exact strings, at the scale of the prices summed: no float ever rounded a
    # 12-digit fraction, and no exponent.
    assert got == {key: written(figures) for key, figures in expected(EVENTS).items()}
    assert next(r for r in rows if r["entity"] == "buyer_a")["cost_sum"] == "0"
    assert next(r for r in rows if r["entity"] == "src_acme")["revenue_sum"] == "0"


def written(figures: tuple[int, Decimal, Decimal, Decimal]) -> tuple[int, str, str, str]:
    count, *money = figures
    revenue, cost, profit = (format(m, "f") for m in money)
    return count, revenue, cost, profit


def test_the_table_shows_every_group_and_a_total_row(cli: CLI, stored: str) -> None:
    run = cli("report", "--flow", FLOW, "--server", stored)
    assert run.status == 0, run.stderr
    lines = [line.split() for line in run.stdout.splitlines() if line.strip()]
    assert lines[0] == ["ENTITY", "TYPE", "EVENTS", "REVENUE", "COST", "PROFIT"]

    def figures(cells: list[str]) -> tuple[int, Decimal, Decimal, Decimal]:
        count, revenue, cost, profit = (c.replace(",", "") for c in cells)
        return int(count), Decimal(revenue), Decimal(cost), Decimal(profit)

    body = [cells for cells in lines[2:] if cells[0] != "TOTAL"]
    assert {(c[0], c[1]): figures(c[2:]) for c in body} == expected(EVENTS)
    assert [(c[0], c[1]) for c in body] == sorted(GROUPS)
    [total_row] = [cells for cells in lines if cells[0] == "TOTAL"]
    assert lines[-1] == total_row
    assert figures(total_row[1:]) == total(expected(EVENTS).values())


def test_csv_has_a_header_and_a_row_per_group_and_the_filters_narrow_it(cli: CLI, stored: str) -> None:
    since, until = T0 + 30 * 60_000, T0 + 90 * 60_000
    run = cli(
        "report", "--by", "type", "--flow", FLOW, "--since", str(since), "--until", str(until),
        "--type", "recipient.*", "--format", "csv", "--server", stored,
    )  # fmt: skip
    assert run.status == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout)))
    assert rows[0] == ["type", "count", "revenue_sum", "cost_sum", "profit"]
    chosen = [
        {**e, "entity_id": ""}
        for e in EVENTS
        if since <= e["timestamp"] < until and e["type"].startswith("recipient.")
    ]
    [(count, revenue, cost, profit)] = expected(chosen).values()
    assert rows[1:] == [["recipient.delivered", str(count), format(revenue, "f"), "0", format(profit, "f")]]
    assert cost == 0


def test_nothing_matching_is_said_on_stderr_or_an_empty_list(cli: CLI, stored: str) -> None:
    table = cli("report", "--flow", "flow_none", "--server", stored)
    assert table.status == 0 and table.stdout == "" and "no events match" in table.stderr
    assert (
        json.loads(cli("report", "--flow", "flow_none", "--format", "json", "--server", stored).stdout) == []
    )
    only_header = cli("report", "--flow", "flow_none", "--format", "csv", "--server", stored)
    assert only_header.stdout == "entity,type,count,revenue_sum,cost_sum,profit\n"


def test_where_rules_choose_the_events_summed(cli: CLI, stored: str) -> None:
    run = cli(
        "report", "--flow", FLOW, "--where", "lead.state==TX", "--where", "price<0",
        "--format", "json", "--server", stored,
    )  # fmt: skip
    assert run.status == 0, run.stderr
    chosen = [e for e in EVENTS if e["lead"]["state"] == "TX" and Decimal(e.get("price", "0")) < 0]
    got = {
        (r["entity"], r["type"]): (r["count"], r["revenue_sum"], r["cost_sum"], r["profit"])
        for r in json.loads(run.stdout)
    }
    assert got == {key: written(figures) for key, figures in expected(chosen).items()}
    assert all(revenue == "0" for _, revenue, _, _ in got.values()) and got
    bad = cli("report", "--where", "lead.state=>TX", "--server", stored)
    assert bad.status == 2 and "--where" in bad.stderr
