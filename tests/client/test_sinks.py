"""The SDK's sink calls against a real server and a real HTTP receiver, the blocking and the
asyncio client alike: sinks set, read back (never a secret), delivering, their status,
deleted; refusals as the SDK's errors; the value types' checks."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from leadtrail.client import (
    AsyncClient,
    Client,
    Event,
    EventFilter,
    FilesTarget,
    InvalidArgumentError,
    NatsTarget,
    NotFoundError,
    Sink,
    SinkStatus,
    WebhookTarget,
)

server_process = sys.modules["server_process"]
webhook_receiver = sys.modules["webhook_receiver"]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("sdk-sinks") / "data"
    process = server_process.ServerProcess(data, "--http", "off").start()
    yield process.address
    assert process.stop() == 0


def wait_status(client: Client, name: str, delivered: int, timeout: float = 20.0) -> SinkStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_sink_status(name)
        if status.delivered_total >= delivered:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_a_sink_set_delivers_and_reads_back_without_its_secret(address: str) -> None:
    with webhook_receiver.Receiver(lambda index, request: 200) as receiver, Client(address) as client:
        stored = client.set_sink(
            "crm",
            target=WebhookTarget(receiver.url(), secret="sdk-secret", batch_size=5, max_wait_ms=100),
            filter=EventFilter(types="source.*"),
            start="end",
        )
        assert stored.target == WebhookTarget(receiver.url(), batch_size=5, max_wait_ms=100, secret_set=True)
        assert stored.filter == EventFilter(types=("source.*",)) and stored.set_at is not None
        assert client.list_sinks() == [stored]
        results = client.append(
            [Event(type="source.submitted", lead_id=f"l-{i}", flow_id="flow-sdk") for i in range(7)]
        )
        status = wait_status(client, "crm", 7)
        assert status.state == "running" and status.lag_events == 0 and status.last_error_at is None
        got = [e["id"] for r in receiver.seen() for e in orjson.loads(r.body)]
        assert got == [r.id for r in results]
        client.delete_sink("crm")
        assert client.list_sinks() == []
        with pytest.raises(NotFoundError):
            client.get_sink_status("crm")


def test_other_targets_read_back_as_set(address: str) -> None:
    with Client(address) as client:
        nats = client.set_sink(Sink("to-nats", NatsTarget("nats://127.0.0.1:9", "EVENTS", replicas=3)))
        assert nats.target == NatsTarget(("nats://127.0.0.1:9",), "EVENTS", "leadtrail", 3, 7200)
        files = client.set_sink(
            Sink("to-files", FilesTarget("warehouse/csv", "csv", rotate_events=500, fields=("id", "type")))
        )
        assert files.target == FilesTarget("warehouse/csv", "csv", 500, 60, ("id", "type"))
        for name in ("to-nats", "to-files"):
            client.delete_sink(name)


def test_refusals_are_the_sdks_errors(address: str) -> None:
    with Client(address) as client:
        with pytest.raises(InvalidArgumentError, match=r"webhook\.batch_size"):
            client.set_sink("big", target=WebhookTarget("http://127.0.0.1:9/", batch_size=5000))
        with pytest.raises(InvalidArgumentError, match=r"files\.directory"):
            client.set_sink("escape", target=FilesTarget("../elsewhere"))
        with pytest.raises(NotFoundError):
            client.delete_sink("none")
    with pytest.raises(ValueError, match=r"Sink\.start"):
        Sink("x", WebhookTarget("http://h/"), start="yesterday")
    with pytest.raises(TypeError, match="pass a Sink or a name"):
        Client(address).set_sink(Sink("x", WebhookTarget("http://h/")), masked=True)


def test_the_async_client_does_the_same(address: str) -> None:
    async def run() -> None:
        async with AsyncClient(address) as client:
            stored = await client.set_sink(
                Sink(
                    "async-sink", WebhookTarget("http://127.0.0.1:9/", secret="s"), start="start", masked=True
                )
            )
            assert stored.masked and stored.target.secret_set  # type: ignore[union-attr]
            assert [s.name for s in await client.list_sinks()] == ["async-sink"]
            status = await client.get_sink_status("async-sink")
            assert status.name == "async-sink" and status.state in ("running", "retrying")
            await client.delete_sink("async-sink")
            with pytest.raises(NotFoundError):
                await client.delete_sink("async-sink")

    asyncio.run(run())
