"""Sinks under ``leadtrail serve --workers 2``: the sinks run in the writer; a follower
forwards SinkService to it, so every connection, whichever worker the kernel gave it to,
sees the same sinks and the same status, and the sink delivers once."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from leadtrail.server.sinks.sink import POLICY_ENV
from leadtrail.v1 import event_pb2, sinks_pb2, sinks_pb2_grpc, submission_pb2, submission_pb2_grpc

from .conftest import ServerProcess

webhook_receiver = sys.modules["webhook_receiver"]  # loaded by tests/conftest.py
CONNECTIONS = 8
"""Connections of their own: with two workers, some land on the follower (the kernel hashes)."""


@pytest.fixture
def two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    monkeypatch.setenv(POLICY_ENV, "first=0.05,max=0.3,timeout=0.5")
    process = ServerProcess(tmp_path / "data", "--workers", "2", "--http", "off").start()
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


def test_every_worker_serves_the_writers_sinks(two_workers: ServerProcess) -> None:
    channels = [
        grpc.insecure_channel(two_workers.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    try:
        with webhook_receiver.Receiver(lambda index, request: 200) as receiver:
            sink = sinks_pb2.Sink(
                name="workers",
                webhook=sinks_pb2.WebhookTarget(url=receiver.url(), batch_size=4, max_wait_ms=100),
            )
            sinks_pb2_grpc.SinkServiceStub(channels[0]).SetSink(sink, timeout=10)
            events = [
                event_pb2.Event(type="source.submitted", lead_id=f"w-{i}", flow_id="f") for i in range(8)
            ]
            ids: list[str] = []
            for i, channel in enumerate(channels):
                append = submission_pb2.AppendRequest(events=events[i : i + 1])
                ids += [
                    r.id
                    for r in submission_pb2_grpc.SubmissionServiceStub(channel)
                    .Append(append, timeout=10)
                    .results
                ]
            seen = receiver.wait_for(lambda r: sum(len(orjson.loads(x.body)) for x in r) >= 8, timeout=20)
            assert sorted(e["id"] for r in seen for e in orjson.loads(r.body)) == sorted(ids)
            deadline = time.monotonic() + 20
            while True:
                answers = [
                    sinks_pb2_grpc.SinkServiceStub(c).GetSinkStatus(
                        sinks_pb2.GetSinkStatusRequest(name="workers"), timeout=10
                    )
                    for c in channels
                ]
                if all(a.delivered_total == 8 for a in answers) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert {(a.delivered_total, a.state) for a in answers} == {(8, "running")}
            for channel in channels:
                listed = sinks_pb2_grpc.SinkServiceStub(channel).ListSinks(
                    sinks_pb2.ListSinksRequest(), timeout=10
                )
                assert [s.name for s in listed.sinks] == ["workers"]
    finally:
        for channel in channels:
            channel.close()
