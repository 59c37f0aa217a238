"""NatsTarget alone against real ``nats-server -js`` processes on loopback: publishes with
PubAck, the stream it creates, de-duplication by ``Nats-Msg-Id``, a server stopped and
restarted mid-stream, and a 3-node cluster (stream with 3 replicas) losing its stream leader
mid-stream. In every case a pull consumer on the stream ends with each event once, in order.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from leadtrail.server.sinks import TargetError
from leadtrail.server.sinks.model import NatsSpec
from leadtrail.server.sinks.nats import NatsTarget
from leadtrail.storage import Event, new_event_id

nats_servers = sys.modules["nats_servers"]  # loaded by tests/conftest.py

ACCOUNT = "acme"


def make_events(count: int, first_position: int = 1) -> list[Event]:
    types = ("lead.received", "lead.sold", "delivery.failed")
    return [
        Event(
            types[i % 3],
            f"lead-{i}",
            "flow-1",
            id=new_event_id(1_700_000_000_000 + i),
            timestamp_ms=1_700_000_000_000 + i,
            price="1.25" if i % 3 == 1 else "",
            details={"n": i},
            lead={"email": f"p{i}@example.com"},
            account_id=ACCOUNT,
            position=first_position + i,
            recorded_at_ms=1_700_000_000_000 + i,
        )
        for i in range(count)
    ]


def assert_holds_once_in_order(
    messages: Sequence[Any], events: Sequence[Event], prefix: str = "leadtrail"
) -> None:
    assert [m.msg_id for m in messages] == [e.id for e in events]
    assert [m.subject for m in messages] == [f"{prefix}.{ACCOUNT}.{e.type}" for e in events]
    bodies = [orjson.loads(m.data) for m in messages]
    assert [(b["id"], b["position"], b["lead"]["email"]) for b in bodies] == [
        (e.id, e.position, e.lead["email"]) for e in events
    ]


async def deliver_retrying(target: NatsTarget, events: Sequence[Event], timeout: float = 60.0) -> list[str]:
    """Deliver as the sink does: the same call again after a TargetError; the errors seen."""
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            await target.deliver(events)
            return errors
        except TargetError as error:
            errors.append(str(error))
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def stream_config(url: str, stream: str) -> Any:
    connection = await nats.connect(url, allow_reconnect=False)
    try:
        return (await connection.jetstream().stream_info(stream)).config
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = nats_servers.NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


def test_publishes_with_pubacks_into_the_stream_it_creates(server: Any) -> None:
    spec = NatsSpec(servers=(server.url,), stream="CREATED", duplicate_window_s=600)
    events = make_events(250)

    async def scenario() -> Any:
        target = NatsTarget(spec, ACCOUNT, in_flight=64)
        await target.open()
        await target.deliver(events[:100])
        assert target.pending_from() is None
        await target.deliver(events[100:])
        await target.flush(0)
        await target.close()
        return await stream_config(server.url, "CREATED")

    config = asyncio.run(scenario())
    assert config.subjects == [f"leadtrail.{ACCOUNT}.>"]
    assert str(getattr(config.storage, "value", config.storage)) == "file"
    assert config.num_replicas == 1
    assert config.duplicate_window == 600
    assert_holds_once_in_order(nats_servers.read_stream([server.url], "CREATED"), events)


def test_a_repeat_is_dropped_by_msg_id(server: Any) -> None:
    spec = NatsSpec(servers=(server.url,), stream="REPEATS", subject_prefix="audit")
    events = make_events(150)

    async def scenario() -> None:
        target = NatsTarget(spec, ACCOUNT)
        await target.deliver(events[:100])
        await target.deliver(events[50:100])  # a retry of a call that was stored
        await target.close()
        again = NatsTarget(spec, ACCOUNT)  # a restarted sink replaying from an older position
        await again.deliver(events[20:150])
        await again.close()

    asyncio.run(scenario())
    assert_holds_once_in_order(nats_servers.read_stream([server.url], "REPEATS"), events, prefix="audit")


def test_a_message_from_elsewhere_is_never_followed_by_a_gap(server: Any) -> None:
    """Each message is chained to the one before it (``Nats-Expected-Last-Msg-Id``): after a
    message from another publisher the next call is refused once, then published one by one
    chained to what the stream ends with; the sink's events stay in position order."""
    spec = NatsSpec(servers=(server.url,), stream="CHAINED", subject_prefix="chained")
    events = make_events(90)

    async def scenario() -> list[str]:
        target = NatsTarget(spec, ACCOUNT)
        await target.deliver(events[:30])
        other = await nats.connect(server.url, allow_reconnect=False)
        await other.jetstream().publish(
            f"chained.{ACCOUNT}.other.thing", b"{}", headers={"Nats-Msg-Id": "other-1"}
        )
        await other.close()
        errors = await deliver_retrying(target, events[20:60])  # a replay of ten, then new ones
        await target.deliver(events[60:])
        await target.close()
        return errors

    errors = asyncio.run(scenario())
    assert len(errors) == 1 and "wrong last msg ID: other-1" in errors[0]
    messages = nats_servers.read_stream([server.url], "CHAINED")
    assert [m.msg_id for m in messages] == [e.id for e in events[:30]] + ["other-1"] + [
        e.id for e in events[30:]
    ]


