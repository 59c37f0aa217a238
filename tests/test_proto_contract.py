"""The ``leadtrail.v1`` wire contract of API.md, checked against the generated code.

Clients find messages, enums and services by their full names, so every name
API.md fixes must exist top-level in the package with the documented fields,
enum values and RPC shapes; and the committed generated code must match what
``proto/generate.py`` produces from the ``.proto`` files.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    ServiceDescriptor,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "leadtrail.v1"
MODULES = ("event", "submission", "query", "stream", "admin", "alerts", "sinks", "exports")

for _module in MODULES:
    # Importing a generated module registers its file in the default pool.
    importlib.import_module(f"{PACKAGE}.{_module}_pb2")
    importlib.import_module(f"{PACKAGE}.{_module}_pb2_grpc")

POOL = descriptor_pool.Default()

F = FieldDescriptor
STRING, BYTES, BOOL = F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_BOOL
UINT32, UINT64, INT64, DOUBLE = F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_INT64, F.TYPE_DOUBLE
TIMESTAMP = "google.protobuf.Timestamp"
STRUCT = "google.protobuf.Struct"
VALUE = "google.protobuf.Value"


def ours(name: str) -> str:
    return f"{PACKAGE}.{name}"


# A field's expected type: a scalar FieldDescriptor.TYPE_* or the full name of
# a message or enum; wrapped in a list when the field is repeated.
FieldType = int | str | list[int] | list[str]

MESSAGES: dict[str, dict[str, FieldType]] = {
    "Event": {
        "id": STRING,
        "type": STRING,
        "timestamp": TIMESTAMP,
        "recorded_at": TIMESTAMP,
        "position": UINT64,
        "account_id": STRING,
        "lead_id": STRING,
        "flow_id": STRING,
        "entity_id": STRING,
        "outcome": ours("Outcome"),
        "reason": STRING,
        "duration_ms": UINT32,
        "integration": STRING,
        "response_code": UINT32,
        "price": STRING,
        "details": STRUCT,
        "lead": STRUCT,
    },
    "EventFilter": {
        "types": [STRING],
        "lead_id": STRING,
        "flow_id": STRING,
        "entity_id": STRING,
        "outcomes": [ours("Outcome")],
        "start": TIMESTAMP,
        "end": TIMESTAMP,
        "where": [ours("FieldRule")],
    },
    "FieldRule": {"field": STRING, "op": ours("RuleOp"), "values": [STRING]},
    "FindLeadsRequest": {"field": STRING, "value": STRING},
    "FindLeadsResponse": {"leads": [ours("LeadMatch")]},
    "LeadMatch": {
        "lead_id": STRING,
        "first_timestamp": TIMESTAMP,
        "last_timestamp": TIMESTAMP,
        "events": UINT64,
    },
    "AppendRequest": {"events": [ours("Event")]},
    "AppendResponse": {"results": [ours("AppendResult")]},
    "AppendResult": {
        "id": STRING,
        "position": UINT64,
        "recorded_at": TIMESTAMP,
        "duplicate": BOOL,
    },
    "GetEventRequest": {"id": STRING},
    "GetTimelineRequest": {"lead_id": STRING, "as_of": TIMESTAMP, "page_size": UINT32, "page_token": STRING},
    "Timeline": {
        "lead_id": STRING,
        "steps": [ours("TimelineStep")],
        "total_ms": INT64,
        "next_page_token": STRING,
    },
    "TimelineStep": {
        "event": ours("Event"),
        "since_previous_ms": INT64,
        "changes": [ours("FieldChange")],
    },
    "FieldChange": {
        "field": STRING,
        "before": VALUE,
        "after": VALUE,
        "kind": ours("ChangeKind"),
    },
    "QueryEventsRequest": {
        "filter": ours("EventFilter"),
        "page_size": UINT32,
        "page_token": STRING,
        "descending": BOOL,
        "include_lead": BOOL,
    },
    "QueryEventsResponse": {"events": [ours("Event")], "next_page_token": STRING},
    "ExportRequest": {
        "filter": ours("EventFilter"),
        "format": ours("ExportFormat"),
        "fields": [STRING],
    },
    "ExportChunk": {"data": BYTES},
    # API.md "Additions": sinks and scheduled exports
    "Sink": {
        "name": STRING,
        "filter": ours("EventFilter"),
        "from_start": BOOL,
        "from_end": BOOL,
        "after_position": UINT64,
        "masked": BOOL,
        "nats": ours("NatsTarget"),
        "webhook": ours("WebhookTarget"),
        "files": ours("FilesTarget"),
    },
    "NatsTarget": {"servers": [STRING], "stream": STRING, "subject_prefix": STRING},
    "WebhookTarget": {"url": STRING, "secret": STRING, "batch_size": UINT32, "max_wait_ms": UINT32},
    "FilesTarget": {
        "directory": STRING,
        "format": ours("ExportFormat"),
        "rotate_events": UINT32,
        "rotate_seconds": UINT32,
    },
    "ListSinksResponse": {"sinks": [ours("Sink")]},
    "DeleteSinkRequest": {"name": STRING},
    "GetSinkStatusRequest": {"name": STRING},
    "SinkStatus": {
        "name": STRING,
        "delivered_position": UINT64,
        "lag_events": UINT64,
        "delivered_total": UINT64,
        "state": STRING,
        "last_error": STRING,
        "last_error_at": TIMESTAMP,
    },
    "ExportJob": {
        "name": STRING,
        "filter": ours("EventFilter"),
        "format": ours("ExportFormat"),
        "fields": [STRING],
        "every_s": UINT32,
        "lookback_s": UINT32,
        "keep_days": UINT32,
        "masked": BOOL,
    },
    "DeleteExportJobRequest": {"name": STRING},
    "RunExportJobRequest": {"name": STRING},
    "ListExportFilesRequest": {"job": STRING},
    "ListExportFilesResponse": {"files": [ours("ExportFile")]},
    "ExportFile": {
        "name": STRING,
        "bytes": UINT64,
        "rows": UINT64,
        "sha256": STRING,
        "created_at": TIMESTAMP,
        "expires_at": TIMESTAMP,
    },
    "DownloadExportFileRequest": {"job": STRING, "file": STRING},
    "AggregateRequest": {"filter": ours("EventFilter"), "group_by": [ours("GroupBy")]},
    "AggregateRow": {
        "keys": [STRING],
        "count": UINT64,
        "price_sum": STRING,
        "revenue_sum": STRING,
        "cost_sum": STRING,
        "profit": STRING,
    },
    "AggregateResponse": {"rows": [ours("AggregateRow")]},
    "SubscribeRequest": {
        "filter": ours("EventFilter"),
        "after_position": UINT64,
        "from_start": BOOL,
        "from_end": BOOL,
        "from_recorded_at": TIMESTAMP,
    },
    "SubscribeResponse": {
        "event": ours("Event"),
        "checkpoint": ours("Checkpoint"),
        "caught_up": ours("CaughtUp"),
    },
    "Checkpoint": {"position": UINT64},
    "CaughtUp": {},
    "GetStatsRequest": {},
    "Stats": {
        "event_count": UINT64,
        "last_position": UINT64,
        "segment_count": UINT32,
        "disk_bytes": UINT64,
        "raw_bytes": UINT64,
        "log_bytes": UINT64,
        "index_bytes": UINT64,
        "dictionary_bytes": UINT64,
        "bytes_per_event": DOUBLE,
        "compression_ratio": DOUBLE,
        "dictionaries": UINT32,
        "fsync_policy": STRING,
        "writable": BOOL,
    },
    "RetentionPolicy": {
        "account_id": STRING,
        "max_age_days": UINT32,
        "legal_hold": BOOL,
        "max_age_seconds": UINT32,
    },
    "ApplyRetentionRequest": {"now": TIMESTAMP},
    "ApplyRetentionResponse": {
        "events_removed": UINT64,
        "segments_deleted": UINT64,
        "segments_rewritten": UINT64,
        "bytes_freed": UINT64,
    },
    "VerifyRequest": {},
    "VerifyReport": {
        "records_checked": UINT64,
        "problems": [STRING],
        "quarantined": [STRING],
    },
}

ENUMS: dict[str, list[str]] = {
    "Outcome": [
        "OUTCOME_UNSPECIFIED",
        "OUTCOME_SUCCESS",
        "OUTCOME_FAILURE",
        "OUTCOME_ERROR",
        "OUTCOME_SKIP",
    ],
    "ChangeKind": [
        "CHANGE_KIND_UNSPECIFIED",
        "CHANGE_KIND_ADDED",
        "CHANGE_KIND_CHANGED",
        "CHANGE_KIND_REMOVED",
    ],
    "ExportFormat": [
        "EXPORT_FORMAT_UNSPECIFIED",
        "EXPORT_FORMAT_JSONL",
        "EXPORT_FORMAT_CSV",
        "EXPORT_FORMAT_PARQUET",
    ],
    "RuleOp": [
        "RULE_OP_UNSPECIFIED",
        "RULE_OP_EQ",
        "RULE_OP_NE",
        "RULE_OP_LT",
        "RULE_OP_LE",
        "RULE_OP_GT",
        "RULE_OP_GE",
        "RULE_OP_IN",
        "RULE_OP_CONTAINS",
        "RULE_OP_EXISTS",
        "RULE_OP_NOT_EXISTS",
    ],
    "GroupBy": [
        "GROUP_BY_UNSPECIFIED",
        "GROUP_BY_TYPE",
        "GROUP_BY_OUTCOME",
        "GROUP_BY_FLOW",
        "GROUP_BY_ENTITY",
        "GROUP_BY_HOUR",
        "GROUP_BY_DAY",
    ],
}

ONEOFS: dict[str, dict[str, set[str]]] = {
    "SubscribeRequest": {
        "start": {"after_position", "from_start", "from_end", "from_recorded_at"},
    },
    "SubscribeResponse": {"message": {"event", "checkpoint", "caught_up"}},
    "Sink": {"start": {"from_start", "from_end", "after_position"}, "target": {"nats", "webhook", "files"}},
}
# Sent only to a subscriber that sets SubscribeRequest.batch_size.
ONEOF_EXTENSIONS: dict[str, set[str]] = {"SubscribeResponse": {"events"}}

# (request, response, client streaming, server streaming) per RPC.
SERVICES: dict[str, dict[str, tuple[str, str, bool, bool]]] = {
    "SubmissionService": {
        "Append": ("AppendRequest", "AppendResponse", False, False),
        "AppendStream": ("AppendRequest", "AppendResponse", True, True),
    },
    "QueryService": {
        "GetEvent": ("GetEventRequest", "Event", False, False),
        "GetTimeline": ("GetTimelineRequest", "Timeline", False, False),
        "QueryEvents": ("QueryEventsRequest", "QueryEventsResponse", False, False),
        "Export": ("ExportRequest", "ExportChunk", False, True),
        "Aggregate": ("AggregateRequest", "AggregateResponse", False, False),
        "FindLeads": ("FindLeadsRequest", "FindLeadsResponse", False, False),
    },
    "StreamService": {
        "Subscribe": ("SubscribeRequest", "SubscribeResponse", False, True),
    },
    "AdminService": {
        "GetStats": ("GetStatsRequest", "Stats", False, False),
        "SetRetentionPolicy": ("RetentionPolicy", "SetRetentionPolicyResponse", False, False),
        "ApplyRetention": ("ApplyRetentionRequest", "ApplyRetentionResponse", False, False),
        "Verify": ("VerifyRequest", "VerifyReport", False, False),
    },
    # API.md "Additions"
    "AlertService": {
        "SetAlertRule": ("AlertRule", "AlertRule", False, False),
        "ListAlertRules": ("ListAlertRulesRequest", "ListAlertRulesResponse", False, False),
        "DeleteAlertRule": ("DeleteAlertRuleRequest", "DeleteAlertRuleResponse", False, False),
        "ListAlerts": ("ListAlertsRequest", "ListAlertsResponse", False, False),
    },
    "SinkService": {
        "SetSink": ("Sink", "Sink", False, False),
        "ListSinks": ("ListSinksRequest", "ListSinksResponse", False, False),
        "DeleteSink": ("DeleteSinkRequest", "DeleteSinkResponse", False, False),
        "GetSinkStatus": ("GetSinkStatusRequest", "SinkStatus", False, False),
    },
    "ExportService": {
        "SetExportJob": ("ExportJob", "ExportJob", False, False),
        "ListExportJobs": ("ListExportJobsRequest", "ListExportJobsResponse", False, False),
        "DeleteExportJob": ("DeleteExportJobRequest", "DeleteExportJobResponse", False, False),
        "RunExportJob": ("RunExportJobRequest", "RunExportJobResponse", False, False),
        "ListExportFiles": ("ListExportFilesRequest", "ListExportFilesResponse", False, False),
        "DownloadExportFile": ("DownloadExportFileRequest", "ExportChunk", False, True),
    },
}


def message(name: str) -> Descriptor:
    descriptor = POOL.FindMessageTypeByName(ours(name))
    assert descriptor.containing_type is None, f"{name} must be top-level"
    return descriptor


def enum(name: str) -> EnumDescriptor:
    descriptor = POOL.FindEnumTypeByName(ours(name))
    assert descriptor.containing_type is None, f"{name} must be top-level"
    return descriptor


def service(name: str) -> ServiceDescriptor:
    return POOL.FindServiceByName(ours(name))


def type_of(field: FieldDescriptor) -> FieldType:
    if field.message_type is not None:
        name: int | str = field.message_type.full_name
    elif field.enum_type is not None:
        name = field.enum_type.full_name
    else:
        name = field.type
    return [name] if field.is_repeated else name  # type: ignore[return-value]


def test_generated_code_matches_the_proto_files() -> None:
    result = subprocess.run(
        [sys.executable, "proto/generate.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_is_top_level_with_documented_fields(name: str) -> None:
    descriptor = message(name)
    actual = {field.name: type_of(field) for field in descriptor.fields}
    for field_name, expected in MESSAGES[name].items():
        assert field_name in actual, f"{name}.{field_name} is missing"
        assert actual[field_name] == expected, f"{name}.{field_name} has the wrong type"


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enum_is_top_level_with_documented_values_in_order(name: str) -> None:
    descriptor = enum(name)
    numbered = {value.name: value.number for value in descriptor.values}
    expected = {value: number for number, value in enumerate(ENUMS[name])}
    assert numbered == expected


@pytest.mark.parametrize("name", sorted(ONEOFS))
def test_oneof_groups_the_documented_alternatives(name: str) -> None:
    descriptor = message(name)
    for oneof_name, members in ONEOFS[name].items():
        oneof = descriptor.oneofs_by_name[oneof_name]
        # API.md's alternatives, plus only the extensions a client must ask for.
        assert {field.name for field in oneof.fields} == members | ONEOF_EXTENSIONS.get(name, set())


def test_retention_policy_response_is_a_message_of_the_package() -> None:
    assert message("SetRetentionPolicyResponse").fields_by_name["policy"].message_type is (
        message("RetentionPolicy")
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_documented_rpcs_and_streaming(name: str) -> None:
    descriptor = service(name)
    for rpc, (request, response, client_streaming, server_streaming) in SERVICES[name].items():
        method = descriptor.methods_by_name.get(rpc)
        assert method is not None, f"{name}.{rpc} is missing"
        assert method.input_type.full_name == ours(request)
        assert method.output_type.full_name == ours(response)
        assert method.client_streaming is client_streaming, f"{name}.{rpc} client streaming"
        assert method.server_streaming is server_streaming, f"{name}.{rpc} server streaming"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_generated_stub_and_servicer(name: str) -> None:
    module_name = service(name).file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
    module = importlib.import_module(module_name)
    for attribute in (f"{name}Stub", f"{name}Servicer", f"add_{name}Servicer_to_server"):
        assert hasattr(module, attribute), f"{module_name}.{attribute} is missing"


def test_all_names_live_in_the_package_files() -> None:
    for module_name in MODULES:
        file = importlib.import_module(f"{PACKAGE}.{module_name}_pb2").DESCRIPTOR
        assert file.package == PACKAGE
        assert file.name == f"leadtrail/v1/{module_name}.proto"


def test_both_sides_of_the_wire_share_one_set_of_converters() -> None:
    """Struct/Value, times, decimals and policies are converted once, in the SDK's public
    ``leadtrail.client.wire``; the server's converters are the same objects, and the SDK's
    private module keeps its names."""
    from leadtrail.client import _convert, wire
    from leadtrail.server import convert

    for name in ("python_to_value", "dict_to_struct", "value_to_python", "struct_to_dict"):
        assert getattr(convert, name) is getattr(wire, name), name
    for name in ("timestamp_to_ms", "ms_to_timestamp", "iso_ms", "plain_decimal"):
        assert getattr(convert, name) is getattr(wire, name), name
    for name in ("to_timestamp", "from_timestamp", "field_policy_to_proto", "retention_policy_to_proto"):
        assert getattr(_convert, name) is getattr(wire, name), name
    assert wire.outcome_name(1) == "SUCCESS" and wire.outcome_name(0) == "UNSPECIFIED"
    assert wire.plain_decimal(Decimal("1E+2")) == "100"
