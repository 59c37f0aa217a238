"""NATS JetStream sinks end to end: a real ``leadtrail serve`` and real ``nats-server -js``
processes on loopback. LeadTrail killed with SIGKILL mid-stream and restarted, nats-server
stopped and restarted mid-stream, a 3-node JetStream cluster (stream with 3 replicas) losing
its stream leader mid-stream: in every case a pull consumer on the stream ends with every
matching event exactly once, in position order. An unreachable server is the sink's status
("retrying" with the error), never an error of SetSink.

The server retries fast (``LEADTRAIL_SINK_POLICY``); every wait polls with a deadline.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from leadtrail.server.sinks.sink import POLICY_ENV
from leadtrail.storage import DEFAULT_ACCOUNT
from leadtrail.v1 import (
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    sinks_pb2,
    sinks_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

from .conftest import ServerProcess, lead_event

nats_servers = sys.modules["nats_servers"]  # loaded by tests/conftest.py
FAST = "first=0.05,max=0.5,timeout=1"


class Calls:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.sinks = sinks_pb2_grpc.SinkServiceStub(self.channel)
        self.submission = submission_pb2_grpc.SubmissionServiceStub(self.channel)
        self.query = query_pb2_grpc.QueryServiceStub(self.channel)

    def append(self, events: list[event_pb2.Event]) -> list[str]:
        answer = self.submission.Append(submission_pb2.AppendRequest(events=events))
        return [r.id for r in answer.results]

    def append_rounds(self, rounds: int, size: int = 20) -> list[str]:
        """``rounds`` appends of ``size`` matching events, each followed by one that does not match."""
        ids: list[str] = []
        for _ in range(rounds):
            ids += self.append([lead_event() for _ in range(size)])
            self.append([lead_event(type="buyer.accepted")])
        return ids

    def status(self, name: str) -> sinks_pb2.SinkStatus:
        return self.sinks.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name=name))

    def wait_status(
        self, name: str, until: Callable[[sinks_pb2.SinkStatus], bool], timeout: float = 60.0
    ) -> sinks_pb2.SinkStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if until(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"sink {name!r} did not get there within {timeout} s: {status}")
            time.sleep(0.05)

    def position(self, event_id: str) -> int:
        return int(self.query.GetEvent(query_pb2.GetEventRequest(id=event_id)).position)

    def close(self) -> None:
        self.channel.close()


def nats_sink(name: str, servers: list[str], stream: str, **options: Any) -> sinks_pb2.Sink:
    """A sink to ``stream``, its subjects prefixed by the stream's name in lower case (the
    tests share a server, where two streams may not hold the same subjects)."""
    target = sinks_pb2.NatsTarget(
        servers=servers, stream=stream, subject_prefix=stream.lower(), replicas=options.pop("replicas", 1)
    )
    options.setdefault("filter", event_pb2.EventFilter(types=["source.*"]))
    return sinks_pb2.Sink(name=name, nats=target, **options)


def assert_stream_holds(urls: list[str], stream: str, ids: list[str], calls: Calls) -> None:
    """The stream's consumer sees exactly ``ids``, once each, in position order, as events."""
    messages = nats_servers.read_stream(urls, stream)
    assert [m.msg_id for m in messages] == ids
    bodies = [orjson.loads(m.data) for m in messages]
    assert [b["id"] for b in bodies] == ids
    positions = [b["position"] for b in bodies]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {m.subject for m in messages} == {f"{stream.lower()}.{DEFAULT_ACCOUNT}.source.submitted"}
    assert positions[-1] == calls.position(ids[-1])


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = nats_servers.NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(POLICY_ENV, FAST)
        process = ServerProcess(tmp_path_factory.mktemp("sinks") / "data", "--http", "off").start()
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


@pytest.fixture(scope="module")
def calls(server: ServerProcess) -> Iterator[Calls]:
    c = Calls(server.address)
    yield c
    c.close()


def test_a_nats_sink_publishes_every_matching_event_once_in_order(calls: Calls, nats_server: Any) -> None:
    answer = calls.sinks.SetSink(nats_sink("stream", [nats_server.url], "EVENTS"))
    assert answer.nats.stream == "EVENTS" and answer.nats.subject_prefix == "events"
    ids = calls.append_rounds(5)
    status = calls.wait_status("stream", lambda s: s.delivered_total == len(ids) and s.lag_events == 0)
    assert status.state == "running" and status.last_error == ""
    assert_stream_holds([nats_server.url], "EVENTS", ids, calls)
    body = orjson.loads(nats_servers.read_stream([nats_server.url], "EVENTS")[0].data)
    assert body["lead"] == {"email": "dana@example.com", "state": "CA"} and body["type"] == "source.submitted"
    calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="stream"))


