"""A subscription's replay from disk is spliced from the stored bytes for roles that see events as
stored, and masked once per event for roles that do not: per role and snapshot form, every
replayed event equals the one ``GetEvent`` answers the same caller (itself tested per role), and
personal fields reach only the roles allowed to see them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from leadtrail.v1 import (
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

Server = Any  # conftest.ServerProcess
CLI = [sys.executable, "-m", "leadtrail.server.cli"]
PERSON = {"first_name": "Dana", "email": "dana.whitaker@example.com", "state": "CA"}
LEADS = 30


def new_key(data: Path, role: str) -> tuple[tuple[str, str]]:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(data), "--account", "acme", "--role", role],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return (("authorization", f"Bearer {done.stdout.strip()}"),)


def write_store(data: Path, spawn: Callable[..., Server]) -> dict[str, Any]:
    """``LEADS`` two-step leads written by one server, then stopped: the server the test reads
    through next has an empty live feed, so every replayed event comes from disk."""
    writer = spawn(data)
    keys = {role: new_key(data, role) for role in ("writer", "reader", "admin")}
    with grpc.insecure_channel(writer.address) as channel:
        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        events = []
        for n in range(LEADS):
            for step, person in enumerate((PERSON, {**PERSON, "email": f"d{n}@example.org"})):
                e = event_pb2.Event(type="lead.updated", lead_id=f"lead-{n}", flow_id="flow-r")
                e.lead_json = json.dumps({**person, "n": n, "step": step}).encode()
                e.details_json = json.dumps({"attempt": step}).encode()
                e.price = "1.25"
                events.append(e)
        submit.Append(submission_pb2.AppendRequest(events=events), metadata=keys["writer"], timeout=30)
    assert writer.stop() == 0, "".join(writer.stderr_lines)
    return keys


def replayed(address: str, md: Any, json_snapshots: bool, batch_size: int) -> list[event_pb2.Event]:
    with grpc.insecure_channel(address) as channel:
        call = stream_pb2_grpc.StreamServiceStub(channel).Subscribe(
            stream_pb2.SubscribeRequest(
                filter=event_pb2.EventFilter(types=["lead.updated"]),  # not the reads' audit records
                from_start=True,
                json_snapshots=json_snapshots,
                batch_size=batch_size,
            ),
            metadata=md,
            timeout=60,
        )
        got: list[event_pb2.Event] = []
        for message in call:
            if message.HasField("caught_up"):
                break
            got.extend(message.events.events if message.HasField("events") else [message.event])
        call.cancel()
    return got


def test_a_replay_from_disk_answers_each_role_as_get_event_does(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    keys = write_store(data, spawn)
    server = spawn(data)
    with grpc.insecure_channel(server.address) as channel:
        query = query_pb2_grpc.QueryServiceStub(channel)
        for role in ("reader", "admin"):
            md = keys[role]
            for json_snapshots in (True, False):
                for batch_size in (0, 7):
                    got = replayed(server.address, md, json_snapshots, batch_size)
                    assert [e.position for e in got] == list(range(1, 2 * LEADS + 1))
                    for e in got:
                        single = query.GetEvent(
                            query_pb2.GetEventRequest(id=e.id, json_snapshots=json_snapshots), metadata=md
                        )
                        assert e == single
                        assert e.price == "1.25"
                        lead = json.loads(e.lead_json) if json_snapshots else dict(e.lead)
                        assert lead["state"] == "CA"
                        if role == "admin":
                            assert lead["first_name"] == "Dana"
                        else:
                            assert lead["first_name"] == "D***" and "whitaker" not in str(lead)
    assert server.stop() == 0, "".join(server.stderr_lines)


def test_a_pump_splicing_stored_events_sends_what_a_pump_that_encodes_sends(tmp_path: Path) -> None:
    """Without gRPC: a replay read from disk in the stored form, then from the live feed, in
    batches and one by one, sends byte for byte the events a pump encoding decoded events sends,
    in order (chunks, and so batches, may be cut at other events: the stored form is smaller)."""
    import asyncio

    from leadtrail.server.convert import event_to_proto
    from leadtrail.server.feed import Feed
    from leadtrail.server.subscription import SubscriptionPump, event_field
    from leadtrail.storage import Event, EventFilter, EventLog, StoredEvent

    async def run_inline(fn: Callable[[], Any]) -> Any:
        return fn()

    with EventLog.open(tmp_path / "pump") as log:
        for start in range(0, 700, 100):
            log.append(
                [
                    Event("lead.updated", f"lead-{n % 37}", "flow-p", lead={"n": n, "email": f"p{n}@x.org"})
                    for n in range(start, start + 100)
                ]
            )

        def fill(event: Event, out: event_pb2.Event) -> None:
            event_to_proto(event, out, True)

        def serialized(event: Event) -> bytes:
            return event_field(event_to_proto(event, None, True).SerializeToString())

        async def collect(batch_size: int, spliced: bool, flow: str) -> list[bytes]:
            feed = Feed(0)
            feed.publish(list(log.read_from(401)))  # the feed holds the last 300: the rest is on disk
            stop = [False]
            pump = SubscriptionPump(
                log,
                feed,
                run_inline,
                EventFilter(flow_id=flow),
                None if spliced else fill,
                serialized=serialized if spliced else None,
                stored=StoredEvent.wire if spliced else None,
                batch_size=batch_size,
                closing=lambda: stop[0],
            )
            out = []  # each event's bytes and every other message's: batches may be cut elsewhere
            async for message in pump.responses(0):
                kind = message.WhichOneof("message")
                if kind == "events":
                    out += [e.SerializeToString() for e in message.events.events]
                elif kind == "event":
                    out.append(message.event.SerializeToString())
                else:
                    out.append(message.SerializeToString())
                if message.HasField("caught_up"):
                    stop[0] = True
            return out

        for flow in ("flow-p", "flow-none"):
            for batch_size in (0, 1, 7, 256):
                spliced = asyncio.run(collect(batch_size, True, flow))
                encoded = asyncio.run(collect(batch_size, False, flow))
                assert spliced == encoded
                if flow == "flow-p":
                    positions = [event_pb2.Event.FromString(raw).position for raw in spliced[:-1]]
                    assert positions == list(range(1, 701))
                    assert stream_pb2.SubscribeResponse.FromString(spliced[-1]).caught_up.position == 700
