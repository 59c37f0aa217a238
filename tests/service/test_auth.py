"""API keys over a real server: from the first key on, every call needs one; roles limit the
RPCs, accounts never see each other, and a key's entities/flows limit what exists for it.

Keys are made with ``leadtrail keys`` against the live server's data directory, as an
operator does; the server picks them up on the next call.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
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

from .conftest import ServerProcess

Stubs = Any  # conftest.Stubs

Server = Any  # conftest.ServerProcess
CLI = [sys.executable, "-m", "leadtrail.server.cli"]


def keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "keys", *args], capture_output=True, text=True, timeout=60)


def new_key(server: Server, account: str, role: str, *scope: str) -> str:
    done = keys("create", "--data", str(server.data), "--account", account, "--role", role, *scope)
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("ltk_") and "\n" not in secret  # the key alone on stdout
    return secret


def auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


def event(lead_id: str, entity_id: str = "buyer-7", flow_id: str = "flow-auth") -> event_pb2.Event:
    e = event_pb2.Event(type="recipient.delivered", lead_id=lead_id, flow_id=flow_id, entity_id=entity_id)
    e.lead_json = b'{"email":"dana@example.com"}'
    return e


def append(stubs: Stubs, key: str, *events: event_pb2.Event) -> list[submission_pb2.AppendResult]:
    request = submission_pb2.AppendRequest(events=events)
    return list(stubs.submission.Append(request, metadata=auth(key), timeout=30).results)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A backup holds every account: only the operator account's admins may take one, and the
    matrix's admin is acme's."""
    process = ServerProcess(tmp_path_factory.mktemp("store") / "data", "--operator-account", "acme").start()
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


def test_a_backup_is_for_the_operator_accounts_admins_only(stubs: Stubs, keyed: dict[str, str]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stubs.admin.Backup(admin_pb2.BackupRequest(), metadata=auth(keyed["other"]), timeout=30))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "operator account 'acme'" in info.value.details() and "globex" in info.value.details()


@pytest.fixture(scope="module")
def keyed(server: Server, stubs: Stubs) -> Iterator[dict[str, str]]:
    """Keys of two accounts, and some events of each, written before any key existed or with one."""
    # Open mode first: no key needed, everything is the `default` account.
    [open_result] = append(stubs, "", event("lead-open"))
    made = {
        "writer": new_key(server, "acme", "writer"),
        "reader": new_key(server, "acme", "reader"),
        "analyst": new_key(server, "acme", "analyst"),
        "admin": new_key(server, "acme", "admin"),
        "other": new_key(server, "globex", "admin"),
        "buyer7": new_key(server, "acme", "reader", "--entity", "buyer-7"),
        "writer7": new_key(server, "acme", "writer", "--entity", "buyer-7"),
        "open_id": open_result.id,
    }
    append(stubs, made["writer"], event("lead-a", "buyer-7"), event("lead-a", "buyer-9"))
    append(stubs, made["other"], event("lead-g", "buyer-7"))
    yield made


def test_from_the_first_key_on_a_call_without_one_is_unauthenticated(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    get = query_pb2.GetEventRequest(id=keyed["open_id"])
    assert code_of(lambda: stubs.query.GetEvent(get)) == grpc.StatusCode.UNAUTHENTICATED
    bad = auth("ltk_" + "a" * 32)
    assert code_of(lambda: stubs.query.GetEvent(get, metadata=bad)) == grpc.StatusCode.UNAUTHENTICATED
    basic = (("authorization", f"Basic {keyed['admin']}"),)
    assert code_of(lambda: stubs.query.GetEvent(get, metadata=basic)) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.GetStats(admin_pb2.GetStatsRequest())
    assert "authorization: Bearer" in info.value.details()


def test_health_stays_open(stubs: Stubs, keyed: dict[str, str]) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_a_key_of_any_role(stubs: Stubs, keyed: dict[str, str]) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)

    def services(metadata: Any = None) -> set[str]:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = reflection.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)
        return {s.name for s in answer.list_services_response.service}

    assert code_of(services) == grpc.StatusCode.UNAUTHENTICATED
    assert "leadtrail.v1.QueryService" in services(auth(keyed["writer"]))


