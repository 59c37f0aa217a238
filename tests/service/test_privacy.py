"""Personal data over a real server: secrets are never stored or returned in clear, personal
fields are masked in every answer to a reader or analyst and shown to admins."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from leadtrail.v1 import event_pb2, query_pb2, stream_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
Server = Any  # conftest.ServerProcess
CLI = [sys.executable, "-m", "leadtrail.server.cli"]

SSN, PASSWORD, API_KEY = "123-45-6789", "hunter2-correct-horse", "sk_live_4f9a8b7c6d5e"
PERSON = {
    "first_name": "Dana",
    "last_name": "Whitaker",
    "email": "dana.whitaker@example.com",
    "phone_1": "(555) 201-4567",
    "address_1": "12 Harbor Lane",
    "ip_address": "203.0.113.9",
    "dob": "1984-02-17",
    "state": "CA",
    "credit_rating": "good",
}


def event(lead_id: str, lead: dict[str, Any], details: dict[str, Any] | None = None) -> event_pb2.Event:
    e = event_pb2.Event(type="source.submitted", lead_id=lead_id, flow_id="flow-pii", entity_id="src-1")
    e.lead_json = json.dumps(lead).encode()
    if details:
        e.details_json = json.dumps(details).encode()
    return e


def lead_of(message: event_pb2.Event) -> dict[str, Any]:
    if message.lead_json:
        value: dict[str, Any] = json.loads(message.lead_json)
        return value
    return json_format.MessageToDict(message.lead)


def test_secrets_are_stored_and_returned_only_as_fingerprints(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = spawn(data)
    with grpc.insecure_channel(server.address) as channel:
        from leadtrail.v1 import query_pb2_grpc, submission_pb2_grpc

        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        query = query_pb2_grpc.QueryServiceStub(channel)
        nested = {"ssn": SSN, "contact": {"password": PASSWORD}, **PERSON}
        request = submission_pb2.AppendRequest(
            events=[
                event("lead-s1", nested, {"api_key": API_KEY}),
                event("lead-s2", {"ssn": SSN}),
                event("lead-s3", {"ssn": "987-65-4321"}),
            ]
        )
        results = submit.Append(request, timeout=30).results
        stored = [query.GetEvent(query_pb2.GetEventRequest(id=r.id, json_snapshots=True)) for r in results]
    first, same, other = (lead_of(e) for e in stored)
    assert first["ssn"].startswith("fp:") and first["contact"]["password"].startswith("fp:")
    assert json.loads(stored[0].details_json)["api_key"].startswith("fp:")
    assert first["ssn"] == same["ssn"] != other["ssn"]  # equal values stay comparable
    assert first["email"] == PERSON["email"]  # personal, not secret: kept, shown to admins
    assert server.stop() == 0

    clear = [SSN.encode(), PASSWORD.encode(), API_KEY.encode(), b"987-65-4321"]
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not [c for c in clear if c in content], path
    dump = subprocess.run([*CLI, "dump", "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("fp:") >= 4 and PERSON["email"] in dump.stdout
    assert not [c for c in clear if c.decode() in dump.stdout]


def new_key(server: Server, role: str) -> tuple[tuple[str, str]]:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(server.data), "--account", "acme", "--role", role],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return (("authorization", f"Bearer {done.stdout.strip()}"),)


@pytest.fixture(scope="module")
def roles(server: Server, stubs: Stubs) -> dict[str, Any]:
    made = {role: new_key(server, role) for role in ("writer", "reader", "analyst", "admin")}
    moved = {**PERSON, "address_1": "40 Ocean Avenue", "email": "dana.w@example.org"}
    request = submission_pb2.AppendRequest(events=[event("lead-p", PERSON), event("lead-p", moved)])
    stubs.submission.Append(request, metadata=made["writer"], timeout=30)
    return made


def assert_masked(lead: dict[str, Any]) -> None:
    assert lead["email"] in ("d***@example.com", "d***@example.org")
    assert lead["phone_1"] == "***-***-4567"
    assert lead["first_name"] == "D***" and lead["last_name"] == "W***"
    assert lead["address_1"] == lead["ip_address"] == lead["dob"] == "***"
    assert lead["state"] == "CA" and lead["credit_rating"] == "good"  # plain fields stay


@pytest.mark.parametrize("role", ["reader", "analyst"])
def test_readers_and_analysts_see_personal_fields_masked_everywhere(
    stubs: Stubs, roles: dict[str, Any], role: str
) -> None:
    md = roles[role]
    by_lead = event_pb2.EventFilter(lead_id="lead-p")
    page = stubs.query.QueryEvents(
        query_pb2.QueryEventsRequest(filter=by_lead, include_lead=True, json_snapshots=True), metadata=md
    )
    for e in page.events:
        assert_masked(lead_of(e))
    assert_masked(lead_of(stubs.query.GetEvent(query_pb2.GetEventRequest(id=page.events[0].id), metadata=md)))
    timeline = stubs.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-p"), metadata=md)
    for step in timeline.steps:
        assert_masked(lead_of(step.event))
    shown = str(timeline)
    assert (
        "Whitaker" not in shown and "Harbor" not in shown and "Ocean" not in shown and "201-4567" not in shown
    )
    changed = {c.field for c in timeline.steps[1].changes}
    assert "email" in changed  # masked values still differ where the domains do
    call = stubs.stream.Subscribe(
        stream_pb2.SubscribeRequest(filter=by_lead, from_start=True, batch_size=10, json_snapshots=True),
        metadata=md,
    )
    for message in call:
        if message.HasField("caught_up"):
            break
        for e in message.events.events:
            assert_masked(lead_of(e))
    call.cancel()


def test_exports_mask_personal_fields_for_analysts(stubs: Stubs, roles: dict[str, Any]) -> None:
    by_lead = event_pb2.EventFilter(lead_id="lead-p")
    jsonl = b"".join(
        c.data
        for c in stubs.query.Export(
            query_pb2.ExportRequest(filter=by_lead, format=query_pb2.EXPORT_FORMAT_JSONL),
            metadata=roles["analyst"],
        )
    )
    lines = [json.loads(line) for line in jsonl.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert_masked(line["lead"])
    request = query_pb2.ExportRequest(
        filter=by_lead, format=query_pb2.EXPORT_FORMAT_CSV, fields=["id", "lead.email", "lead.state"]
    )
    text = b"".join(c.data for c in stubs.query.Export(request, metadata=roles["analyst"])).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert [row[1:] for row in rows[1:]] == [["d***@example.com", "CA"], ["d***@example.org", "CA"]]


def test_admins_see_personal_fields_in_clear(stubs: Stubs, roles: dict[str, Any]) -> None:
    timeline = stubs.query.GetTimeline(
        query_pb2.GetTimelineRequest(lead_id="lead-p"), metadata=roles["admin"]
    )
    assert lead_of(timeline.steps[0].event) == PERSON
    assert lead_of(timeline.steps[1].event)["address_1"] == "40 Ocean Avenue"


def test_names_are_classed_in_any_case_style_and_inside_lists() -> None:
    from leadtrail.server.privacy import field_class, mask_pii, seal_secrets

    assert {field_class(k) for k in ("socialSecurityNumber", "creditCardNumber", "bankAccountNumber")} == {
        "secret"
    }
    assert {
        field_class(k) for k in ("firstName", "phoneNumber", "emailAddress", "dateOfBirth", "emails")
    } == {"pii"}
    assert {field_class(k) for k in ("leadId", "subId", "source.name", "status")} == {"plain"}
    lead = {"contacts": [{"ssn": SSN, "email": "dana@example.com"}], "ssn": "fp:123-45-6789"}
    sealed = seal_secrets(lead, lambda value: "fp:" + "0" * 32)
    assert sealed["contacts"][0]["ssn"] == "fp:" + "0" * 32 and sealed["ssn"] == "fp:" + "0" * 32
    assert sealed["contacts"][0]["email"] == "dana@example.com"
    masked = mask_pii({"contacts": [{"email": "dana@example.com"}], "emails": ["lee@example.org"]})
    assert masked == {"contacts": [{"email": "d***@example.com"}], "emails": ["l***@example.org"]}
