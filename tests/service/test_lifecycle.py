"""The server process as an operator runs it: health, reflection, clean shutdown,
kill -9, a damaged store, the listen address, and the admin service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from leadtrail.storage import Event, EventLog, Options
from leadtrail.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

Spawn = Callable[..., Any]
MakeEvent = Callable[..., event_pb2.Event]


def serve_command(data: Path, *args: str) -> list[str]:
    http = () if "--http" in args else ("--http", "127.0.0.1:0")
    return [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", str(data), *http, *args]


def test_health_is_serving_and_reflection_lists_every_service(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn(tmp_path / "data")
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "leadtrail.v1.SubmissionService", "leadtrail.v1.QueryService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in answer.list_services_response.service}
        assert {
            "leadtrail.v1.SubmissionService",
            "leadtrail.v1.QueryService",
            "leadtrail.v1.StreamService",
            "leadtrail.v1.AdminService",
            "grpc.health.v1.Health",
        } <= names
    assert server.stop() == 0


def _appender(address: str, acknowledged: list[str], stop: threading.Event, make_event: MakeEvent) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = submission_pb2_grpc.SubmissionServiceStub(channel)
        while not stop.is_set():
            events = [make_event("lead-shutdown") for _ in range(20)]
            try:
                response = stub.Append(submission_pb2.AppendRequest(events=events), timeout=10)
            except grpc.RpcError:
                return  # refused or cut off by the shutdown: not acknowledged
            acknowledged.extend(r.id for r in response.results)


def _stored_ids(data: Path) -> set[str]:
    with EventLog.open(data, Options(read_only=True)) as log:
        return {e.id for e in log.read_from(1)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_and_exits_0_with_every_acknowledged_append_stored(
    spawn: Spawn, tmp_path: Path, make_event: MakeEvent, sig: int
) -> None:
    server = spawn(tmp_path / "data")
    acknowledged: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_appender, args=(server.address, acknowledged, stop, make_event))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert server.stop(sig) == 0, "".join(server.stderr_lines)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) > 0
    stored = _stored_ids(tmp_path / "data")
    assert set(acknowledged) <= stored


def test_kill_9_loses_nothing_acknowledged(spawn: Spawn, tmp_path: Path, make_event: MakeEvent) -> None:
    data = tmp_path / "data"
    acknowledged: list[str] = []
    for _round in range(3):
        server = spawn(data)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_appender, args=(server.address, acknowledged, stop, make_event))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(0.4)
        server.kill()
        stop.set()
        for t in threads:
            t.join(30)
    stored = _stored_ids(data)
    assert len(acknowledged) > 0
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"


def test_subscriptions_end_with_unavailable_on_shutdown(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn(tmp_path / "data")
    channel = grpc.insecure_channel(server.address)
    call = stream_pb2_grpc.StreamServiceStub(channel).Subscribe(stream_pb2.SubscribeRequest(from_start=True))
    assert next(call).HasField("caught_up")
    started = time.monotonic()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    stopper.join(30)
    assert server.proc.returncode == 0
    assert time.monotonic() - started < 8, "shutdown waited for the subscription's grace period"
    channel.close()


def _damaged_store(data: Path) -> None:
    with EventLog.open(data, Options(segment_bytes=4096)) as log:
        for i in range(60):
            log.append([Event(type="source.submitted", lead_id=f"lead-{i}", flow_id="flow-1", lead={"i": i})])
    first = sorted((data / "log").iterdir())[0]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    first.write_bytes(bytes(raw))


def test_a_damaged_store_refuses_to_start_with_one_line_naming_the_damage(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _damaged_store(data)
    result = subprocess.run(
        serve_command(data, "--listen", "127.0.0.1:0"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "00000000000000000001.log" in lines[0] and "--quarantine" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_quarantine_starts_and_verify_reports_the_range_moved_aside(spawn: Spawn, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _damaged_store(data)
    server = spawn(data, "--quarantine")
    # Printed before the ready line; stderr is drained on a thread, so it is waited for.
    assert "00000000000000000001.log" in server.wait_for_stderr("quarantined", timeout=30)
    with grpc.insecure_channel(server.address) as channel:
        report = admin_pb2_grpc.AdminServiceStub(channel).Verify(admin_pb2.VerifyRequest(), timeout=60)
        assert report.problems == []
        assert report.quarantined and "00000000000000000001.log" in report.quarantined[0]
        assert 0 < report.records_checked < 60
    assert server.stop() == 0
    assert any("quarantined" in line for line in server.stderr_lines)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "10.1.2.3:50051"])
def test_a_non_loopback_address_is_refused_without_insecure(tmp_path: Path, listen: str) -> None:
    result = subprocess.run(
        serve_command(tmp_path / "data", "--listen", listen), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "--insecure" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_stats_count_what_was_appended(spawn: Spawn, tmp_path: Path, make_event: MakeEvent) -> None:
    server = spawn(tmp_path / "data")
    with grpc.insecure_channel(server.address) as channel:
        submission = submission_pb2_grpc.SubmissionServiceStub(channel)
        submission.Append(submission_pb2.AppendRequest(events=[make_event("lead-st") for _ in range(40)]))
        stats = admin_pb2_grpc.AdminServiceStub(channel).GetStats(admin_pb2.GetStatsRequest(), timeout=10)
        assert (stats.event_count, stats.last_position, stats.segment_count) == (40, 40, 1)
        assert stats.writable and stats.fsync_policy == "always"
        assert stats.disk_bytes >= stats.log_bytes + stats.index_bytes > 0
        assert stats.raw_bytes > 0 and stats.bytes_per_event > 0
    assert server.stop() == 0


def test_retention_policy_and_apply_remove_only_expired_events(spawn: Spawn, tmp_path: Path) -> None:
    # Events age by commit time: a store written "40 days ago" is made offline
    # with a clock in the past, then served now.
    data = tmp_path / "data"
    now_ms = int(time.time() * 1000)
    old_clock = now_ms - 40 * 86_400_000
    with EventLog.open(data, Options(segment_bytes=4096, clock_ms=lambda: old_clock)) as log:
        for i in range(30):
            log.append([Event(type="source.submitted", lead_id=f"old-{i}", flow_id="flow-1", lead={"i": i})])
    server = spawn(data)
    with grpc.insecure_channel(server.address) as channel:
        submission = submission_pb2_grpc.SubmissionServiceStub(channel)
        fresh = event_pb2.Event(type="source.submitted", lead_id="fresh", flow_id="flow-1")
        submission.Append(submission_pb2.AppendRequest(events=[fresh]))
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        held = admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(max_age_days=30, legal_hold=True))
        assert (held.policy.account_id, held.policy.max_age_days, held.policy.legal_hold) == (
            "default",
            30,
            True,
        )
        assert admin.ApplyRetention(admin_pb2.ApplyRetentionRequest()).events_removed == 0
        admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(account_id="default", max_age_days=30))
        report = admin.ApplyRetention(admin_pb2.ApplyRetentionRequest())
        assert report.events_removed == 30 and report.bytes_freed > 0
        assert report.segments_deleted + report.segments_rewritten >= 1
        query = query_pb2_grpc.QueryServiceStub(channel)
        left = query.QueryEvents(query_pb2.QueryEventsRequest(page_size=100)).events
        assert [e.lead_id for e in left] == ["fresh"]
    assert server.stop() == 0


def test_a_port_in_use_is_one_clear_line(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn(tmp_path / "one")
    result = subprocess.run(
        serve_command(tmp_path / "two", "--listen", server.address),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert server.address in result.stderr and "Traceback" not in result.stderr
    assert server.stop() == 0
    assert os.path.isdir(tmp_path / "one")
