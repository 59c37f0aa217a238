"""The reports page: counts by type x outcome, money by source and by recipient, over a range.

Each table is one ``Aggregate`` call (the caller's right, scope and read audit apply); money
comes as the exact decimal strings the server sums (``revenue_sum``, ``cost_sum``,
``profit``; ``price_sum`` where a server does not split them yet). The chart is plain SVG
drawn here (bars sized by the values), and every table is also a CSV download.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from leadtrail.client.wire import ms_to_timestamp, outcome_name
from leadtrail.server.status import invalid
from leadtrail.v1 import event_pb2, query_pb2

TABLES = ("outcomes", "sources", "recipients")
MONEY_COLUMNS = ("events", "revenue", "cost", "profit", "price sum")
ENTITY_TYPES = {"sources": "source.*", "recipients": "recipient.*"}
CHART_WIDTH = 480
BAR_HEIGHT = 18
LABEL_WIDTH = 200
MAX_BARS = 30


def moment(name: str, text: str) -> int | None:
    """``since``/``until`` as UTC ms: empty, milliseconds, a date or an ISO 8601 time (UTC
    unless it says otherwise); anything else is INVALID_ARGUMENT naming the parameter."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(name, f"{text!r} is not a time (2026-12-03, 2026-12-03T10:00:00Z or UTC ms)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class Range:
    since_ms: int | None
    until_ms: int | None

    def filter(self, types: tuple[str, ...] = ()) -> event_pb2.EventFilter:
        f = event_pb2.EventFilter(types=types)
        if self.since_ms is not None:
            ms_to_timestamp(self.since_ms, f.start)
        if self.until_ms is not None:
            ms_to_timestamp(self.until_ms, f.end)
        return f


def requests(span: Range) -> dict[str, query_pb2.AggregateRequest]:
    """The Aggregate call of each table."""
    return {
        "outcomes": query_pb2.AggregateRequest(
            filter=span.filter(), group_by=[query_pb2.GROUP_BY_TYPE, query_pb2.GROUP_BY_OUTCOME]
        ),
        **{
            table: query_pb2.AggregateRequest(
                filter=span.filter((types,)), group_by=[query_pb2.GROUP_BY_ENTITY]
            )
            for table, types in ENTITY_TYPES.items()
        },
    }


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def csv(self) -> str:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return text.getvalue()


def _outcome_label(key: str) -> str:
    return outcome_name(int(key)) if key.lstrip("-").isdigit() else key.removeprefix("OUTCOME_")


def outcomes_table(response: query_pb2.AggregateResponse) -> Table:
    """Types down, outcomes across, counts in the cells."""
    counts: dict[str, dict[str, int]] = {}
    seen: list[str] = []
    for row in response.rows:
        type_, outcome = row.keys[0], _outcome_label(row.keys[1])
        counts.setdefault(type_, {})[outcome] = row.count
        if outcome not in seen:
            seen.append(outcome)
    order = ["SUCCESS", "FAILURE", "ERROR", "SKIP", "UNSPECIFIED"]
    outcomes = sorted(seen, key=lambda o: (order.index(o) if o in order else len(order), o))
    table = Table("outcomes", ["type", *(o.lower() for o in outcomes), "total"])
    for type_ in sorted(counts):
        cells = [counts[type_].get(o, 0) for o in outcomes]
        table.rows.append([type_, *(str(n) for n in cells), str(sum(cells))])
    return table


def money_table(name: str, response: query_pb2.AggregateResponse) -> Table:
    """Entities down: events, revenue, cost, profit (exact, as the server summed them)."""
    table = Table(name, ["entity", *MONEY_COLUMNS])
    rows = sorted(response.rows, key=lambda r: (-_decimal(r.profit or r.price_sum), r.keys[0]))
    for row in rows:
        table.rows.append(
            [
                row.keys[0] or "(none)",
                str(row.count),
                row.revenue_sum,
                row.cost_sum,
                row.profit,
                row.price_sum,
            ]
        )
    return table


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text) if text else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


@dataclass(frozen=True)
class Bar:
    label: str
    value: str
    x: int
    y: int
    width: int
    negative: bool


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    height: int
    zero_x: int
    width: int = LABEL_WIDTH + CHART_WIDTH + 120


def chart(title: str, values: list[tuple[str, str]]) -> Chart:
    """Horizontal bars from a zero line: negative values (a loss) go left of it."""
    values = values[:MAX_BARS]
    numbers = [_decimal(v) for _, v in values]
    low, high = min([Decimal(0), *numbers]), max([Decimal(0), *numbers])
    span = (high - low) or Decimal(1)
    zero_x = LABEL_WIDTH + int((-low) / span * CHART_WIDTH)
    bars = []
    for i, ((label, text), number) in enumerate(zip(values, numbers, strict=True)):
        size = int(abs(number) / span * CHART_WIDTH)
        x = zero_x - size if number < 0 else zero_x
        bars.append(Bar(label, text, x, 10 + i * (BAR_HEIGHT + 6), max(size, 1), number < 0))
    return Chart(title, bars, 20 + len(values) * (BAR_HEIGHT + 6), zero_x)


def charts(tables: dict[str, Table]) -> list[Chart]:
    out = []
    outcomes = tables.get("outcomes")
    if outcomes is not None:
        out.append(chart("Events by type", [(row[0], row[-1]) for row in outcomes.rows]))
    for name in ("sources", "recipients"):
        table = tables.get(name)
        if table is not None:
            # profit, or the price sum of a server that does not split revenue from cost
            out.append(chart(f"Profit by {name[:-1]}", [(row[0], row[4] or row[5]) for row in table.rows]))
    return out
