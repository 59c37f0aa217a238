"""Aggregate: counts and exact price sums of the matching events, grouped by keys.

The wire spells an outcome key with the enum's name (``OUTCOME_SUCCESS``), which
API.md fixes; the SDK shows it by its short name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from leadtrail.storage import Event, EventFilter, EventLog
from leadtrail.v1 import event_pb2, query_pb2

from .convert import plain_decimal
from .scan import matching_pages
from .status import invalid


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


def aggregate(log: EventLog, f: EventFilter, groups: Sequence[int]) -> query_pb2.AggregateResponse:
    counts: dict[tuple[str, ...], int] = {}
    sums: dict[tuple[str, ...], Decimal] = {}
    for events in matching_pages(log, f, include_lead=False):
        for event in events:
            key = tuple(_group_key(event, g) for g in groups)
            counts[key] = counts.get(key, 0) + 1
            if event.price:
                sums[key] = sums.get(key, Decimal(0)) + Decimal(event.price)
    response = query_pb2.AggregateResponse()
    for key in sorted(counts):
        response.rows.add(keys=key, count=counts[key], price_sum=plain_decimal(sums.get(key, Decimal(0))))
    return response
