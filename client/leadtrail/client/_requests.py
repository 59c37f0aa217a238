"""Request building from the keyword arguments of the client methods.

The sync and asyncio clients take the same arguments and send the same
requests; this module is the one place that turns the first into the second.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal, TypedDict

from leadtrail.v1 import event_pb2, query_pb2, stream_pb2

from ._convert import to_timestamp
from ._model import GroupBy, Outcome
from ._rules import FieldRule, field_rule_to_proto, field_rules

ExportFormat = Literal["jsonl", "csv", "parquet"]

_EXPORT_FORMATS = {
    "jsonl": query_pb2.EXPORT_FORMAT_JSONL,
    "csv": query_pb2.EXPORT_FORMAT_CSV,
    "parquet": query_pb2.EXPORT_FORMAT_PARQUET,
}

MAX_PAGE_SIZE = 1000


class EventFilterArgs(TypedDict, total=False):
    """The filter keywords shared by query, export, aggregate and subscribe.

    ``types`` are exact types or prefix patterns (``recipient.*``); an event matches
    any of them. ``start`` is inclusive, ``end`` exclusive, both on ``timestamp``.
    ``where``: field rules that must all hold, each a ``FieldRule`` or its text
    (``"lead.state==TX"``, ``"price>=20"``), one or several.
    """

    types: str | Iterable[str]
    lead_id: str
    flow_id: str
    entity_id: str
    outcomes: Outcome | int | Iterable[Outcome | int]
    start: datetime | None
    end: datetime | None
    where: FieldRule | str | Iterable[FieldRule | str] | None


def event_filter(
    *,
    types: str | Iterable[str] = (),
    lead_id: str = "",
    flow_id: str = "",
    entity_id: str = "",
    outcomes: Outcome | int | Iterable[Outcome | int] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    where: FieldRule | str | Iterable[FieldRule | str] | None = None,
) -> event_pb2.EventFilter:
    # A lone string is one type, not an iterable of one-letter types.
    type_list = [types] if isinstance(types, str) else list(types)
    outcome_list = [outcomes] if isinstance(outcomes, int) else list(outcomes)
    message = event_pb2.EventFilter(
        types=type_list,
        lead_id=lead_id,
        flow_id=flow_id,
        entity_id=entity_id,
        outcomes=[event_pb2.Outcome.ValueType(Outcome(outcome)) for outcome in outcome_list],
        where=[field_rule_to_proto(rule) for rule in field_rules(where)],
    )
    if start is not None:
        message.start.CopyFrom(to_timestamp(start))
    if end is not None:
        message.end.CopyFrom(to_timestamp(end))
    return message


def query_request(
    filter_args: EventFilterArgs,
    *,
    descending: bool = False,
    include_lead: bool = False,
    page_size: int = 100,
    page_token: str = "",
) -> query_pb2.QueryEventsRequest:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be within 1..{MAX_PAGE_SIZE}, not {page_size}")
    return query_pb2.QueryEventsRequest(
        filter=event_filter(**filter_args),
        page_size=page_size,
        page_token=page_token,
        descending=descending,
        include_lead=include_lead,
        json_snapshots=True,
    )


MAX_TIMELINE_PAGE = 1000


def timeline_request(
    lead_id: str, *, page_size: int = 0, page_token: str = "", as_of: datetime | None = None
) -> query_pb2.GetTimelineRequest:
    """``page_size`` steps a page, 0 for the server's default (and maximum) of 1,000;
    ``as_of``: only the steps with ``timestamp <= as_of``."""
    if not 0 <= page_size <= MAX_TIMELINE_PAGE:
        raise ValueError(f"page_size must be within 0..{MAX_TIMELINE_PAGE}, not {page_size}")
    message = query_pb2.GetTimelineRequest(
        lead_id=lead_id, page_size=page_size, page_token=page_token, json_snapshots=True
    )
    if as_of is not None:
        message.as_of.CopyFrom(to_timestamp(as_of))
    return message


def find_leads_request(
    *, email: str | None = None, phone: str | None = None, field: str | None = None, value: str | None = None
) -> query_pb2.FindLeadsRequest:
    """Exactly one of ``email``, ``phone``, or ``field`` with ``value``."""
    given = [email is not None, phone is not None, field is not None or value is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of email, phone, or field with value")
    if email is not None:
        return query_pb2.FindLeadsRequest(field="email", value=email)
    if phone is not None:
        return query_pb2.FindLeadsRequest(field="phone", value=phone)
    if not field or value is None:
        raise ValueError("field and value go together: give both")
    return query_pb2.FindLeadsRequest(field=field, value=value)


def export_request(
    filter_args: EventFilterArgs, *, format: ExportFormat = "jsonl", fields: Iterable[str] = ()
) -> query_pb2.ExportRequest:
    try:
        export_format = _EXPORT_FORMATS[format]
    except KeyError:
        raise ValueError(f"export format must be 'jsonl', 'csv' or 'parquet', not {format!r}") from None
    return query_pb2.ExportRequest(
        filter=event_filter(**filter_args), format=export_format, fields=list(fields)
    )


def _group_by(key: str | GroupBy | int) -> query_pb2.GroupBy.ValueType:
    if isinstance(key, str):
        try:
            key = GroupBy[key.upper()]
        except KeyError:
            names = ", ".join(repr(member.name.lower()) for member in GroupBy)
            raise ValueError(f"unknown group_by {key!r}; expected one of {names}") from None
    return query_pb2.GroupBy.ValueType(GroupBy(key))


def aggregate_request(
    filter_args: EventFilterArgs, group_by: str | GroupBy | Iterable[str | GroupBy] = ("type",)
) -> query_pb2.AggregateRequest:
    keys = [group_by] if isinstance(group_by, str | int) else list(group_by)
    return query_pb2.AggregateRequest(
        filter=event_filter(**filter_args), group_by=[_group_by(key) for key in keys]
    )


SUBSCRIBE_BATCH = 256
"""Events per subscription message: the server sends fewer when fewer are ready, so batching
costs a live subscriber no latency, and a replay pays gRPC's per-message work 256 times less."""


