"""Webhook sinks end to end: a real ``leadtrail serve`` process and a real HTTP receiver on
loopback that fails, hangs, and checks signatures.

The server runs with a fast retry policy (``LEADTRAIL_SINK_POLICY``) so that retries and
timeouts take fractions of a second; every wait polls with a deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import orjson
import pytest
from leadtrail.server.alerts.signing import verify
from leadtrail.server.sinks.sink import POLICY_ENV
from leadtrail.server.sinks.webhook import BATCH_ID_HEADER, SINK_HEADER
from leadtrail.v1 import event_pb2, sinks_pb2, sinks_pb2_grpc, submission_pb2, submission_pb2_grpc

from .conftest import ServerProcess, lead_event

webhook_receiver = sys.modules["webhook_receiver"]  # loaded by tests/conftest.py
HANG = webhook_receiver.HANG
Receiver = webhook_receiver.Receiver
Received = webhook_receiver.Received
FAST = "first=0.05,max=0.3,timeout=0.5"
SECRET = "sink-secret-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(POLICY_ENV, FAST)
        process = ServerProcess(tmp_path_factory.mktemp("sinks") / "data", "--http", "off").start()
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


class Calls:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.sinks = sinks_pb2_grpc.SinkServiceStub(self.channel)
        self.submission = submission_pb2_grpc.SubmissionServiceStub(self.channel)

    def append(self, events: list[event_pb2.Event]) -> list[str]:
        answer = self.submission.Append(submission_pb2.AppendRequest(events=events))
        return [r.id for r in answer.results]

    def status(self, name: str) -> sinks_pb2.SinkStatus:
        return self.sinks.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name=name))

    def wait_status(
        self, name: str, until: Callable[[sinks_pb2.SinkStatus], bool], timeout: float = 30.0
    ) -> sinks_pb2.SinkStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if until(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"sink {name!r} did not get there within {timeout} s: {status}")
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def calls(server: ServerProcess) -> Iterator[Calls]:
    c = Calls(server.address)
    yield c
    c.close()


def webhook_sink(name: str, url: str, **options: Any) -> sinks_pb2.Sink:
    target = sinks_pb2.WebhookTarget(
        url=url, secret=options.pop("secret", SECRET), batch_size=options.pop("batch_size", 10)
    )
    target.max_wait_ms = options.pop("max_wait_ms", 100)
    return sinks_pb2.Sink(name=name, webhook=target, **options)


def delivered(requests: list[Received]) -> list[dict[str, Any]]:
    """Every event the receiver took (2xx answered), in the order received, once per batch id."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for r in requests:
        seen[r.headers[BATCH_ID_HEADER]] = orjson.loads(r.body)
    return [e for batch in seen.values() for e in batch]


def plan_by_status(answers: dict[int, int]) -> Callable[[int, Received], int]:
    return lambda index, request: answers.get(index, 200)


def test_a_webhook_sink_delivers_every_matching_event_in_order_signed(calls: Calls) -> None:
    with Receiver(lambda index, request: 200) as receiver:
        sink = webhook_sink("crm", receiver.url(), filter=event_pb2.EventFilter(types=["source.*"]))
        answer = calls.sinks.SetSink(sink)
        assert answer.webhook.secret_set and not answer.webhook.secret
        assert answer.webhook.batch_size == 10 and answer.HasField("set_at")
        ids = calls.append([lead_event(type="source.submitted") for _ in range(23)])
        calls.append([lead_event(type="buyer.accepted") for _ in range(3)])
        seen = receiver.wait_for(lambda r: len(delivered(r)) >= 23)
        time.sleep(0.3)  # nothing else arrives: the other type is not handed on
        seen = receiver.seen()
        events = delivered(seen)
        assert [e["id"] for e in events] == ids
        assert all(e["type"] == "source.submitted" for e in events)
        positions = [e["position"] for e in events]
        assert positions == sorted(positions)
        for r in seen:
            assert verify(SECRET, r.body, r.headers["X-LeadTrail-Signature"])
            assert r.headers[SINK_HEADER] == "crm"
            assert len(orjson.loads(r.body)) <= 10
        status = calls.wait_status("crm", lambda s: s.delivered_total == 23)
        assert status.state == "running" and status.last_error == ""
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="crm"))