def test_an_existing_stream_without_the_subjects_is_refused(server: Any) -> None:
    async def scenario() -> str:
        connection = await nats.connect(server.url, allow_reconnect=False)
        await connection.jetstream().add_stream(name="OTHER", subjects=["elsewhere.>"])
        await connection.close()
        target = NatsTarget(NatsSpec(servers=(server.url,), stream="OTHER"), ACCOUNT)
        with pytest.raises(TargetError) as raised:
            await target.open()
        return str(raised.value)

    message = asyncio.run(scenario())
    assert "OTHER" in message and "elsewhere.>" in message and f"leadtrail.{ACCOUNT}.>" in message


def test_a_refused_message_and_a_stream_gone_are_target_errors(server: Any) -> None:
    async def scenario() -> tuple[str, str]:
        connection = await nats.connect(server.url, allow_reconnect=False)
        js = connection.jetstream()
        await js.add_stream(name="SMALL", subjects=[f"small.{ACCOUNT}.>"], max_msg_size=200)
        target = NatsTarget(NatsSpec(servers=(server.url,), stream="SMALL", subject_prefix="small"), ACCOUNT)
        with pytest.raises(TargetError) as refused:
            await target.deliver(make_events(3))
        await js.add_stream(name="GONE", subjects=[f"gone.{ACCOUNT}.>"])
        target = NatsTarget(NatsSpec(servers=(server.url,), stream="GONE", subject_prefix="gone"), ACCOUNT)
        await target.deliver(make_events(3))
        await js.delete_stream("GONE")
        with pytest.raises(TargetError) as gone:
            await target.deliver(make_events(3, first_position=4))
        await target.close()
        await connection.close()
        return str(refused.value), str(gone.value)

    refused, gone = asyncio.run(scenario())
    assert refused.startswith("nats: publish to stream SMALL at nats://") and "message size" in refused
    assert gone.startswith("nats: publish to stream GONE") and "no stream answered" in gone


def test_an_unreachable_server_is_a_readable_target_error() -> None:
    url = f"nats://127.0.0.1:{nats_servers.free_port()}"

    async def scenario() -> str:
        target = NatsTarget(NatsSpec(servers=(url,), stream="NOWHERE"), ACCOUNT)
        with pytest.raises(TargetError) as raised:
            await target.deliver(make_events(1))
        await target.close()
        return str(raised.value)

    message = asyncio.run(scenario())
    assert message.startswith("nats: no server answered") and url in message


def test_server_stopped_and_restarted_mid_stream(tmp_path: Path) -> None:
    server = nats_servers.NatsServer(tmp_path / "nats").start()
    events = make_events(600)
    batches = [events[i : i + 50] for i in range(0, len(events), 50)]
    spec = NatsSpec(servers=(server.url,), stream="RESTARTS")

    async def scenario() -> list[str]:
        target = NatsTarget(spec, ACCOUNT)
        for batch in batches[:4]:
            await target.deliver(batch)
        await asyncio.to_thread(server.stop)
        with pytest.raises(TargetError):  # the broken connection
            await target.deliver(batches[4])
        with pytest.raises(TargetError) as down:  # nobody to connect to
            await target.deliver(batches[4])
        assert server.url in str(down.value)
        await asyncio.to_thread(server.start)
        errors: list[str] = []
        for batch in batches[4:8]:
            errors += await deliver_retrying(target, batch)
        # stopped again while a call is in flight: the retry republishes the whole call
        delivery = asyncio.ensure_future(deliver_retrying(target, events[400:]))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(server.restart)
        errors += await delivery
        await target.close()
        return errors

    try:
        asyncio.run(scenario())
        assert_holds_once_in_order(nats_servers.read_stream([server.url], "RESTARTS"), events)
    finally:
        server.stop()


def test_cluster_stream_with_3_replicas_loses_its_leader_mid_stream(tmp_path: Path) -> None:
    cluster = nats_servers.NatsCluster(tmp_path / "cluster").start()
    events = make_events(3000)
    spec = NatsSpec(servers=tuple(cluster.urls), stream="REPLICATED", replicas=3)

    async def leader(urls: list[str]) -> str:
        connection = await nats_servers.connect(urls)
        try:
            info = await connection.jetstream().stream_info("REPLICATED")
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            return str(info.cluster.leader)
        finally:
            await connection.close()

    async def scenario() -> str:
        target = NatsTarget(spec, ACCOUNT, in_flight=100)
        await deliver_retrying(target, events[:500])
        killed = await leader(cluster.urls)
        batches = [events[i : i + 250] for i in range(500, len(events), 250)]

        async def rest() -> None:
            for batch in batches:
                await deliver_retrying(target, batch)

        delivery = asyncio.ensure_future(rest())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(next(s for s in cluster.servers if s.name == killed).kill)
        await delivery
        await target.close()
        return killed

    try:
        killed = asyncio.run(scenario())
        alive = [s.url for s in cluster.servers if s.name != killed]
        assert_holds_once_in_order(nats_servers.read_stream(alive, "REPLICATED"), events)
        assert asyncio.run(leader(alive)) != killed
    finally:
        cluster.stop()
