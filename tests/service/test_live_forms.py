"""Live subscribers of every role and account at once over a real server: the feed encodes
each event once per form and shares it, so this checks that no subscriber is sent another's
form: admins see personal fields, readers and analysts see them masked, in both snapshot
forms, and no account sees another's events."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from google.protobuf import json_format
from leadtrail.v1 import event_pb2, stream_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
Server = Any  # conftest.ServerProcess
Metadata = tuple[tuple[str, str]]
CLI = [sys.executable, "-m", "leadtrail.server.cli"]

EMAIL = "dana.whitaker@example.com"
MASKED_EMAIL = "d***@example.com"
EVENTS = 12


def new_key(server: Server, account: str, role: str) -> Metadata:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(server.data), "--account", account, "--role", role],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return (("authorization", f"Bearer {done.stdout.strip()}"),)


def lead_event(account: str, i: int) -> event_pb2.Event:
    event = event_pb2.Event(type="source.submitted", lead_id=f"lead-{account}-{i}", flow_id="flow-forms")
    event.lead_json = json.dumps({"email": EMAIL, "state": "CA", "n": i}).encode()
    return event


def lead_of(message: event_pb2.Event) -> dict[str, Any]:
    if message.lead_json:
        value: dict[str, Any] = json.loads(message.lead_json)
        return value
    return json_format.MessageToDict(message.lead)


def test_live_subscribers_of_every_role_and_account_each_get_their_own_form(
    server: Server, stubs: Stubs
) -> None:
    keys = {
        (account, role): new_key(server, account, role)
        for account in ("acme", "globex")
        for role in ("writer", "reader", "analyst", "admin")
    }
    subscribers = [
        (account, role, json_snapshots, batch_size)
        for account in ("acme", "globex")
        for role in ("reader", "analyst", "admin")
        for json_snapshots, batch_size in ((True, 0), (False, 5))
    ]
    calls = []
    for account, role, json_snapshots, batch_size in subscribers:
        request = stream_pb2.SubscribeRequest(
            from_end=True, json_snapshots=json_snapshots, batch_size=batch_size
        )
        call = stubs.stream.Subscribe(request, metadata=keys[(account, role)], timeout=60)
        assert next(call).HasField("caught_up")
        calls.append(call)
    # Interleaved, so that both accounts' events sit in the feed together.
    for i in range(EVENTS):
        for account in ("acme", "globex"):
            request = submission_pb2.AppendRequest(events=[lead_event(account, i)])
            stubs.submission.Append(request, metadata=keys[(account, "writer")], timeout=30)

    for (account, role, json_snapshots, _), call in zip(subscribers, calls, strict=True):
        received: list[event_pb2.Event] = []
        for message in call:
            if message.HasField("event"):
                received.append(message.event)
            received.extend(message.events.events)
            if len(received) >= EVENTS:
                break
        call.cancel()
        assert [e.lead_id for e in received] == [f"lead-{account}-{i}" for i in range(EVENTS)], (
            account,
            role,
        )
        for e in received:
            assert e.account_id == account
            assert bool(e.lead_json) == json_snapshots and e.HasField("lead") != json_snapshots
            lead = lead_of(e)
            assert lead["email"] == (EMAIL if role == "admin" else MASKED_EMAIL), (account, role)
            assert lead["state"] == "CA"
