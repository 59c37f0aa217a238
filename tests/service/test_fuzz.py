"""Malformed requests to every RPC: each gets a status that names a problem (never UNKNOWN or
INTERNAL) and the server keeps serving everyone else."""

from __future__ import annotations

from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leadtrail.v1 import (
    admin_pb2,
    alerts_pb2,
    alerts_pb2_grpc,
    event_pb2,
    exports_pb2,
    exports_pb2_grpc,
    query_pb2,
    sinks_pb2,
    sinks_pb2_grpc,
    stream_pb2,
    submission_pb2,
)

Stubs = Any  # conftest.Stubs

METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for module in (submission_pb2, query_pb2, stream_pb2, admin_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if method.name != "ApplyRetention"  # valid random requests would delete by policy: not fuzzed here
]
NAMED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a valid subscription runs until its deadline
}

# Valid requests, whose bytes the mutations start from.
SEEDS = [
    submission_pb2.AppendRequest(
        events=[event_pb2.Event(type="source.submitted", lead_id="lead-fuzz", flow_id="flow-fuzz")]
    ).SerializeToString(),
    query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(types=["recipient.*"]), page_size=5
    ).SerializeToString(),
    query_pb2.GetTimelineRequest(lead_id="lead-fuzz").SerializeToString(),
    stream_pb2.SubscribeRequest(from_start=True, batch_size=3).SerializeToString(),
    query_pb2.FindLeadsRequest(field="email", value="Fuzz@Example.com").SerializeToString(),
    query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(
            where=[event_pb2.FieldRule(field="lead.state", op=event_pb2.RULE_OP_IN, values=["TX", "CA"])]
        ),
        page_size=5,
    ).SerializeToString(),
    admin_pb2.GetCheckpointRequest(position=1).SerializeToString(),
    admin_pb2.VerifyChainRequest(from_position=3, from_chain_hash=bytes(32)).SerializeToString(),
]


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(seed) - 1)))
        seed[at : at + 1] = draw(st.binary(min_size=0, max_size=3))
    return bytes(seed)


def call(
    stubs: Stubs, method: str, client_streaming: bool, server_streaming: bool, raw: bytes
) -> grpc.StatusCode:
    channel = stubs.channel
    try:
        if client_streaming:
            responses = channel.stream_stream(method)(iter([raw]), timeout=2)
            for _ in responses:
                pass
        elif server_streaming:
            responses = channel.unary_stream(method)(raw, timeout=2)
            for _ in responses:
                pass
        else:
            channel.unary_unary(method)(raw, timeout=5)
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        details = e.details() or ""
        assert code in NAMED, (method, raw, code, details)
        assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED) or details, (
            method,
            raw,
        )
        return code
    return grpc.StatusCode.OK


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), raw=request_bytes())
def test_every_rpc_answers_malformed_bytes_with_a_named_status(
    stubs: Stubs, method: tuple[str, bool, bool], raw: bytes
) -> None:
    call(stubs, *method, raw)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.one_of(
        st.text(max_size=300),
        st.sampled_from(["email", "phone", "phone_9", "first_name", "ssn", "lead.email"]),
    ),
    value=st.one_of(
        st.text(max_size=80),
        st.text(min_size=1020, max_size=1100),
        st.sampled_from(["+1 (555) 010-2030", " "]),
    ),
)
def test_lead_searches_with_any_values_get_a_named_status(stubs: Stubs, field: str, value: str) -> None:
    raw = query_pb2.FindLeadsRequest(field=field, value=value).SerializeToString()
    assert call(stubs, "/leadtrail.v1.QueryService/FindLeads", False, False, raw) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_the_server_still_serves_after_the_fuzzing(stubs: Stubs) -> None:
    for method in METHODS:  # bytes no message parses from: each names the message it expected
        assert call(stubs, *method, b"\xff\xff\xff") == grpc.StatusCode.INVALID_ARGUMENT, method
    request = submission_pb2.AppendRequest(
        events=[event_pb2.Event(type="source.submitted", lead_id="lead-after-fuzz", flow_id="flow-fuzz")]
    )
    assert stubs.submission.Append(request, timeout=10).results[0].position > 0