READS = {
    "GetEvent",
    "GetTimeline",
    "QueryEvents",
    "Subscribe",
    "FindLeads",
    "ListAlerts",
    "GetSinkStatus",
    "GetCheckpoint",
}
ALLOWED = {
    "writer": {"Append", "AppendStream", "GetCheckpoint"},
    "reader": READS,
    "analyst": READS | {"Aggregate", "Export", "ListExportFiles", "DownloadExportFile"},
    "admin": None,  # every RPC
}


def calls(stubs: Stubs, keyed: dict[str, str]) -> dict[str, Callable[[Any], Any]]:
    """One harmless call of every RPC of the five services."""
    lead = event_pb2.EventFilter(lead_id="lead-a")
    alerts = alerts_pb2_grpc.AlertServiceStub(stubs.channel)
    sinks = sinks_pb2_grpc.SinkServiceStub(stubs.channel)
    rule = alerts_pb2.AlertRule(
        name="role-matrix",
        kind=alerts_pb2.ALERT_KIND_COUNT,
        filter=event_pb2.EventFilter(types=["recipient.failed"]),
        threshold="3",
        window_s=60,
    )
    append = submission_pb2.AppendRequest(events=[event("lead-role")])
    return {
        "Append": lambda md: stubs.submission.Append(append, metadata=md),
        "AppendStream": lambda md: next(iter(stubs.submission.AppendStream(iter([append]), metadata=md))),
        "GetEvent": lambda md: stubs.query.GetEvent(
            query_pb2.GetEventRequest(id=keyed["open_id"]), metadata=md
        ),
        "GetTimeline": lambda md: stubs.query.GetTimeline(
            query_pb2.GetTimelineRequest(lead_id="lead-a"), metadata=md
        ),
        "QueryEvents": lambda md: stubs.query.QueryEvents(
            query_pb2.QueryEventsRequest(filter=lead), metadata=md
        ),
        "Subscribe": lambda md: next(
            iter(stubs.stream.Subscribe(stream_pb2.SubscribeRequest(from_end=True), metadata=md, timeout=10))
        ),
        "Aggregate": lambda md: stubs.query.Aggregate(query_pb2.AggregateRequest(filter=lead), metadata=md),
        "Export": lambda md: list(
            stubs.query.Export(
                query_pb2.ExportRequest(filter=lead, format=query_pb2.EXPORT_FORMAT_JSONL), metadata=md
            )
        ),
        "FindLeads": lambda md: stubs.query.FindLeads(
            query_pb2.FindLeadsRequest(field="email", value="nobody@example.com"), metadata=md
        ),
        "GetStats": lambda md: stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=md),
        "SetRetentionPolicy": lambda md: stubs.admin.SetRetentionPolicy(
            admin_pb2.RetentionPolicy(), metadata=md
        ),
        "ApplyRetention": lambda md: stubs.admin.ApplyRetention(
            admin_pb2.ApplyRetentionRequest(), metadata=md
        ),
        "Verify": lambda md: stubs.admin.Verify(admin_pb2.VerifyRequest(), metadata=md),
        "CreateKey": lambda md: stubs.admin.CreateKey(admin_pb2.CreateKeyRequest(role="reader"), metadata=md),
        "ListKeys": lambda md: stubs.admin.ListKeys(admin_pb2.ListKeysRequest(), metadata=md),
        "RevokeKey": lambda md: stubs.admin.RevokeKey(
            admin_pb2.RevokeKeyRequest(key_id="key_none"), metadata=md
        ),
        "EraseLead": lambda md: stubs.admin.EraseLead(
            admin_pb2.EraseLeadRequest(lead_id="lead-none"), metadata=md
        ),
        "SetFieldPolicy": lambda md: stubs.admin.SetFieldPolicy(admin_pb2.FieldPolicy(), metadata=md),
        "GetFieldPolicy": lambda md: stubs.admin.GetFieldPolicy(
            admin_pb2.GetFieldPolicyRequest(), metadata=md
        ),
        "GetCheckpoint": lambda md: stubs.admin.GetCheckpoint(admin_pb2.GetCheckpointRequest(), metadata=md),
        "VerifyChain": lambda md: stubs.admin.VerifyChain(admin_pb2.VerifyChainRequest(), metadata=md),
        "Backup": lambda md: list(stubs.admin.Backup(admin_pb2.BackupRequest(), metadata=md, timeout=30)),
        "SetAlertRule": lambda md: alerts.SetAlertRule(rule, metadata=md),
        "ListAlertRules": lambda md: alerts.ListAlertRules(alerts_pb2.ListAlertRulesRequest(), metadata=md),
        "DeleteAlertRule": lambda md: alerts.DeleteAlertRule(
            alerts_pb2.DeleteAlertRuleRequest(name="rule-none"), metadata=md
        ),
        "ListAlerts": lambda md: alerts.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=md),
        # A sink without a target: refused as INVALID_ARGUMENT, nothing left running.
        "SetSink": lambda md: sinks.SetSink(sinks_pb2.Sink(name="role-matrix"), metadata=md),
        "ListSinks": lambda md: sinks.ListSinks(sinks_pb2.ListSinksRequest(), metadata=md),
        "DeleteSink": lambda md: sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="sink-none"), metadata=md),
        "GetSinkStatus": lambda md: sinks.GetSinkStatus(
            sinks_pb2.GetSinkStatusRequest(name="sink-none"), metadata=md
        ),
        **export_calls(stubs),
    }


