"""Aggregate: counts and exact price sums of the matching events, grouped by keys.

A price is money by sign: positive is revenue (what a buyer paid for the lead),
negative is cost (what a source was paid for it). Each group has the sum of all
its prices, of the positive ones (``revenue_sum``), of the negative ones
(``cost_sum``, negative) and their total (``profit``), all exact decimals.

The wire spells an outcome key with the enum's name (``OUTCOME_SUCCESS``), which
API.md fixes; the SDK shows it by its short name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact

import grpc

from leadtrail.storage import Event, EventFilter, EventLog
from leadtrail.v1 import event_pb2, query_pb2

from .convert import plain_decimal
from .scan import matching_pages
from .status import ServiceError, invalid


def _group_key(event: Event, group: int) -> str:
    ts = event.timestamp_ms or 0
    match group:
        case query_pb2.GROUP_BY_TYPE:
            return event.type
        case query_pb2.GROUP_BY_OUTCOME:
            return event_pb2.Outcome.Name(int(event.outcome))  # type: ignore[arg-type]
        case query_pb2.GROUP_BY_FLOW:
            return event.flow_id
        case query_pb2.GROUP_BY_ENTITY:
            return event.entity_id
        case query_pb2.GROUP_BY_HOUR:
            return datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%dT%H:00:00Z")
        case _:
            return datetime.fromtimestamp(ts // 1000, UTC).strftime("%Y-%m-%d")


def check_groups(groups: Sequence[int]) -> None:
    for i, g in enumerate(groups):
        if g not in query_pb2.GroupBy.values() or g == query_pb2.GROUP_BY_UNSPECIFIED:
            raise invalid(f"group_by[{i}]", f"{g} is not a GroupBy value (GROUP_BY_TYPE..GROUP_BY_DAY)")


ANSWER_BYTES = 3 * 1024 * 1024
"""An answer holds at most this much, under gRPC's 4 MB default: Aggregate does not page."""


EXACT = Context(prec=1000, traps=[Inexact])
"""Sums of prices never round: a price has up to 32 digits, past the default context's 28,
and a sum of millions adds a few more; anything inexact raises rather than answer wrong."""


@dataclass
class MoneySums:
    """A group's exact sums of prices: all of them, the positive ones, the negative ones."""

    price: Decimal = Decimal(0)
    revenue: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)

    def add(self, price: str) -> None:
        """Add one event's price (a plain decimal string; empty: no price)."""
        if not price:
            return
        value = Decimal(price)
        self.price = EXACT.add(self.price, value)
        if value > 0:
            self.revenue = EXACT.add(self.revenue, value)
        elif value < 0:
            self.cost = EXACT.add(self.cost, value)

    @property
    def profit(self) -> Decimal:
        return EXACT.add(self.revenue, self.cost)


def aggregate(
    log: EventLog, f: EventFilter, groups: Sequence[int], max_bytes: int = ANSWER_BYTES
) -> query_pb2.AggregateResponse:
    """Counts and sums per group; RESOURCE_EXHAUSTED when the groups would not fit an answer."""
    counts: dict[tuple[str, ...], int] = {}
    sums: dict[tuple[str, ...], MoneySums] = {}
    for events in matching_pages(log, f, include_lead=False):
        for event in events:
            key = tuple(_group_key(event, g) for g in groups)
            counts[key] = counts.get(key, 0) + 1
            if event.price:
                group = sums.get(key)
                if group is None:
                    group = sums[key] = MoneySums()
                group.add(event.price)
    response = query_pb2.AggregateResponse()
    used = 0
    for key in sorted(counts):
        money = sums.get(key) or MoneySums()
        row = response.rows.add(
            keys=key,
            count=counts[key],
            price_sum=plain_decimal(money.price),
            revenue_sum=plain_decimal(money.revenue),
            cost_sum=plain_decimal(money.cost),
            profit=plain_decimal(money.profit),
        )
        used += row.ByteSize() + 4
        if used > max_bytes:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"group_by: {len(counts)} groups are more than one answer holds ({max_bytes} bytes); "
                "narrow the filter or group by fewer keys",
            )
    return response