# -- AlertService -----------------------------------------------------------------------------------

ALERT_METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for service in alerts_pb2.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
ALERT_SEEDS = [
    alerts_pb2.AlertRule(
        name="fuzz-rate",
        kind=alerts_pb2.ALERT_KIND_RATE,
        filter=event_pb2.EventFilter(types=["recipient.failed"], entity_id="rcp_1"),
        base=event_pb2.EventFilter(types=["recipient.*"]),
        threshold="0.2",
        window_s=300,
        min_events=20,
        group_by=query_pb2.GROUP_BY_ENTITY,
        webhook_url="https://hooks.example.com/x",
        webhook_secret="s",
    ).SerializeToString(),
    alerts_pb2.DeleteAlertRuleRequest(name="fuzz-rate").SerializeToString(),
    alerts_pb2.ListAlertsRequest(firing_only=True, rule="fuzz-rate", limit=10).SerializeToString(),
]


@st.composite
def alert_request_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    seed = bytearray(draw(st.sampled_from(ALERT_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(seed) - 1)))
        seed[at : at + 1] = draw(st.binary(min_size=0, max_size=3))
    return bytes(seed)


_text = st.one_of(
    st.text(max_size=80), st.sampled_from(["", "fuzz", "a" * 70, "recipient.*", "0.2", "-1e999"])
)
_uint32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 168, 169, 2_592_000, 2_592_001]))


@st.composite
def alert_rules(draw: st.DrawFn) -> bytes:
    """Well-formed AlertRule messages with any values in their fields."""

    def event_filter() -> event_pb2.EventFilter:
        f = event_pb2.EventFilter(
            types=draw(st.lists(_text, max_size=3)),
            lead_id=draw(_text),
            entity_id=draw(_text),
            flow_id=draw(st.sampled_from(["", "alerts", "flow-1"])),
            outcomes=draw(st.lists(st.integers(0, 2**31 - 1), max_size=2)),
        )
        if draw(st.booleans()):
            f.start.seconds = draw(st.integers(-(2**62), 2**62))
        return f

    rule = alerts_pb2.AlertRule(
        name=draw(_text),
        kind=draw(st.integers(0, 2**31 - 1) | st.integers(0, 7)),
        filter=event_filter(),
        threshold=draw(st.one_of(_text, st.decimals(allow_nan=True).map(str))),
        window_s=draw(_uint32),
        min_events=draw(_uint32),
        baseline_windows=draw(_uint32),
        group_by=draw(st.integers(0, 2**31 - 1) | st.integers(0, 7)),
        webhook_url=draw(st.one_of(_text, st.just("http://h/"), st.just("https://h:99999/"))),
        webhook_secret=draw(_text),
        description=draw(_text),
    )
    if draw(st.booleans()):
        rule.base.CopyFrom(event_filter())
    return rule.SerializeToString()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(ALERT_METHODS), raw=alert_request_bytes())
def test_every_alert_rpc_answers_malformed_bytes_with_a_named_status(
    stubs: Stubs, method: tuple[str, bool, bool], raw: bytes
) -> None:
    call(stubs, *method, raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=alert_rules())
def test_alert_rules_with_any_values_get_a_named_status(stubs: Stubs, raw: bytes) -> None:
    assert call(stubs, "/leadtrail.v1.AlertService/SetAlertRule", False, False, raw) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_the_server_still_serves_alerts_after_the_fuzzing(stubs: Stubs) -> None:
    for method in ALERT_METHODS:
        assert call(stubs, *method, b"\xff\xff\xff") == grpc.StatusCode.INVALID_ARGUMENT, method
    alerts = alerts_pb2_grpc.AlertServiceStub(stubs.channel)
    for rule in alerts.ListAlertRules(alerts_pb2.ListAlertRulesRequest(), timeout=10).rules:
        assert rule.webhook_secret == ""
        alerts.DeleteAlertRule(alerts_pb2.DeleteAlertRuleRequest(name=rule.name), timeout=10)
    assert list(alerts.ListAlertRules(alerts_pb2.ListAlertRulesRequest(), timeout=10).rules) == []
    alerts.ListAlerts(alerts_pb2.ListAlertsRequest(), timeout=10)


