"""Conversion between the client's value types and ``leadtrail.v1`` messages.

Shared by the sync client, the asyncio client and the background appender.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from leadtrail.v1 import (
    admin_pb2,
    alerts_pb2,
    event_pb2,
    exports_pb2,
    query_pb2,
    sinks_pb2,
    stream_pb2,
    submission_pb2,
)

try:  # installed with the server; the SDK works without it, only slower
    import orjson
except ImportError:  # pragma: no cover - exercised by the import-isolation test
    orjson = None  # type: ignore[assignment]

from ._model import (
    AggregateRow,
    Alert,
    AlertKind,
    AlertRule,
    AppendResult,
    CaughtUp,
    ChangeKind,
    Checkpoint,
    Decoders,
    ErasureReport,
    Event,
    EventFilter,
    ExportFile,
    ExportJob,
    FieldChange,
    FieldGroup,
    FieldPolicy,
    FilesTarget,
    GroupBy,
    LeadMatch,
    NatsTarget,
    Outcome,
    RetentionPolicy,
    RetentionReport,
    SignedCheckpoint,
    Sink,
    SinkStatus,
    Stats,
    Timeline,
    TimelineStep,
    VerifyReport,
    WebhookTarget,
    built,
    from_wire,
)
from ._rules import field_rule_from_proto, field_rule_to_proto
from .wire import (
    OUTCOME_WIRE_PREFIX,
    dict_to_struct,
    outcome_name,
    plain_decimal,
    python_to_value,
    struct_to_dict,
    value_to_python,
)
from .wire import field_policy_to_proto as field_policy_to_proto  # importable from here as before
from .wire import from_timestamp as from_timestamp
from .wire import retention_policy_to_proto as retention_policy_to_proto
from .wire import to_timestamp as to_timestamp

# -- times -----------------------------------------------------------------------------------------
# (to_timestamp and from_timestamp live in ``wire``, shared with the server.)


# -- money -----------------------------------------------------------------------------------------


def price_to_str(price: Decimal | None) -> str:
    if price is None:
        return ""
    if not price.is_finite():
        raise ValueError(f"price must be a finite decimal, not {price}")
    # Fixed-point notation: str() would write Decimal("1E+2") as "1E+2".
    return plain_decimal(price)


def price_from_str(text: str) -> Decimal | None:
    return Decimal(text) if text else None


# -- JSON values (google.protobuf.Struct / Value) --------------------------------------------------


def to_struct(mapping: Mapping[str, Any], name: str = "value") -> struct_pb2.Struct:
    """A Struct holding ``mapping``; ``name`` is the root of the path named in a TypeError."""
    struct = struct_pb2.Struct()
    dict_to_struct(mapping, struct, name)
    return struct


def to_value(obj: object, name: str = "value") -> struct_pb2.Value:
    value = struct_pb2.Value()
    python_to_value(obj, value, name)
    return value


from_value = value_to_python
"""The Python value of a Value; an unset Value is None, like a JSON null."""
from_struct = struct_to_dict


# -- JSON snapshots --------------------------------------------------------------------------------
# Snapshots travel as JSON bytes (Event.lead_json / details_json): building or
# reading a Struct of ~30 fields costs tens of microseconds a side in Python,
# JSON a few.


def _check_json(obj: object, path: str) -> None:
    """Raise what ``_fill_value`` would for anything that is not a JSON value."""
    if obj is None or isinstance(obj, str | bool | int):
        return
    if isinstance(obj, float):
        if obj - obj != 0.0:  # NaN and infinities have no JSON form
            raise ValueError(f"{path}: {obj} is not a finite number (JSON has no NaN or Infinity)")
        return
    if isinstance(obj, Mapping):
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a string")
            _check_json(item, f"{path}.{key}")
        return
    if isinstance(obj, list | tuple):
        for index, item in enumerate(obj):
            _check_json(item, f"{path}[{index}]")
        return
    kind = type(obj).__name__
    raise TypeError(f"{path}: {kind} is not a JSON value (use str, number, bool, None, dict or list)")


def to_json(mapping: Mapping[str, Any], name: str) -> bytes:
    """``mapping`` as the bytes of a JSON object; ``name`` is the root of the path in errors."""
    for key, item in mapping.items():  # flat maps of scalars: no call per field
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            if type(key) is not str:
                raise TypeError(f"{name}: key {key!r} is not a string")
            continue
        _check_json({key: item}, name)
    if orjson is not None:
        return orjson.dumps(mapping)
    return json.dumps(mapping, ensure_ascii=False, separators=(",", ":")).encode()


def from_json(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data) if orjson is not None else json.loads(data)
    return value if isinstance(value, dict) else {}


# -- events ----------------------------------------------------------------------------------------


def event_to_proto(event: Event) -> event_pb2.Event:
    """The wire form of an event to append; output-only fields are left out."""
    message = event_pb2.Event(
        id=event.id,
        type=event.type,
        lead_id=event.lead_id,
        flow_id=event.flow_id,
        entity_id=event.entity_id,
        outcome=event_pb2.Outcome.ValueType(event.outcome),
        reason=event.reason,
        duration_ms=event.duration_ms,
        integration=event.integration,
        response_code=event.response_code,
        price=price_to_str(event.price),
    )
    if event.timestamp is not None:
        message.timestamp.CopyFrom(to_timestamp(event.timestamp))
    if event.details:
        message.details_json = to_json(event.details, "details")
    if event.lead:
        message.lead_json = to_json(event.lead, "lead")
    return message


EXACT_FLOAT_MS = 1 << 42
"""Below this many milliseconds since the epoch (year 2109), ``ms / 1000`` is within 1e-6 us of the
time, which ``datetime.fromtimestamp`` rounds to the microsecond: exact, and a third of the cost of
adding a timedelta to the epoch."""


def _datetime_of(value: timestamp_pb2.Timestamp) -> datetime:
    """``from_timestamp``, faster for the times a store holds."""
    ms = value.seconds * 1000 + value.nanos // 1_000_000
    if 0 <= ms < EXACT_FLOAT_MS:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return from_timestamp(value)


def _times(message: event_pb2.Event) -> tuple[datetime | None, datetime | None]:
    return (
        _datetime_of(message.timestamp) if message.HasField("timestamp") else None,
        _datetime_of(message.recorded_at) if message.HasField("recorded_at") else None,
    )


def _details(message: event_pb2.Event) -> dict[str, Any]:
    return from_json(message.details_json) if message.details_json else from_struct(message.details)


def _lead(message: event_pb2.Event) -> dict[str, Any]:
    return from_json(message.lead_json) if message.lead_json else from_struct(message.lead)


_PLAIN_EVENT_FIELDS = (
    "type", "lead_id", "flow_id", "id", "entity_id", "reason", "duration_ms", "integration",
    "response_code", "account_id", "position",
)  # fmt: skip
_read_plain_fields = attrgetter(*_PLAIN_EVENT_FIELDS)
_OUTCOMES = {int(outcome): outcome for outcome in Outcome}


def _plain_values(message: event_pb2.Event) -> tuple[Any, ...]:
    # A newer server may know outcomes this client does not: they read as UNSPECIFIED.
    return (*_read_plain_fields(message), _OUTCOMES.get(message.outcome, Outcome.UNSPECIFIED))


def _price(message: event_pb2.Event) -> Decimal | None:
    return price_from_str(message.price)


# Fields decoded together, so that reading a whole event costs five first reads, not seventeen;
# the times, the price (which may not parse) and each snapshot are decoded only when read.
_PLAIN = FieldGroup((*_PLAIN_EVENT_FIELDS, "outcome"), _plain_values)
_TIMES = FieldGroup(("timestamp", "recorded_at"), _times)
_EVENT_FIELDS: Decoders = {
    **dict.fromkeys(_PLAIN.names, _PLAIN),
    **dict.fromkeys(_TIMES.names, _TIMES),
    "price": _price,
    "details": _details,
    "lead": _lead,
}


def event_from_proto(message: event_pb2.Event) -> Event:
    """The event a read returned; each field is decoded when first read (see ``_model``)."""
    return from_wire(Event, message, _EVENT_FIELDS)


def append_request(events: Iterable[Event]) -> submission_pb2.AppendRequest:
    return submission_pb2.AppendRequest(events=[event_to_proto(event) for event in events])


def append_result_from_proto(message: submission_pb2.AppendResult) -> AppendResult:
    return AppendResult(
        id=message.id,
        position=message.position,
        recorded_at=from_timestamp(message.recorded_at),
        duplicate=message.duplicate,
        conflict=message.conflict,
        chain_hash=message.chain_hash,
    )


# -- query results ---------------------------------------------------------------------------------


_WIRE_OUTCOMES = frozenset(
    name for name in event_pb2.Outcome.DESCRIPTOR.values_by_name if name.startswith(OUTCOME_WIRE_PREFIX)
)


def _change_kind(value: int) -> ChangeKind:
    try:
        return ChangeKind(value)
    except ValueError:
        return ChangeKind.CHANGED


def _field_changes(step: query_pb2.TimelineStep) -> list[FieldChange]:
    return [
        built(
            FieldChange,
            {
                "field": change.field,
                "before": from_value(change.before) if change.HasField("before") else None,
                "after": from_value(change.after) if change.HasField("after") else None,
                "kind": _change_kind(change.kind),
            },
        )
        for change in step.changes
    ]


def _step_event(step: query_pb2.TimelineStep) -> Event:
    return event_from_proto(step.event)


_STEP_FIELDS: Decoders = {
    "event": _step_event,
    "since_previous_ms": attrgetter("since_previous_ms"),
    "changes": _field_changes,
}


def timeline_from_proto(message: query_pb2.Timeline) -> Timeline:
    # Steps, their events and changes are decoded when read: a caller that counts the
    # steps or reads a few fields pays for those only.
    return Timeline(
        lead_id=message.lead_id,
        steps=[from_wire(TimelineStep, step, _STEP_FIELDS) for step in message.steps],
        total_ms=message.total_ms,
        audit=[event_from_proto(event) for event in message.audit],
        next_page_token=message.next_page_token,
    )


def aggregate_row_from_proto(
    message: query_pb2.AggregateRow, group_by: Sequence[int] | None = None
) -> AggregateRow:
    """One row; outcome keys are spelled by their short names (``SUCCESS``) as in every other
    output. With ``group_by`` (the request's), only the outcome column is renamed; without
    it, every key spelled like a wire outcome name is."""
    outcome_columns = (
        range(len(message.keys))
        if group_by is None
        else [i for i, g in enumerate(group_by) if g == query_pb2.GROUP_BY_OUTCOME]
    )
    keys = list(message.keys)
    for i in outcome_columns:
        if i < len(keys) and keys[i] in _WIRE_OUTCOMES:
            keys[i] = outcome_name(event_pb2.Outcome.Value(keys[i]))
    return AggregateRow(
        keys=tuple(keys),
        count=message.count,
        price_sum=_sum(message.price_sum),
        revenue_sum=_sum(message.revenue_sum),
        cost_sum=_sum(message.cost_sum),
        profit=_sum(message.profit),
    )


def _sum(text: str) -> Decimal:
    # A server from before revenue and cost leaves them empty: nothing summed.
    return Decimal(text) if text else Decimal(0)


def lead_match_from_proto(message: query_pb2.LeadMatch) -> LeadMatch:
    return LeadMatch(
        lead_id=message.lead_id,
        first_timestamp=_datetime_of(message.first_timestamp)
        if message.HasField("first_timestamp")
        else None,
        last_timestamp=_datetime_of(message.last_timestamp) if message.HasField("last_timestamp") else None,
        events=message.events,
    )


def subscription_items_from_proto(
    message: stream_pb2.SubscribeResponse,
) -> list[Event | Checkpoint | CaughtUp]:
    """What one server message carries, in order (nothing for a kind newer than this client)."""
    kind = message.WhichOneof("message")
    if kind == "events":
        return [from_wire(Event, event, _EVENT_FIELDS) for event in message.events.events]
    if kind == "event":
        return [event_from_proto(message.event)]
    if kind == "checkpoint":
        return [Checkpoint(message.checkpoint.position)]
    if kind == "caught_up":
        return [CaughtUp(message.caught_up.position)]
    return []


# -- administration --------------------------------------------------------------------------------


def stats_from_proto(message: admin_pb2.Stats) -> Stats:
    values = {item.name: getattr(message, item.name) for item in fields(Stats)}
    values["account_events"] = dict(message.account_events)
    return Stats(**values)


def signed_checkpoint_from_proto(message: admin_pb2.SignedCheckpoint) -> SignedCheckpoint:
    return SignedCheckpoint(
        position=message.position,
        chain_hash=message.chain_hash,
        recorded_at=from_timestamp(message.recorded_at),
        signature=message.signature,
        public_key=message.public_key,
    )


def verify_report_from_proto(message: admin_pb2.VerifyReport) -> VerifyReport:
    return VerifyReport(
        records_checked=message.records_checked,
        problems=list(message.problems),
        quarantined=list(message.quarantined),
        chain_checked=message.chain_checked,
        last_position=message.last_position,
        chain_hash=message.chain_hash,
        first_bad_position=message.first_bad_position,
        retired=list(message.retired),
        content_erased=message.content_erased,
        signatures_checked=message.signatures_checked,
    )


def retention_policy_from_proto(message: admin_pb2.RetentionPolicy) -> RetentionPolicy:
    return RetentionPolicy(
        account_id=message.account_id,
        max_age_days=message.max_age_days,
        legal_hold=message.legal_hold,
        pii_max_age_days=message.pii_max_age_days,
        secret_max_age_days=message.secret_max_age_days,
        max_age_seconds=message.max_age_seconds,
    )


def erasure_report_from_proto(message: admin_pb2.EraseLeadResponse) -> ErasureReport:
    return ErasureReport(
        events_erased=message.events_erased,
        segments_rewritten=message.segments_rewritten,
        dictionaries_replaced=message.dictionaries_replaced,
        audit_event_id=message.audit_event_id,
        audit_position=message.audit_position,
    )


def field_policy_from_proto(message: admin_pb2.FieldPolicy) -> FieldPolicy:
    return FieldPolicy(
        message.account_id,
        tuple(message.secret_fields),
        tuple(message.pii_fields),
        tuple(message.plain_fields),
    )


def retention_report_from_proto(message: admin_pb2.ApplyRetentionResponse) -> RetentionReport:
    return RetentionReport(
        events_removed=message.events_removed,
        segments_deleted=message.segments_deleted,
        segments_rewritten=message.segments_rewritten,
        bytes_freed=message.bytes_freed,
        events_scrubbed=message.events_scrubbed,
    )


# -- alerts ----------------------------------------------------------------------------------------


def event_filter_to_proto(f: EventFilter) -> event_pb2.EventFilter:
    message = event_pb2.EventFilter(
        types=f.types,
        lead_id=f.lead_id,
        flow_id=f.flow_id,
        entity_id=f.entity_id,
        outcomes=[event_pb2.Outcome.ValueType(o) for o in f.outcomes],
        where=[field_rule_to_proto(rule) for rule in f.where],
    )
    if f.start is not None:
        message.start.CopyFrom(to_timestamp(f.start))
    if f.end is not None:
        message.end.CopyFrom(to_timestamp(f.end))
    return message


def event_filter_from_proto(message: event_pb2.EventFilter) -> EventFilter:
    return EventFilter(
        types=tuple(message.types),
        lead_id=message.lead_id,
        flow_id=message.flow_id,
        entity_id=message.entity_id,
        outcomes=tuple(Outcome(o) for o in message.outcomes),
        start=from_timestamp(message.start) if message.HasField("start") else None,
        end=from_timestamp(message.end) if message.HasField("end") else None,
        where=tuple(field_rule_from_proto(rule) for rule in message.where),
    )


def alert_rule_to_proto(rule: AlertRule) -> alerts_pb2.AlertRule:
    """The rule as ``SetAlertRule`` takes it (the server-set fields are not sent)."""
    message = alerts_pb2.AlertRule(
        name=rule.name,
        kind=alerts_pb2.AlertKind.ValueType(rule.kind),
        filter=event_filter_to_proto(rule.filter),
        threshold=price_to_str(rule.threshold),
        window_s=rule.window_s,
        min_events=rule.min_events,
        baseline_windows=rule.baseline_windows,
        group_by=query_pb2.GroupBy.ValueType(rule.group_by or 0),
        webhook_url=rule.webhook_url,
        webhook_secret=rule.webhook_secret,
        description=rule.description,
    )
    if rule.base is not None:
        message.base.CopyFrom(event_filter_to_proto(rule.base))
    return message


def _alert_kind(value: int) -> AlertKind | None:
    try:
        return AlertKind(value)
    except ValueError:  # a kind newer than this SDK
        return None


def alert_rule_from_proto(message: alerts_pb2.AlertRule) -> AlertRule:
    group: GroupBy | None = GroupBy(message.group_by) if message.group_by else None
    return AlertRule(
        name=message.name,
        kind=AlertKind(message.kind),
        filter=event_filter_from_proto(message.filter),
        base=event_filter_from_proto(message.base) if message.HasField("base") else None,
        threshold=price_from_str(message.threshold),
        window_s=message.window_s,
        min_events=message.min_events,
        baseline_windows=message.baseline_windows,
        group_by=group,
        webhook_url=message.webhook_url,
        description=message.description,
        webhook_secret_set=message.webhook_secret_set,
        set_at=from_timestamp(message.set_at) if message.HasField("set_at") else None,
        set_after_position=message.set_after_position,
    )


def alert_from_proto(message: alerts_pb2.Alert) -> Alert:
    return Alert(
        rule=message.rule,
        group=message.group,
        firing=message.firing,
        fired_at=from_timestamp(message.fired_at) if message.HasField("fired_at") else None,
        resolved_at=from_timestamp(message.resolved_at) if message.HasField("resolved_at") else None,
        value=price_from_str(message.value),
        event_id=message.event_id,
        kind=_alert_kind(message.kind),
        resolved_event_id=message.resolved_event_id,
        reason=message.reason,
        lead_id=message.lead_id,
    )


# -- sinks -----------------------------------------------------------------------------------------

_FILE_FORMATS = {"jsonl": query_pb2.EXPORT_FORMAT_JSONL, "csv": query_pb2.EXPORT_FORMAT_CSV, "parquet": 3}
_FILE_FORMAT_NAMES = {number: name for name, number in _FILE_FORMATS.items()}


def sink_to_proto(sink: Sink) -> sinks_pb2.Sink:
    """The sink as ``SetSink`` takes it (the server-set fields are not sent)."""
    message = sinks_pb2.Sink(name=sink.name, filter=event_filter_to_proto(sink.filter), masked=sink.masked)
    if sink.start == "start":
        message.from_start = True
    elif sink.start == "end":
        message.from_end = True
    elif isinstance(sink.start, int):
        message.after_position = sink.start
    target = sink.target
    if isinstance(target, NatsTarget):
        message.nats.CopyFrom(
            sinks_pb2.NatsTarget(
                servers=target.servers,
                stream=target.stream,
                subject_prefix=target.subject_prefix,
                replicas=target.replicas,
                duplicate_window_s=target.duplicate_window_s,
            )
        )
    elif isinstance(target, WebhookTarget):
        message.webhook.CopyFrom(
            sinks_pb2.WebhookTarget(
                url=target.url,
                secret=target.secret,
                batch_size=target.batch_size,
                max_wait_ms=target.max_wait_ms,
            )
        )
    elif isinstance(target, FilesTarget):
        try:
            file_format = _FILE_FORMATS[target.format.lower()]
        except KeyError:
            raise ValueError(
                f"files format must be 'jsonl', 'csv' or 'parquet', not {target.format!r}"
            ) from None
        message.files.CopyFrom(
            sinks_pb2.FilesTarget(
                directory=target.directory,
                format=query_pb2.ExportFormat.ValueType(file_format),
                rotate_events=target.rotate_events,
                rotate_seconds=target.rotate_seconds,
                fields=target.fields,
            )
        )
    else:
        raise TypeError(f"Sink.target must be a NatsTarget, WebhookTarget or FilesTarget, not {target!r}")
    return message


def sink_from_proto(message: sinks_pb2.Sink) -> Sink:
    kind = message.WhichOneof("target")
    target: NatsTarget | WebhookTarget | FilesTarget
    if kind == "nats":
        t = message.nats
        target = NatsTarget(tuple(t.servers), t.stream, t.subject_prefix, t.replicas, t.duplicate_window_s)
    elif kind == "webhook":
        w = message.webhook
        target = WebhookTarget(
            w.url, batch_size=w.batch_size, max_wait_ms=w.max_wait_ms, secret_set=w.secret_set
        )
    else:
        f = message.files
        target = FilesTarget(
            f.directory,
            _FILE_FORMAT_NAMES.get(f.format, str(f.format)),
            f.rotate_events,
            f.rotate_seconds,
            tuple(f.fields),
        )
    return Sink(
        name=message.name,
        target=target,
        filter=event_filter_from_proto(message.filter),
        masked=message.masked,
        set_at=from_timestamp(message.set_at) if message.HasField("set_at") else None,
    )


def sink_status_from_proto(message: sinks_pb2.SinkStatus) -> SinkStatus:
    return SinkStatus(
        name=message.name,
        delivered_position=message.delivered_position,
        lag_events=message.lag_events,
        delivered_total=message.delivered_total,
        state=message.state,
        last_error=message.last_error,
        last_error_at=from_timestamp(message.last_error_at) if message.HasField("last_error_at") else None,
    )


# -- scheduled exports -----------------------------------------------------------------------------

_JOB_FORMATS = {
    "jsonl": query_pb2.EXPORT_FORMAT_JSONL,
    "csv": query_pb2.EXPORT_FORMAT_CSV,
    "parquet": query_pb2.EXPORT_FORMAT_PARQUET,
}


def export_job_to_proto(job: ExportJob) -> exports_pb2.ExportJob:
    """The job as ``SetExportJob`` takes it (the server-set fields are not sent)."""
    return exports_pb2.ExportJob(
        name=job.name,
        filter=event_filter_to_proto(job.filter),
        format=_JOB_FORMATS[job.format],
        fields=list(job.fields),
        every_s=job.every_s,
        lookback_s=job.lookback_s,
        keep_days=job.keep_days,
        masked=job.masked,
    )


def export_job_from_proto(message: exports_pb2.ExportJob) -> ExportJob:
    names = {number: name for name, number in _JOB_FORMATS.items()}
    return ExportJob(
        name=message.name,
        format=names.get(message.format, "jsonl"),
        every_s=message.every_s,
        keep_days=message.keep_days,
        filter=event_filter_from_proto(message.filter),
        fields=tuple(message.fields),
        lookback_s=message.lookback_s,
        masked=message.masked,
        set_at=from_timestamp(message.set_at) if message.HasField("set_at") else None,
        last_run_at=from_timestamp(message.last_run_at) if message.HasField("last_run_at") else None,
        next_run_at=from_timestamp(message.next_run_at) if message.HasField("next_run_at") else None,
    )


def export_file_from_proto(message: exports_pb2.ExportFile) -> ExportFile:
    return ExportFile(
        name=message.name,
        size=message.bytes,
        rows=message.rows,
        sha256=message.sha256,
        created_at=from_timestamp(message.created_at) if message.HasField("created_at") else None,
        expires_at=from_timestamp(message.expires_at) if message.HasField("expires_at") else None,
    )