def test_a_masked_nats_sink_publishes_what_a_reader_sees(calls: Calls, nats_server: Any) -> None:
    calls.sinks.SetSink(nats_sink("masked", [nats_server.url], "MASKED", masked=True))
    lead = {"email": "dana@example.com", "phone": "+1 555 010 2030", "state": "CA"}
    ids = calls.append([lead_event(lead=lead) for _ in range(3)])
    calls.wait_status("masked", lambda s: s.delivered_total == len(ids))
    messages = nats_servers.read_stream([nats_server.url], "MASKED")
    assert [m.msg_id for m in messages] == ids
    for m in messages:
        assert orjson.loads(m.data)["lead"] == {
            "email": "d***@example.com",
            "phone": "***-***-2030",
            "state": "CA",
        }
        assert b"dana@example.com" not in m.data
    calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="masked"))


def test_an_unreachable_server_is_a_status_and_delivery_starts_when_it_is_up(
    calls: Calls, tmp_path: Path
) -> None:
    port = nats_servers.free_port()
    url = f"nats://127.0.0.1:{port}"
    calls.sinks.SetSink(nats_sink("later", [url], "LATER"))  # accepted: nothing answers there yet
    ids = calls.append_rounds(2)
    status = calls.wait_status("later", lambda s: s.state == "retrying")
    assert url in status.last_error and status.HasField("last_error_at")
    assert status.delivered_total == 0 and status.lag_events >= len(ids)
    server = nats_servers.NatsServer(tmp_path / "nats", port=port).start()
    try:
        status = calls.wait_status("later", lambda s: s.delivered_total == len(ids))
        assert status.state == "running"
        assert_stream_holds([url], "LATER", ids, calls)
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="later"))
    finally:
        server.stop()


def test_nats_server_stopped_and_restarted_mid_stream(calls: Calls, tmp_path: Path) -> None:
    server = nats_servers.NatsServer(tmp_path / "nats").start()
    try:
        calls.sinks.SetSink(nats_sink("bounce", [server.url], "BOUNCE"))
        ids = calls.append_rounds(3)
        calls.wait_status("bounce", lambda s: s.delivered_total == len(ids))
        ids += calls.append_rounds(3)  # on their way while the server stops
        server.stop()
        ids += calls.append_rounds(3)
        status = calls.wait_status("bounce", lambda s: s.state == "retrying")
        assert server.url in status.last_error
        server.start()
        ids += calls.append_rounds(2)
        server.restart(signal.SIGKILL)  # and once more, killed, while events keep coming
        ids += calls.append_rounds(2)
        status = calls.wait_status("bounce", lambda s: s.delivered_total >= len(ids) and s.lag_events == 0)
        assert status.state == "running"
        assert_stream_holds([server.url], "BOUNCE", ids, calls)
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="bounce"))
    finally:
        server.stop()


def test_leadtrail_killed_mid_stream_and_restarted(
    spawn: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POLICY_ENV, FAST)
    server = nats_servers.NatsServer(tmp_path / "nats").start()
    data = tmp_path / "data"
    try:
        process = spawn(data, "--http", "off")
        calls = Calls(process.address)
        calls.sinks.SetSink(nats_sink("crash", [server.url], "CRASH"))
        ids = calls.append_rounds(10, size=50)
        calls.close()
        process.kill()  # while the sink is publishing what was just appended
        process = spawn(data, "--http", "off")
        calls = Calls(process.address)
        ids += calls.append_rounds(2)
        calls.wait_status("crash", lambda s: s.lag_events == 0 and s.delivered_total > 0)
        # killed again while it holds events nats-server has not taken (it is down)
        server.stop()
        ids += calls.append_rounds(3)
        held = calls.wait_status("crash", lambda s: s.state == "retrying" and s.lag_events >= 60)
        assert held.delivered_position < calls.position(ids[-60])
        calls.close()
        process.kill()
        server.start()
        process = spawn(data, "--http", "off")
        calls = Calls(process.address)
        ids += calls.append_rounds(2)
        status = calls.wait_status(
            "crash", lambda s: s.lag_events == 0 and s.delivered_position >= calls.position(ids[-1])
        )
        assert status.state == "running"
        assert_stream_holds([server.url], "CRASH", ids, calls)
        calls.close()
        assert process.stop() == 0
    finally:
        server.stop()


def test_cluster_stream_with_3_replicas_loses_a_node_mid_stream(calls: Calls, tmp_path: Path) -> None:
    cluster = nats_servers.NatsCluster(tmp_path / "cluster").start()
    try:
        calls.sinks.SetSink(nats_sink("cluster", cluster.urls, "CLUSTER", replicas=3))
        ids = calls.append_rounds(3)
        calls.wait_status("cluster", lambda s: s.delivered_total == len(ids))
        leader = nats_servers.stream_leader(cluster.urls, "CLUSTER")
        ids += calls.append_rounds(3)
        next(s for s in cluster.servers if s.name == leader).kill()
        ids += calls.append_rounds(5)
        alive = [s.url for s in cluster.servers if s.name != leader]
        status = calls.wait_status("cluster", lambda s: s.delivered_total >= len(ids) and s.lag_events == 0)
        assert status.state == "running"
        assert nats_servers.stream_leader(alive, "CLUSTER") != leader
        assert_stream_holds(alive, "CLUSTER", ids, calls)
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="cluster"))
    finally:
        cluster.stop()