# -- SinkService ------------------------------------------------------------------------------------

SINK_METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for service in sinks_pb2.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
SINK_SEEDS = [
    sinks_pb2.Sink(
        name="fuzz-hook",
        filter=event_pb2.EventFilter(types=["recipient.*"]),
        from_start=True,
        webhook=sinks_pb2.WebhookTarget(url="http://127.0.0.1:9/hook", batch_size=5),
    ).SerializeToString(),
    sinks_pb2.Sink(
        name="fuzz-files", files=sinks_pb2.FilesTarget(directory="fuzz/out", format=2, fields=["id"])
    ).SerializeToString(),
    sinks_pb2.Sink(
        name="fuzz-nats", nats=sinks_pb2.NatsTarget(servers=["nats://127.0.0.1:9"], stream="FUZZ")
    ).SerializeToString(),
    sinks_pb2.DeleteSinkRequest(name="fuzz-hook").SerializeToString(),
    sinks_pb2.GetSinkStatusRequest(name="fuzz-hook").SerializeToString(),
]


@st.composite
def sink_request_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    seed = bytearray(draw(st.sampled_from(SINK_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(seed) - 1)))
        seed[at : at + 1] = draw(st.binary(min_size=0, max_size=3))
    return bytes(seed)


@st.composite
def sinks(draw: st.DrawFn) -> bytes:
    """Well-formed Sink messages with any values in their fields (their targets unreachable)."""
    sink = sinks_pb2.Sink(
        name=draw(st.one_of(_text, st.sampled_from(["fuzz-a", "fuzz-b"]))),
        filter=event_pb2.EventFilter(
            types=draw(st.lists(_text, max_size=2)),
            outcomes=draw(st.lists(st.integers(0, 2**31 - 1), max_size=2)),
        ),
        masked=draw(st.booleans()),
    )
    start = draw(st.integers(0, 3))
    if start == 1:
        sink.from_start = True
    elif start == 2:
        sink.from_end = True
    elif start == 3:
        sink.after_position = draw(st.integers(0, 2**64 - 1))
    url = st.one_of(_text, st.sampled_from(["http://127.0.0.1:9/", "https://h:99999/", "nats://127.0.0.1:9"]))
    kind = draw(st.integers(0, 3))
    if kind == 1:
        sink.webhook.CopyFrom(
            sinks_pb2.WebhookTarget(
                url=draw(url), secret=draw(_text), batch_size=draw(_uint32), max_wait_ms=draw(_uint32)
            )
        )
    elif kind == 2:
        sink.nats.CopyFrom(
            sinks_pb2.NatsTarget(
                servers=draw(st.lists(url, max_size=3)),
                stream=draw(_text),
                subject_prefix=draw(_text),
                replicas=draw(_uint32),
                duplicate_window_s=draw(_uint32),
            )
        )
    elif kind == 3:
        sink.files.CopyFrom(
            sinks_pb2.FilesTarget(
                directory=draw(st.one_of(_text, st.sampled_from(["../x", "/tmp", "a/./b", "ok/dir"]))),
                format=draw(st.integers(0, 2**31 - 1) | st.integers(0, 4)),
                rotate_events=draw(_uint32),
                rotate_seconds=draw(_uint32),
                fields=draw(st.lists(_text, max_size=3)),
            )
        )
    return sink.SerializeToString()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(SINK_METHODS), raw=sink_request_bytes())
def test_every_sink_rpc_answers_malformed_bytes_with_a_named_status(
    stubs: Stubs, method: tuple[str, bool, bool], raw: bytes
) -> None:
    call(stubs, *method, raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=sinks())
def test_sinks_with_any_values_get_a_named_status(stubs: Stubs, raw: bytes) -> None:
    assert call(stubs, "/leadtrail.v1.SinkService/SetSink", False, False, raw) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # the account holds as many sinks as it may
    )