def export_calls(stubs: Stubs) -> dict[str, Callable[[Any], Any]]:
    exports = exports_pb2_grpc.ExportServiceStub(stubs.channel)
    job = exports_pb2.ExportJob(
        name="role-matrix", format=query_pb2.EXPORT_FORMAT_JSONL, every_s=3600, keep_days=1
    )
    return {
        "SetExportJob": lambda md: exports.SetExportJob(job, metadata=md),
        "ListExportJobs": lambda md: exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), metadata=md),
        "DeleteExportJob": lambda md: exports.DeleteExportJob(
            exports_pb2.DeleteExportJobRequest(name="job-none"), metadata=md
        ),
        "RunExportJob": lambda md: exports.RunExportJob(
            exports_pb2.RunExportJobRequest(name="job-none"), metadata=md
        ),
        "ListExportFiles": lambda md: exports.ListExportFiles(
            exports_pb2.ListExportFilesRequest(job="job-none"), metadata=md
        ),
        "DownloadExportFile": lambda md: list(
            exports.DownloadExportFile(
                exports_pb2.DownloadExportFileRequest(job="job-none", file="f"), metadata=md
            )
        ),
    }


def test_the_role_matrix_covers_every_rpc(stubs: Stubs, keyed: dict[str, str]) -> None:
    every = {
        method.name
        for module in (submission_pb2, query_pb2, stream_pb2, admin_pb2, alerts_pb2, sinks_pb2, exports_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(calls(stubs, keyed)) == every


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_each_role_may_call_its_rpcs_and_no_others(stubs: Stubs, keyed: dict[str, str], role: str) -> None:
    md = auth(keyed[role])
    allowed = ALLOWED[role]
    for name, call in calls(stubs, keyed).items():
        if allowed is None or name in allowed:
            try:
                call(md)
            except grpc.RpcError as e:  # let in; the call's own answer (a missing id, ...) is fine
                assert e.code() not in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.INTERNAL,
                ), (role, name, e.details())
        else:
            with pytest.raises(grpc.RpcError) as info:
                call(md)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, (role, name)
            assert name in info.value.details() and role in info.value.details()


def test_another_accounts_events_do_not_exist(stubs: Stubs, keyed: dict[str, str]) -> None:
    mine, theirs = auth(keyed["admin"]), auth(keyed["other"])
    flows = event_pb2.EventFilter(flow_id="flow-auth")  # leaves out the admins' own audit records
    [theirs_event] = stubs.query.QueryEvents(
        query_pb2.QueryEventsRequest(filter=flows), metadata=theirs
    ).events
    assert theirs_event.lead_id == "lead-g" and theirs_event.account_id == "globex"
    get = query_pb2.GetEventRequest(id=theirs_event.id)
    assert code_of(lambda: stubs.query.GetEvent(get, metadata=mine)) == grpc.StatusCode.NOT_FOUND
    timeline = query_pb2.GetTimelineRequest(lead_id="lead-g")
    assert code_of(lambda: stubs.query.GetTimeline(timeline, metadata=mine)) == grpc.StatusCode.NOT_FOUND
    mine_all = stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=mine).events
    assert {e.account_id for e in mine_all} == {"acme"} and {e.lead_id for e in mine_all} >= {"lead-a"}
    # The events written in open mode belong to `default`: no acme or globex key sees them.
    get_open = query_pb2.GetEventRequest(id=keyed["open_id"])
    assert code_of(lambda: stubs.query.GetEvent(get_open, metadata=mine)) == grpc.StatusCode.NOT_FOUND
    rows = stubs.query.Aggregate(query_pb2.AggregateRequest(filter=flows), metadata=theirs).rows
    assert sum(r.count for r in rows) == 1
    exported = b"".join(
        c.data
        for c in stubs.query.Export(
            query_pb2.ExportRequest(filter=flows, format=query_pb2.EXPORT_FORMAT_JSONL), metadata=theirs
        )
    )
    assert exported.count(b"\n") == 1 and b"lead-g" in exported and b"lead-a" not in exported