def subscribe_request(
    filter_args: EventFilterArgs,
    *,
    after_position: int | None = None,
    from_start: bool = False,
    from_end: bool = False,
    from_recorded_at: datetime | None = None,
) -> stream_pb2.SubscribeRequest:
    """The first request of a subscription; without a start point it follows new events only."""
    chosen = [
        after_position is not None,
        from_start,
        from_end,
        from_recorded_at is not None,
    ]
    if sum(chosen) > 1:
        raise ValueError("give at most one of after_position, from_start, from_end, from_recorded_at")
    message = stream_pb2.SubscribeRequest(
        filter=event_filter(**filter_args), json_snapshots=True, batch_size=SUBSCRIBE_BATCH
    )
    if after_position is not None:
        if after_position < 0:
            raise ValueError(f"after_position must be >= 0, not {after_position}")
        message.after_position = after_position
    elif from_start:
        message.from_start = True
    elif from_recorded_at is not None:
        message.from_recorded_at.CopyFrom(to_timestamp(from_recorded_at))
    else:
        message.from_end = True
    return message


def resume_request(first: stream_pb2.SubscribeRequest, position: int) -> stream_pb2.SubscribeRequest:
    """The request that continues a subscription after ``position`` with the same filter."""
    message = stream_pb2.SubscribeRequest(json_snapshots=first.json_snapshots, batch_size=first.batch_size)
    message.filter.CopyFrom(first.filter)
    message.after_position = position
    return message


DEFAULT_TARGET = "127.0.0.1:50051"

# Reconnection after a server restart is paced by these channel settings as much
# as by the client's own retry delays: gRPC's defaults (1 s growing to 120 s)
# would leave a restarted server unused for minutes.
DEFAULT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()