def test_the_server_still_serves_sinks_after_the_fuzzing(stubs: Stubs) -> None:
    for method in SINK_METHODS:
        assert call(stubs, *method, b"\xff\xff\xff") == grpc.StatusCode.INVALID_ARGUMENT, method
    service = sinks_pb2_grpc.SinkServiceStub(stubs.channel)
    for sink in service.ListSinks(sinks_pb2.ListSinksRequest(), timeout=10).sinks:
        assert sink.webhook.secret == ""
        service.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name=sink.name), timeout=10)
        service.DeleteSink(sinks_pb2.DeleteSinkRequest(name=sink.name), timeout=10)
    assert list(service.ListSinks(sinks_pb2.ListSinksRequest(), timeout=10).sinks) == []


# -- ExportService ----------------------------------------------------------------------------------

EXPORT_METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for service in exports_pb2.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
EXPORT_SEEDS = [
    exports_pb2.ExportJob(
        name="fuzz-job",
        format=query_pb2.EXPORT_FORMAT_CSV,
        fields=["id", "lead.state"],
        every_s=3600,
        lookback_s=600,
        keep_days=1,
        filter=event_pb2.EventFilter(types=["recipient.*"]),
    ).SerializeToString(),
    exports_pb2.RunExportJobRequest(name="fuzz-job").SerializeToString(),
    exports_pb2.ListExportFilesRequest(job="fuzz-job").SerializeToString(),
    exports_pb2.DownloadExportFileRequest(job="fuzz-job", file="fuzz-job-x.csv").SerializeToString(),
]


@st.composite
def export_request_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=256))
    seed = bytearray(draw(st.sampled_from(EXPORT_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(seed) - 1)))
        seed[at : at + 1] = draw(st.binary(min_size=0, max_size=3))
    return bytes(seed)


@st.composite
def export_jobs(draw: st.DrawFn) -> bytes:
    """Well-formed ExportJob messages with any values in their fields (a few names: the
    account's job limit is not what is fuzzed)."""
    job = exports_pb2.ExportJob(
        name=draw(st.sampled_from(["fuzz-a", "fuzz-b", "", "Fuzz", "x" * 65, "../x"])),
        format=draw(st.integers(0, 4)),  # type: ignore[arg-type]
        fields=draw(
            st.lists(st.sampled_from(["id", "lead.state", "lead.", "nope", "details.x", ""]), max_size=3)
        ),
        every_s=draw(st.sampled_from([0, 59, 60, 3600, 2**32 - 1])),
        lookback_s=draw(st.sampled_from([0, 1, 3600, 2**32 - 1])),
        keep_days=draw(st.sampled_from([0, 1, 3650, 3651, 2**32 - 1])),
        masked=draw(st.booleans()),
        filter=event_pb2.EventFilter(
            types=draw(st.lists(st.sampled_from(["recipient.*", "a.b", "Bad", "*", ""]), max_size=2)),
            outcomes=draw(st.lists(st.integers(0, 9), max_size=2)),
        ),
    )
    return job.SerializeToString()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(EXPORT_METHODS), raw=export_request_bytes())
def test_every_export_rpc_answers_malformed_bytes_with_a_named_status(
    stubs: Stubs, method: tuple[str, bool, bool], raw: bytes
) -> None:
    call(stubs, *method, raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=export_jobs())
def test_export_jobs_with_any_values_get_a_named_status(stubs: Stubs, raw: bytes) -> None:
    assert call(stubs, "/leadtrail.v1.ExportService/SetExportJob", False, False, raw) in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_the_server_still_serves_export_jobs_after_the_fuzzing(stubs: Stubs) -> None:
    for method in EXPORT_METHODS:
        assert call(stubs, *method, b"\xff\xff\xff") == grpc.StatusCode.INVALID_ARGUMENT, method
    exports = exports_pb2_grpc.ExportServiceStub(stubs.channel)
    for job in exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs:
        exports.DeleteExportJob(exports_pb2.DeleteExportJobRequest(name=job.name), timeout=10)
    assert list(exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs) == []