def test_a_subscription_sees_only_its_accounts_events(stubs: Stubs, keyed: dict[str, str]) -> None:
    call = stubs.stream.Subscribe(stream_pb2.SubscribeRequest(from_start=True), metadata=auth(keyed["other"]))
    seen = []
    for message in call:
        if message.HasField("caught_up"):
            break
        if message.HasField("event"):
            seen.append(message.event)
    call.cancel()
    assert {e.account_id for e in seen} == {"globex"}
    assert [e.lead_id for e in seen if not e.type.startswith("audit.")] == ["lead-g"]


def test_a_key_limited_to_an_entity_sees_only_that_entitys_events(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    md = auth(keyed["buyer7"])
    timeline = stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-a"), metadata=md)
    assert [s.event.entity_id for s in timeline.steps] == ["buyer-7"]
    page = stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=md)
    assert {e.entity_id for e in page.events} == {"buyer-7"}
    full = stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=auth(keyed["admin"]))
    [hidden] = [e for e in full.events if e.entity_id == "buyer-9"]
    get = query_pb2.GetEventRequest(id=hidden.id)
    assert code_of(lambda: stubs.query.GetEvent(get, metadata=md)) == grpc.StatusCode.NOT_FOUND


def test_a_writer_limited_to_an_entity_cannot_write_for_another(stubs: Stubs, keyed: dict[str, str]) -> None:
    key = keyed["writer7"]
    assert append(stubs, key, event("lead-w7", "buyer-7"))[0].position > 0
    with pytest.raises(grpc.RpcError) as info:
        append(stubs, key, event("lead-w9", "buyer-7"), event("lead-w9", "buyer-9"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "events[1]" in info.value.details() and "buyer-9" in info.value.details()
    f = event_pb2.EventFilter(lead_id="lead-w9")
    found = stubs.query.QueryEvents(query_pb2.QueryEventsRequest(filter=f), metadata=auth(keyed["admin"]))
    assert list(found.events) == []  # nothing of the refused request was stored


def test_a_scoped_writer_learns_nothing_from_the_id_of_an_event_outside_its_scope(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    [outside] = append(stubs, keyed["writer"], event("lead-dup", "buyer-9"))
    [inside] = append(stubs, keyed["writer7"], event("lead-dup", "buyer-7"))
    probe_outside, probe_inside = event("lead-dup", "buyer-7"), event("lead-dup", "buyer-7")
    probe_outside.id, probe_inside.id = outside.id, inside.id
    for answers in (
        append(stubs, keyed["writer7"], probe_outside, probe_inside),
        list(
            next(
                stubs.submission.AppendStream(
                    iter([submission_pb2.AppendRequest(events=[probe_outside, probe_inside])]),
                    metadata=auth(keyed["writer7"]),
                    timeout=30,
                )
            ).results
        ),
    ):
        hidden, own = answers
        assert hidden.duplicate and hidden.position == 0 and not hidden.HasField("recorded_at")
        assert own.duplicate and own.position == inside.position and own.recorded_at == inside.recorded_at
    # The whole-account writer is told where its duplicate is.
    [told] = append(stubs, keyed["writer"], probe_outside)
    assert told.duplicate and told.position == outside.position


def test_keys_made_and_revoked_over_the_admin_service(stubs: Stubs, keyed: dict[str, str]) -> None:
    admin = auth(keyed["admin"])
    made = stubs.admin.CreateKey(
        admin_pb2.CreateKeyRequest(role="reader", flow_ids=["flow-auth"]), metadata=admin
    )
    assert made.key.startswith("ltk_") and made.info.account_id == "acme" and made.info.role == "reader"
    assert stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=auth(made.key)).events
    listed = stubs.admin.ListKeys(admin_pb2.ListKeysRequest(), metadata=admin).keys
    assert made.info.key_id in {k.key_id for k in listed}
    assert {k.account_id for k in listed} == {"acme"}  # never another account's keys
    assert made.key not in str(listed)
    bad_role = admin_pb2.CreateKeyRequest(role="superuser")
    assert (
        code_of(lambda: stubs.admin.CreateKey(bad_role, metadata=admin)) == grpc.StatusCode.INVALID_ARGUMENT
    )
    revoked = stubs.admin.RevokeKey(admin_pb2.RevokeKeyRequest(key_id=made.info.key_id), metadata=admin)
    assert revoked.HasField("revoked_at")
    after = code_of(lambda: stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=auth(made.key)))
    assert after == grpc.StatusCode.UNAUTHENTICATED
    # Another account's admin cannot revoke acme's keys: for it they do not exist.
    other = auth(keyed["other"])
    revoke = admin_pb2.RevokeKeyRequest(key_id=listed[0].key_id)
    assert code_of(lambda: stubs.admin.RevokeKey(revoke, metadata=other)) == grpc.StatusCode.NOT_FOUND


def test_keys_revoked_offline_are_refused_on_the_next_call(
    server: Server, stubs: Stubs, keyed: dict[str, str]
) -> None:
    secret = new_key(server, "acme", "reader")
    assert stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=auth(secret)).events
    listing = keys("list", "--data", str(server.data), "--account", "acme")
    assert listing.returncode == 0 and secret not in listing.stdout
    key_id = listing.stdout.strip().splitlines()[-1].split()[0]
    assert key_id.startswith("key_")
    done = keys("revoke", "--data", str(server.data), key_id)
    assert done.returncode == 0, done.stderr
    code = code_of(lambda: stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=auth(secret)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "ltk_" not in (server.data / "keys.json").read_text()  # only digests are kept


def test_the_sdk_sends_its_key_and_maps_refusals(server: Server, keyed: dict[str, str]) -> None:
    from leadtrail.client import Client, Event, PermissionDeniedError, UnauthenticatedError

    with Client(server.address, api_key=keyed["reader"]) as client:
        assert [e.lead_id for e in client.query(lead_id="lead-a")] == ["lead-a", "lead-a"]
        with pytest.raises(PermissionDeniedError):
            client.append(Event("source.submitted", "lead-sdk", "flow-auth"))
    with Client(server.address) as anonymous, pytest.raises(UnauthenticatedError):
        anonymous.stats()


def test_bad_key_requests_on_the_command_line_name_the_problem(server: Server, keyed: dict[str, str]) -> None:
    done = keys("create", "--data", str(server.data), "--account", "Not Valid", "--role", "reader")
    assert done.returncode == 1 and "account 'Not Valid'" in done.stderr
    done = keys("revoke", "--data", str(server.data), "key_0000")
    assert done.returncode == 1 and "key_0000" in done.stderr
    done = keys("list", "--data", str(server.data / "missing"))
    assert done.returncode == 1 and "no data directory" in done.stderr


def test_remote_commands_take_the_key_from_the_option_or_the_environment(
    server: Server, keyed: dict[str, str]
) -> None:
    import os

    base = [*CLI, "stats", "--server", server.address]
    refused = subprocess.run(
        base, capture_output=True, text=True, timeout=60, env={**os.environ, "LEADTRAIL_API_KEY": ""}
    )
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "authoriz" in refused.stderr.lower() or "unauthenticated" in refused.stderr.lower()
    by_option = subprocess.run(
        [*base, "--api-key", keyed["admin"]], capture_output=True, text=True, timeout=60
    )
    assert by_option.returncode == 0, by_option.stderr
    env = {**os.environ, "LEADTRAIL_API_KEY": keyed["admin"]}
    by_env = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert by_env.returncode == 0, by_env.stderr


def test_a_rate_limited_key_gets_resource_exhausted_with_retry_info(
    server: Server, stubs: Stubs, keyed: dict[str, str]
) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    from leadtrail.client import Client, ResourceExhaustedError

    limited = new_key(server, "acme", "reader", "--rate-limit", "2")
    request = query_pb2.QueryEventsRequest(filter=event_pb2.EventFilter(lead_id="lead-a"))
    refused = None
    for _ in range(10):  # a burst of 2 is allowed, then at most 2 a second
        try:
            stubs.query.QueryEvents(request, metadata=auth(limited))
        except grpc.RpcError as e:
            refused = e
            break
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in refused.details() and "2 calls a second" in refused.details()
    status = rpc_status.from_call(refused)
    assert status is not None
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert 0 < info.retry_delay.ToNanoseconds() <= 1_000_000_000
    # Other keys are not slowed by it.
    assert stubs.query.QueryEvents(request, metadata=auth(keyed["reader"])).events
    with Client(server.address, api_key=limited) as client:
        with pytest.raises(ResourceExhaustedError) as sdk:
            for _ in range(10):
                list(client.query(lead_id="lead-a"))
        assert sdk.value.retry_after is not None and 0 < sdk.value.retry_after <= 1


def test_a_damaged_key_file_stops_the_server_and_the_commands_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keys.json").write_text("{not json")
    served = subprocess.run(
        [*CLI, "serve", "--data", str(data), "--listen", "127.0.0.1:0", "--http", "off"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 1 and served.stderr.startswith("leadtrail: API keys:"), served.stderr
    assert "Traceback" not in served.stderr
    listed = keys("list", "--data", str(data))
    assert listed.returncode == 1 and "keys.json" in listed.stderr and "Traceback" not in listed.stderr


def test_reads_made_with_a_key_are_recorded_for_the_accounts_admins_only(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    import time

    admin = auth(keyed["admin"])
    made = stubs.admin.CreateKey(admin_pb2.CreateKeyRequest(role="analyst"), metadata=admin)
    reader, key_id = auth(made.key), made.info.key_id
    lead_a = event_pb2.EventFilter(lead_id="lead-a")
    stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-a"), metadata=reader)
    stubs.query.QueryEvents(query_pb2.QueryEventsRequest(filter=lead_a), metadata=reader)
    export = query_pb2.ExportRequest(filter=lead_a, format=query_pb2.EXPORT_FORMAT_JSONL)
    assert b"".join(c.data for c in stubs.query.Export(export, metadata=reader)).count(b"\n") == 2
    stubs.query.Aggregate(query_pb2.AggregateRequest(filter=lead_a), metadata=reader)

    audit = query_pb2.QueryEventsRequest(filter=event_pb2.EventFilter(types=["audit.*"], lead_id=key_id))
    deadline = time.monotonic() + 10
    records = stubs.query.QueryEvents(audit, metadata=admin).events
    while len(records) < 4 and time.monotonic() < deadline:  # written with the next group commit
        time.sleep(0.05)
        records = stubs.query.QueryEvents(audit, metadata=admin).events
    details = [json_format.MessageToDict(r.details) for r in records]
    assert [d["rpc"] for d in details] == ["GetTimeline", "QueryEvents", "Export", "Aggregate"]
    assert all(d["role"] == "analyst" and d["events"] == 2 for d in details), details
    assert details[1]["request"]["filter"] == {"lead_id": "lead-a"}
    assert {r.type for r in records} == {"audit.read"} and {r.entity_id for r in records} == {key_id}
    # Nobody but admins sees them, nobody can forge them, retention never removes them (storage tests).
    assert not stubs.query.QueryEvents(audit, metadata=reader).events
    get = query_pb2.GetEventRequest(id=records[0].id)
    assert code_of(lambda: stubs.query.GetEvent(get, metadata=reader)) == grpc.StatusCode.NOT_FOUND
    forged = event_pb2.Event(type="audit.read", lead_id="lead-x", flow_id="flow-auth", entity_id="buyer-7")
    with pytest.raises(grpc.RpcError) as info:
        append(stubs, keyed["admin"], forged)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "events[0].type" in info.value.details()


def test_account_wide_admin_calls_need_an_unscoped_admin_and_keys_never_widen(
    server: Server, stubs: Stubs, keyed: dict[str, str]
) -> None:
    scoped_admin = auth(new_key(server, "acme", "admin", "--entity", "buyer-7"))
    for call in (
        lambda: stubs.admin.CreateKey(admin_pb2.CreateKeyRequest(role="admin"), metadata=scoped_admin),
        lambda: stubs.admin.ListKeys(admin_pb2.ListKeysRequest(), metadata=scoped_admin),
        lambda: stubs.admin.RevokeKey(admin_pb2.RevokeKeyRequest(key_id="key_x"), metadata=scoped_admin),
        lambda: stubs.admin.ApplyRetention(admin_pb2.ApplyRetentionRequest(), metadata=scoped_admin),
        lambda: stubs.admin.SetRetentionPolicy(
            admin_pb2.RetentionPolicy(max_age_days=1), metadata=scoped_admin
        ),
        lambda: stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=scoped_admin),
        lambda: stubs.admin.Verify(admin_pb2.VerifyRequest(), metadata=scoped_admin),
        lambda: stubs.admin.EraseLead(admin_pb2.EraseLeadRequest(lead_id="lead-a"), metadata=scoped_admin),
        lambda: stubs.admin.SetFieldPolicy(admin_pb2.FieldPolicy(), metadata=scoped_admin),
    ):
        assert code_of(call) == grpc.StatusCode.PERMISSION_DENIED
    whole = auth(keyed["admin"])
    assert stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=whole).event_count > 0
    assert stubs.admin.Verify(admin_pb2.VerifyRequest(), metadata=whole).problems == []
    slow_admin = auth(new_key(server, "acme", "admin", "--rate-limit", "50"))
    unlimited = admin_pb2.CreateKeyRequest(role="reader")
    assert (
        code_of(lambda: stubs.admin.CreateKey(unlimited, metadata=slow_admin))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    within = admin_pb2.CreateKeyRequest(role="reader", rate_per_second=10)
    assert stubs.admin.CreateKey(within, metadata=slow_admin).info.rate_per_second == 10


def test_a_key_cannot_move_the_retention_clock(stubs: Stubs, keyed: dict[str, str]) -> None:
    request = admin_pb2.ApplyRetentionRequest()
    request.now.FromMilliseconds(253_000_000_000_000)  # the year 9987: everything would be expired
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.ApplyRetention(request, metadata=auth(keyed["admin"]))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "now" in info.value.details()


def test_one_rate_budget_per_key_across_services(server: Server, stubs: Stubs, keyed: dict[str, str]) -> None:
    limited = auth(new_key(server, "acme", "reader", "--rate-limit", "2"))
    stubs.query.QueryEvents(query_pb2.QueryEventsRequest(), metadata=limited)
    subscription = stubs.stream.Subscribe(stream_pb2.SubscribeRequest(from_end=True), metadata=limited)
    next(iter(subscription))  # admitted: the caught-up mark
    subscription.cancel()
    refused = code_of(
        lambda: stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-a"), metadata=limited)
    )
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_key_file_that_disappears_does_not_open_the_server(spawn: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secret = keys("create", "--data", str(data), "--account", "acme", "--role", "admin").stdout.strip()
    server = spawn(data)
    channel = grpc.insecure_channel(server.address)
    from leadtrail.v1 import admin_pb2_grpc

    admin = admin_pb2_grpc.AdminServiceStub(channel)
    assert admin.GetStats(admin_pb2.GetStatsRequest(), metadata=auth(secret)).last_position == 0
    (data / "keys.json").unlink()
    for metadata in (auth(secret), None):
        with pytest.raises(grpc.RpcError) as info:
            admin.GetStats(admin_pb2.GetStatsRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "keys.json" in info.value.details()
    channel.close()


def test_a_damaged_key_record_stops_the_server_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keys.json").write_text('{"version": 1, "keys": [null]}')
    served = subprocess.run(
        [*CLI, "serve", "--data", str(data), "--listen", "127.0.0.1:0", "--http", "off"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        served.returncode == 1
        and "key record is damaged" in served.stderr
        and "Traceback" not in served.stderr
    )


def test_stats_with_keys_count_the_callers_own_account_only(stubs: Stubs, keyed: dict[str, str]) -> None:
    stats = stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=auth(keyed["admin"]), timeout=30)
    assert set(stats.account_events) == {"acme"}
    assert stats.account_events["acme"] >= 2  # lead-a's two events, and the reads' audit records
    other = stubs.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=auth(keyed["other"]), timeout=30)
    assert set(other.account_events) == {"globex"}


def test_export_files_go_to_analysts_masked_only_and_each_download_is_recorded(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    exports = exports_pb2_grpc.ExportServiceStub(stubs.channel)
    admin, analyst, other = auth(keyed["admin"]), auth(keyed["analyst"]), auth(keyed["other"])
    made = {}
    for name, masked in (("keys-masked", True), ("keys-plain", False)):
        job = exports_pb2.ExportJob(
            name=name,
            format=query_pb2.EXPORT_FORMAT_JSONL,
            every_s=3600,
            keep_days=1,
            masked=masked,
            filter=event_pb2.EventFilter(lead_id="lead-a"),
        )
        exports.SetExportJob(job, metadata=admin, timeout=10)
        run = exports_pb2.RunExportJobRequest(name=name)
        made[name] = exports.RunExportJob(run, metadata=admin, timeout=30).file
        assert made[name].rows == 2  # the account's two events of lead-a

    def download(name: str, md: Any) -> bytes:
        request = exports_pb2.DownloadExportFileRequest(job=name, file=made[name].name)
        return b"".join(c.data for c in exports.DownloadExportFile(request, metadata=md, timeout=10))

    masked = download("keys-masked", analyst)
    assert len(masked) == made["keys-masked"].bytes and b"dana@example.com" not in masked
    assert b"dana@example.com" in download("keys-plain", admin)
    listed = exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="keys-plain"), metadata=analyst)
    assert [f.name for f in listed.files] == [made["keys-plain"].name]
    assert code_of(lambda: download("keys-plain", analyst)) == grpc.StatusCode.PERMISSION_DENIED
    # Another account's jobs do not exist.
    assert code_of(lambda: download("keys-masked", other)) == grpc.StatusCode.NOT_FOUND
    assert "keys-masked" not in [
        j.name for j in exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), metadata=other).jobs
    ]

    f = event_pb2.EventFilter(types=["audit.export_downloaded"], lead_id="export:keys-masked")
    deadline = time.monotonic() + 30
    while True:
        query = query_pb2.QueryEventsRequest(filter=f)
        recorded = list(stubs.query.QueryEvents(query, metadata=admin, timeout=10).events)
        if recorded or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (record,) = recorded
    analysts = {
        k.key_id
        for k in stubs.admin.ListKeys(admin_pb2.ListKeysRequest(), metadata=admin).keys
        if k.role == "analyst"
    }
    assert record.entity_id in analysts and record.account_id == "acme"
    for name in made:
        exports.DeleteExportJob(exports_pb2.DeleteExportJobRequest(name=name), metadata=admin, timeout=10)


def test_export_jobs_keep_the_setting_keys_scope_and_limited_keys_see_only_jobs_within_theirs(
    server: Server, stubs: Stubs, keyed: dict[str, str]
) -> None:
    exports = exports_pb2_grpc.ExportServiceStub(stubs.channel)
    admin7 = auth(new_key(server, "acme", "admin", "--entity", "buyer-7"))
    analyst7 = auth(new_key(server, "acme", "analyst", "--entity", "buyer-7"))
    admin = auth(keyed["admin"])
    for name, md in (("scoped-7", admin7), ("whole-account", admin)):
        job = exports_pb2.ExportJob(
            name=name,
            format=query_pb2.EXPORT_FORMAT_JSONL,
            every_s=3600,
            keep_days=1,
            masked=True,
            filter=event_pb2.EventFilter(lead_id="lead-a"),
        )
        exports.SetExportJob(job, metadata=md, timeout=10)
    made = exports.RunExportJob(
        exports_pb2.RunExportJobRequest(name="scoped-7"), metadata=admin7, timeout=30
    ).file
    assert made.rows == 1  # lead-a's event of buyer-7, not the one of buyer-9
    listed = exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="scoped-7"), metadata=analyst7)
    assert [f.name for f in listed.files] == [made.name]
    whole = exports_pb2.ListExportFilesRequest(job="whole-account")
    assert (
        code_of(lambda: exports.ListExportFiles(whole, metadata=analyst7))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    delete = exports_pb2.DeleteExportJobRequest(name="whole-account")
    assert (
        code_of(lambda: exports.DeleteExportJob(delete, metadata=admin7)) == grpc.StatusCode.PERMISSION_DENIED
    )
    for name in ("scoped-7", "whole-account"):
        exports.DeleteExportJob(exports_pb2.DeleteExportJobRequest(name=name), metadata=admin, timeout=10)
