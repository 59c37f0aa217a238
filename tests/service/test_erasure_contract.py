"""Erasure, field policies and tiered retention over a real server, black box.

`AdminService.EraseLead` erases a lead's personal values (fields classed pii or
secret, and quotes of those values in other text) from every event of the
caller's account, keeps the audit skeleton, records an `audit.erased` event and
leaves no erased value in any answer or any file of the data directory.
`SetFieldPolicy` adds names to the classes per account; `RetentionPolicy`
`pii_max_age_days` / `secret_max_age_days` erase those classes by age.

Only the wire contract (admin.proto, event.proto, API.md) and the `leadtrail`
command are used: raw gRPC stubs, keys made with `leadtrail keys create`.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from leadtrail.v1 import admin_pb2, event_pb2, query_pb2, stream_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
Server = Any  # conftest.ServerProcess
CLI = [sys.executable, "-m", "leadtrail.server.cli"]
Metadata = tuple[tuple[str, str], ...]

ERASED = "[erased]"
DAY_MS = 86_400_000

# -- helpers --------------------------------------------------------------------------


def cli_key(server: Server, account: str, role: str, *scope: str) -> str:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(server.data), "--account", account, "--role", role, *scope],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def auth(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


def code_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def event(
    lead_id: str,
    lead: dict[str, Any],
    details: dict[str, Any] | None = None,
    *,
    type: str = "source.submitted",
    flow_id: str = "flow-erase",
    entity_id: str = "src-1",
    **fields: Any,
) -> event_pb2.Event:
    e = event_pb2.Event(type=type, lead_id=lead_id, flow_id=flow_id, entity_id=entity_id, **fields)
    e.lead_json = json.dumps(lead).encode()
    if details is not None:
        e.details_json = json.dumps(details).encode()
    return e


def append(stubs: Stubs, md: Metadata, *events: event_pb2.Event) -> list[submission_pb2.AppendResult]:
    request = submission_pb2.AppendRequest(events=events)
    return list(stubs.submission.Append(request, metadata=md, timeout=30).results)


def lead_of(e: event_pb2.Event) -> dict[str, Any]:
    if e.lead_json:
        value: dict[str, Any] = json.loads(e.lead_json)
        return value
    return json_format.MessageToDict(e.lead)


def details_of(e: event_pb2.Event) -> dict[str, Any]:
    if e.details_json:
        value: dict[str, Any] = json.loads(e.details_json)
        return value
    return json_format.MessageToDict(e.details)


def as_dict(e: event_pb2.Event) -> dict[str, Any]:
    """Every field of an event, the snapshot and details parsed."""
    bare = event_pb2.Event()
    bare.CopyFrom(e)
    for name in ("lead", "details", "lead_json", "details_json"):
        bare.ClearField(name)
    record = json_format.MessageToDict(bare, preserving_proto_field_name=True)
    record["lead"], record["details"] = lead_of(e), details_of(e)
    return record


def skeleton(e: event_pb2.Event) -> dict[str, Any]:
    record = as_dict(e)
    for name in ("lead", "details", "reason"):
        record.pop(name, None)
    return record


def get_event(stubs: Stubs, md: Metadata, event_id: str) -> event_pb2.Event:
    request = query_pb2.GetEventRequest(id=event_id, json_snapshots=True)
    result: event_pb2.Event = stubs.query.GetEvent(request, metadata=md, timeout=30)
    return result


def timeline(stubs: Stubs, md: Metadata, lead_id: str) -> list[event_pb2.Event]:
    request = query_pb2.GetTimelineRequest(lead_id=lead_id, json_snapshots=True)
    return [step.event for step in stubs.query.GetTimeline(request, metadata=md, timeout=30).steps]


def timeline_audit(stubs: Stubs, md: Metadata, lead_id: str) -> list[event_pb2.Event]:
    """The store's records about the lead, shown apart from its steps."""
    request = query_pb2.GetTimelineRequest(lead_id=lead_id, json_snapshots=True)
    return list(stubs.query.GetTimeline(request, metadata=md, timeout=30).audit)


def query(stubs: Stubs, md: Metadata, lead_id: str = "") -> list[event_pb2.Event]:
    out: list[event_pb2.Event] = []
    token = ""
    while True:
        request = query_pb2.QueryEventsRequest(
            filter=event_pb2.EventFilter(lead_id=lead_id),
            include_lead=True,
            json_snapshots=True,
            page_size=500,
            page_token=token,
        )
        page = stubs.query.QueryEvents(request, metadata=md, timeout=30)
        out.extend(page.events)
        token = page.next_page_token
        if not token:
            return out


def export(stubs: Stubs, md: Metadata, lead_id: str) -> list[dict[str, Any]]:
    request = query_pb2.ExportRequest(
        filter=event_pb2.EventFilter(lead_id=lead_id), format=query_pb2.EXPORT_FORMAT_JSONL
    )
    data = b"".join(chunk.data for chunk in stubs.query.Export(request, metadata=md, timeout=30))
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def replay(stubs: Stubs, md: Metadata, lead_id: str | None) -> list[event_pb2.Event]:
    """Subscribe from_start (to one lead's events, or all) until caught up."""
    request = stream_pb2.SubscribeRequest(
        filter=event_pb2.EventFilter(lead_id=lead_id or ""), from_start=True, json_snapshots=True
    )
    call = stubs.stream.Subscribe(request, metadata=md, timeout=30)
    out: list[event_pb2.Event] = []
    try:
        for message in call:
            kind = message.WhichOneof("message")
            if kind == "event":
                out.append(message.event)
            elif kind == "events":
                out.extend(message.events.events)
            elif kind == "caught_up":
                break
    finally:
        call.cancel()
    return out


def erase(stubs: Stubs, md: Metadata | None, lead_id: str, reason: str = "") -> admin_pb2.EraseLeadResponse:
    request = admin_pb2.EraseLeadRequest(lead_id=lead_id, reason=reason)
    result: admin_pb2.EraseLeadResponse = stubs.admin.EraseLead(request, metadata=md, timeout=60)
    return result


def not_audit(events: list[event_pb2.Event]) -> list[event_pb2.Event]:
    return [e for e in events if not e.type.startswith("audit.")]


def by_id(events: list[event_pb2.Event]) -> dict[str, dict[str, Any]]:
    return {e.id: as_dict(e) for e in events}


# -- the people ---------------------------------------------------------------------

PHILIPPA = {
    "first_name": "Philippa",
    "last_name": "Quarrington",
    "email": "philippa.q@example.net",
    "phone": "(555) 867-5309",
    "address": "19 Juniper Court",
    "ssn": "219-09-9999",
    "email.valid": True,
    "state": "OR",
    "loan_amount": 250000,
    "source": "web-form",
}
PHILIPPA_CLEAR = ["Philippa", "Quarrington", "philippa.q@example.net", "(555) 867-5309", "19 Juniper Court"]
PHILIPPA_ERASED = {
    **PHILIPPA,
    **{k: ERASED for k in ("first_name", "last_name", "email", "phone", "address", "ssn")},
}
BARNABY = {
    "first_name": "Barnaby",
    "last_name": "Hollingworth",
    "email": "barnaby.h@example.org",
    "phone": "(555) 210-3344",
    "address": "4 Orchard Row",
    "ssn": "078-05-1120",
    "state": "WA",
}


@dataclass
class Erasure:
    """A lead of `acme` erased once, with what every view showed before."""

    lead_id: str
    ids: list[str]  # the lead's four events, in append order
    positions: list[int]
    other_ids: list[str]  # another acme lead
    globex_ids: list[str]  # globex's lead with the same lead_id
    response: admin_pb2.EraseLeadResponse
    before_admin: dict[str, dict[str, Any]]  # id -> event as the admin saw it
    before_others: dict[str, dict[str, Any]]  # every other non-audit acme event
    before_globex: dict[str, dict[str, Any]]
    before_reader: list[event_pb2.Event] = field(default_factory=list)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(server: Server, stubs: Stubs) -> dict[str, Metadata]:
    made = {
        "admin": cli_key(server, "acme", "admin"),
        "writer": cli_key(server, "acme", "writer"),
        "reader": cli_key(server, "acme", "reader"),
        "analyst": cli_key(server, "acme", "analyst"),
        "admin_scoped": cli_key(server, "acme", "admin", "--entity", "buyer-1"),
        "globex_admin": cli_key(server, "globex", "admin"),
        "globex_reader": cli_key(server, "globex", "reader"),
        "initech_admin": cli_key(server, "initech", "admin"),
        "umbrella_admin": cli_key(server, "umbrella", "admin"),
        "umbrella_reader": cli_key(server, "umbrella", "reader"),
    }
    return {name: auth(key) for name, key in made.items()}


@pytest.fixture(scope="module")
def erasure(stubs: Stubs, keys: dict[str, Metadata]) -> Erasure:
    lead_id = "lead-erase-1"
    events = [
        event(
            lead_id,
            PHILIPPA,
            reason="new lead",
            price="-3.50",
            duration_ms=12,
            integration="webform",
            outcome=event_pb2.OUTCOME_SUCCESS,
        ),
        event(
            lead_id,
            PHILIPPA,
            {
                "buyer_response": "accepted philippa.q@example.net",
                "rule_set": "default",
                "rules_evaluated": 4,
            },
            type="recipient.delivered",
            entity_id="buyer-1",
            reason="accepted",
            price="25.00",
            response_code=200,
            outcome=event_pb2.OUTCOME_SUCCESS,
        ),
        event(
            lead_id,
            {**PHILIPPA, "notes": "called (555) 867-5309 twice, no answer"},
            type="feedback.received",
            entity_id="buyer-1",
            reason="returned: duplicate of philippa.q@example.net",
            outcome=event_pb2.OUTCOME_FAILURE,
        ),
        event(
            lead_id,
            {"state": "OR", "loan_amount": 250000},
            {"attempt": 2},
            type="retry.scheduled",
            entity_id="",
            outcome=event_pb2.OUTCOME_SKIP,
        ),
    ]
    results = append(stubs, keys["writer"], *events)
    other = append(
        stubs,
        keys["writer"],
        event("lead-keep-1", BARNABY, {"buyer_response": "accepted barnaby.h@example.org"}),
        event("lead-keep-1", BARNABY, type="recipient.delivered", entity_id="buyer-1", price="19.00"),
    )
    globex = append(
        stubs,
        keys["globex_admin"],
        event(lead_id, PHILIPPA, {"buyer_response": "accepted philippa.q@example.net"}),
    )
    admin = keys["admin"]
    before_admin = {r.id: as_dict(get_event(stubs, admin, r.id)) for r in results}
    before_others = {
        e.id: as_dict(e)
        for e in query(stubs, admin)
        if e.lead_id != lead_id and not e.type.startswith("audit.")
    }
    before_globex = by_id(not_audit(timeline(stubs, keys["globex_admin"], lead_id)))
    before_reader = query(stubs, keys["reader"], lead_id)
    response = erase(stubs, admin, lead_id, reason="DSR-1042")
    return Erasure(
        lead_id=lead_id,
        ids=[r.id for r in results],
        positions=[r.position for r in results],
        other_ids=[r.id for r in other],
        globex_ids=[r.id for r in globex],
        response=response,
        before_admin=before_admin,
        before_others=before_others,
        before_globex=before_globex,
        before_reader=before_reader,
    )


def expected_after(erasure: Erasure) -> dict[str, dict[str, Any]]:
    """The lead's events as they must read after the erasure: lead, details, reason."""
    first, second, third, fourth = erasure.ids
    return {
        first: {"lead": PHILIPPA_ERASED, "details": {}, "reason": "new lead"},
        second: {
            "lead": PHILIPPA_ERASED,
            "details": {"buyer_response": f"accepted {ERASED}", "rule_set": "default", "rules_evaluated": 4},
            "reason": "accepted",
        },
        third: {
            "lead": {**PHILIPPA_ERASED, "notes": f"called {ERASED} twice, no answer"},
            "details": {},
            "reason": f"returned: duplicate of {ERASED}",
        },
        fourth: {"lead": {"state": "OR", "loan_amount": 250000}, "details": {"attempt": 2}, "reason": ""},
    }


def check_erased_view(erasure: Erasure, events: list[event_pb2.Event], view: str) -> None:
    expected = expected_after(erasure)
    got = {e.id: e for e in not_audit(events)}
    assert list(got) == erasure.ids, view
    for event_id, want in expected.items():
        e = got[event_id]
        assert lead_of(e) == want["lead"], (view, event_id)
        assert details_of(e) == want["details"], (view, event_id)
        assert e.reason == want["reason"], (view, event_id)
        before = dict(erasure.before_admin[event_id])
        for name in ("lead", "details", "reason"):
            before.pop(name, None)
        assert skeleton(e) == before, (view, event_id)


# -- EraseLead ----------------------------------------------------------------------


def test_setup_shows_the_values_in_clear_before_erasure(erasure: Erasure) -> None:
    """The check the rest rely on: before the erasure the admin saw the values, the reader the quotes."""
    first, second, third, _ = erasure.ids
    assert erasure.before_admin[first]["lead"]["email"] == PHILIPPA["email"]
    assert erasure.before_admin[first]["lead"]["ssn"].startswith("fp:")
    assert erasure.before_admin[second]["details"]["buyer_response"] == "accepted philippa.q@example.net"
    assert erasure.before_admin[third]["reason"] == "returned: duplicate of philippa.q@example.net"
    reader_second = next(e for e in erasure.before_reader if e.id == second)
    assert details_of(reader_second)["buyer_response"] == "accepted philippa.q@example.net"


def test_erase_reports_the_events_whose_content_changed(erasure: Erasure) -> None:
    response = erasure.response
    assert response.events_erased == 3  # the retry event held nothing personal
    assert response.audit_event_id.startswith("evt_") and len(response.audit_event_id) == 30
    assert response.audit_position > max(erasure.positions)


def test_erased_values_read_erased_in_every_admin_view(
    stubs: Stubs, keys: dict[str, Metadata], erasure: Erasure
) -> None:
    admin = keys["admin"]
    check_erased_view(erasure, timeline(stubs, admin, erasure.lead_id), "GetTimeline")
    check_erased_view(erasure, [get_event(stubs, admin, i) for i in erasure.ids], "GetEvent")
    check_erased_view(erasure, query(stubs, admin, erasure.lead_id), "QueryEvents")
    check_erased_view(erasure, replay(stubs, admin, erasure.lead_id), "Subscribe")
    lines = [line for line in export(stubs, admin, erasure.lead_id) if not line["type"].startswith("audit.")]
    expected = expected_after(erasure)
    assert [line["id"] for line in lines] == erasure.ids
    for line in lines:
        want = expected[line["id"]]
        assert (line["lead"], line["details"], line["reason"]) == (
            want["lead"],
            want["details"],
            want["reason"],
        )
        before = erasure.before_admin[line["id"]]
        assert (line["position"], line["type"], line["entity_id"], line["price"], line["flow_id"]) == (
            int(before["position"]),
            before["type"],
            before.get("entity_id", ""),
            before.get("price", ""),
            before["flow_id"],
        )


def test_readers_and_analysts_see_no_erased_value(
    stubs: Stubs, keys: dict[str, Metadata], erasure: Erasure
) -> None:
    for role in ("reader", "analyst"):
        events = query(stubs, keys[role], erasure.lead_id)
        assert [e.id for e in events] == erasure.ids, role  # audit records stay hidden
        shown = json.dumps([as_dict(e) for e in events])
        assert not [v for v in PHILIPPA_CLEAR if v in shown], role
        second = events[1]
        assert details_of(second)["buyer_response"] == f"accepted {ERASED}", role
        assert lead_of(events[2])["notes"] == f"called {ERASED} twice, no answer", role
        assert lead_of(second)["state"] == "OR" and lead_of(second)["loan_amount"] == 250000, role


def test_other_leads_and_other_accounts_are_untouched(
    stubs: Stubs, keys: dict[str, Metadata], erasure: Erasure
) -> None:
    admin = keys["admin"]
    after = {e.id: as_dict(e) for e in query(stubs, admin) if e.id in erasure.before_others}
    assert after == erasure.before_others
    assert set(erasure.other_ids) <= set(after)
    assert after[erasure.other_ids[0]]["lead"]["email"] == BARNABY["email"]
    assert after[erasure.other_ids[0]]["details"]["buyer_response"] == "accepted barnaby.h@example.org"
    globex = by_id(not_audit(timeline(stubs, keys["globex_admin"], erasure.lead_id)))
    assert globex == erasure.before_globex
    assert globex[erasure.globex_ids[0]]["lead"]["email"] == PHILIPPA["email"]


def test_the_audit_erased_event_is_for_admins_only(
    stubs: Stubs, keys: dict[str, Metadata], erasure: Erasure
) -> None:
    response = erasure.response
    audit = get_event(stubs, keys["admin"], response.audit_event_id)
    assert audit.type == "audit.erased"
    assert audit.lead_id == erasure.lead_id
    assert audit.position == response.audit_position
    assert audit.account_id == "acme"
    shown_apart = timeline_audit(stubs, keys["admin"], erasure.lead_id)
    assert response.audit_event_id in [e.id for e in shown_apart if e.type == "audit.erased"]
    for role in ("reader", "analyst"):
        md = keys[role]
        error = code_of(lambda md=md: get_event(stubs, md, response.audit_event_id))
        assert error.code() == grpc.StatusCode.NOT_FOUND, role
        assert not [e for e in timeline(stubs, md, erasure.lead_id) if e.type.startswith("audit.")], role
        assert not timeline_audit(stubs, md, erasure.lead_id), role
        assert response.audit_event_id not in [e.id for e in replay(stubs, md, erasure.lead_id)], role
    error = code_of(lambda: get_event(stubs, keys["globex_admin"], response.audit_event_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_erasing_again_erases_nothing_and_reappends_stay_duplicates(
    stubs: Stubs, keys: dict[str, Metadata], erasure: Erasure
) -> None:
    again = erase(stubs, keys["admin"], erasure.lead_id)
    assert again.events_erased == 0
    # Re-sending an erased event (with its original content) is a duplicate at its position.
    original = event(erasure.lead_id, PHILIPPA, reason="new lead", price="-3.50", id=erasure.ids[0])
    [result] = append(stubs, keys["writer"], original)
    assert (result.duplicate, result.position, result.id) == (True, erasure.positions[0], erasure.ids[0])
    check_erased_view(erasure, timeline(stubs, keys["admin"], erasure.lead_id), "GetTimeline after re-append")


def test_unknown_leads_and_other_accounts_leads_are_not_found(
    stubs: Stubs, keys: dict[str, Metadata]
) -> None:
    error = code_of(lambda: erase(stubs, keys["admin"], "lead-nobody-ever"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    [g] = append(stubs, keys["globex_admin"], event("lead-globex-only", BARNABY))
    before = as_dict(get_event(stubs, keys["globex_admin"], g.id))
    error = code_of(lambda: erase(stubs, keys["admin"], "lead-globex-only"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert as_dict(get_event(stubs, keys["globex_admin"], g.id)) == before
    assert before["lead"]["email"] == BARNABY["email"]
    steps = timeline(stubs, keys["globex_admin"], "lead-globex-only")
    assert [e.type for e in steps] == ["source.submitted"]  # no audit.erased either


def test_lead_id_is_required(stubs: Stubs, keys: dict[str, Metadata]) -> None:
    error = code_of(lambda: erase(stubs, keys["admin"], ""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lead_id" in (error.details() or "")


@pytest.mark.parametrize("role", ["writer", "reader", "analyst", "admin_scoped"])
def test_only_admins_of_the_whole_account_may_erase(
    stubs: Stubs, keys: dict[str, Metadata], role: str
) -> None:
    lead_id = f"lead-denied-{role}"
    [r] = append(
        stubs, keys["writer"], event(lead_id, BARNABY, type="recipient.delivered", entity_id="buyer-1")
    )
    error = code_of(lambda: erase(stubs, keys[role], lead_id))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    after = get_event(stubs, keys["admin"], r.id)
    assert lead_of(after)["email"] == BARNABY["email"] and lead_of(after)["first_name"] == "Barnaby"


def test_a_legal_hold_refuses_erasure_and_changes_nothing(stubs: Stubs, keys: dict[str, Metadata]) -> None:
    admin = keys["initech_admin"]
    [r] = append(
        stubs, admin, event("lead-held", PHILIPPA, {"buyer_response": "accepted philippa.q@example.net"})
    )
    before = as_dict(get_event(stubs, admin, r.id))
    stubs.admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(legal_hold=True), metadata=admin, timeout=30)
    try:
        error = code_of(lambda: erase(stubs, admin, "lead-held"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert as_dict(get_event(stubs, admin, r.id)) == before
        assert not [e for e in timeline(stubs, admin, "lead-held") if e.type == "audit.erased"]
    finally:
        stubs.admin.SetRetentionPolicy(
            admin_pb2.RetentionPolicy(legal_hold=False), metadata=admin, timeout=30
        )
    assert erase(stubs, admin, "lead-held").events_erased == 1  # lifted: it erases


# -- the bytes on disk --------------------------------------------------------------


def dump(data: Path) -> str:
    done = subprocess.run([*CLI, "dump", "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def files_holding(data: Path, needles: list[str]) -> list[tuple[str, str]]:
    found = []
    for path in data.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            found.extend((str(path), n) for n in needles if n.encode() in content)
    return found


def test_erased_values_are_in_no_file_and_no_dump_line(spawn: Callable[..., Server], tmp_path: Path) -> None:
    from leadtrail.v1 import admin_pb2_grpc, query_pb2_grpc, submission_pb2_grpc

    data = tmp_path / "data"
    lead_id = "lead-disk"
    mine = [
        event(lead_id, PHILIPPA),
        event(
            lead_id,
            {**PHILIPPA, "notes": "called (555) 867-5309 twice"},
            {"buyer_response": "accepted philippa.q@example.net"},
            type="recipient.delivered",
            entity_id="buyer-1",
            price="25.00",
        ),
    ]
    server = spawn(data)
    with grpc.insecure_channel(server.address) as channel:
        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        q = query_pb2_grpc.QueryServiceStub(channel)
        results = submit.Append(
            submission_pb2.AppendRequest(events=[*mine, event("lead-stays", BARNABY)]), timeout=30
        ).results
        fingerprint = lead_of(q.GetEvent(query_pb2.GetEventRequest(id=results[0].id, json_snapshots=True)))[
            "ssn"
        ]
    assert fingerprint.startswith("fp:")
    assert server.stop() == 0
    for sent, result in zip(mine, results, strict=False):
        sent.id = result.id  # re-sent below with the ids the server gave them
    needles = [*PHILIPPA_CLEAR, fingerprint]
    before = dump(data)
    assert not [n for n in needles if n not in before]  # the check below can fail
    assert BARNABY["email"] in before

    server = spawn(data)
    with grpc.insecure_channel(server.address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        q = query_pb2_grpc.QueryServiceStub(channel)
        response = admin.EraseLead(admin_pb2.EraseLeadRequest(lead_id=lead_id, reason="DSR-7"), timeout=60)
        assert response.events_erased == 2
        again = submit.Append(submission_pb2.AppendRequest(events=mine), timeout=30).results
        assert [(r.id, r.position, r.duplicate) for r in again] == [
            (r.id, r.position, True) for r in results[:2]
        ]
        shown = lead_of(q.GetEvent(query_pb2.GetEventRequest(id=results[1].id, json_snapshots=True)))
        assert shown["email"] == ERASED and shown["notes"] == f"called {ERASED} twice"
    assert server.stop() == 0

    assert files_holding(data, needles) == []
    after = dump(data)
    assert [n for n in needles if n in after] == []
    records = [json.loads(line) for line in after.splitlines()]
    erased = {r["id"]: r for r in records if r["id"] in {x.id for x in results[:2]}}
    assert len(erased) == 2 and all(r["lead"]["email"] == ERASED for r in erased.values())
    assert BARNABY["email"] in after  # another lead's values stay

    # Idempotency survives a restart too.
    server = spawn(data)
    with grpc.insecure_channel(server.address) as channel:
        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        [r] = submit.Append(submission_pb2.AppendRequest(events=mine[:1]), timeout=30).results
        assert (r.id, r.position, r.duplicate) == (results[0].id, results[0].position, True)
    assert server.stop() == 0
    assert files_holding(data, needles) == []


# -- subscribers and the memory feed --------------------------------------------------


class Follower:
    """A live subscription read on a thread."""

    def __init__(self, stubs: Stubs, md: Metadata, request: stream_pb2.SubscribeRequest) -> None:
        self.call = stubs.stream.Subscribe(request, metadata=md, timeout=60)
        self.messages: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                kind = message.WhichOneof("message")
                if kind == "event":
                    self.messages.put(message.event)
                elif kind == "events":
                    for e in message.events.events:
                        self.messages.put(e)
                elif kind == "caught_up":
                    self.messages.put("caught_up")
        except grpc.RpcError:
            pass

    def until(self, wanted: Callable[[Any], bool], timeout: float = 15) -> list[Any]:
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(item)
            if wanted(item):
                return seen
        raise AssertionError(f"not received in {timeout}s; got {seen}")

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)


def test_live_and_new_subscribers_after_an_erasure(stubs: Stubs, keys: dict[str, Metadata]) -> None:
    admin = keys["admin"]
    lead_id = "lead-live-1"
    request = stream_pb2.SubscribeRequest(
        filter=event_pb2.EventFilter(lead_id=lead_id), from_end=True, json_snapshots=True
    )
    live = Follower(stubs, admin, request)
    try:
        live.until(lambda m: m == "caught_up")
        [first] = append(
            stubs,
            keys["writer"],
            event(lead_id, PHILIPPA, {"buyer_response": "accepted philippa.q@example.net"}),
        )
        got = live.until(lambda m: not isinstance(m, str) and m.id == first.id)[-1]
        assert lead_of(got)["email"] == PHILIPPA["email"]  # sent before the erasure: as sent
        response = erase(stubs, admin, lead_id)
        assert response.events_erased == 1
        fresh = {**BARNABY, "email": "new.address@example.com", "first_name": "Philly"}
        [second] = append(stubs, keys["writer"], event(lead_id, fresh, type="recipient.delivered"))
        got = live.until(lambda m: not isinstance(m, str) and m.id == second.id)[-1]
        assert lead_of(got)["email"] == "new.address@example.com"
        assert lead_of(got)["first_name"] == "Philly"
    finally:
        live.close()
    # A new subscriber replays from the start: recent events too come erased.
    replayed = {e.id: e for e in replay(stubs, admin, lead_id)}
    assert lead_of(replayed[first.id])["email"] == ERASED
    assert lead_of(replayed[first.id])["ssn"] == ERASED
    assert details_of(replayed[first.id])["buyer_response"] == f"accepted {ERASED}"
    assert lead_of(replayed[second.id])["email"] == "new.address@example.com"
    assert response.audit_event_id in replayed
    # And without a filter, from the start of the store.
    seen = replay(stubs, admin, None)
    shown = {e.id: lead_of(e) for e in seen}
    assert shown[first.id]["email"] == ERASED
    assert not [e.id for e in seen if e.lead_id == lead_id and PHILIPPA["email"] in json.dumps(as_dict(e))]


# -- field policies -----------------------------------------------------------------


@dataclass
class Policied:
    before_id: str  # appended before the policy
    after_id: str  # appended after it
    policy: admin_pb2.FieldPolicy
    before_reader: dict[str, Any]


UMBRELLA_LEAD = {
    "customer_ref": "CR-99812-ZQ",
    "loyalty_code": "LOYAL-7781-XZ",
    "first_name": "Bartholomew",
    "last_name": "Ingersoll",
    "ssn": "111-22-3333",
    "email": "bart.ing@example.com",
    "state": "NV",
}


@pytest.fixture(scope="module")
def policied(stubs: Stubs, keys: dict[str, Metadata]) -> Policied:
    admin, reader = keys["umbrella_admin"], keys["umbrella_reader"]
    [before] = append(stubs, admin, event("lead-umbrella-1", UMBRELLA_LEAD))
    before_reader = lead_of(get_event(stubs, reader, before.id))
    policy = stubs.admin.SetFieldPolicy(
        admin_pb2.FieldPolicy(
            pii_fields=["customer_ref"], secret_fields=["loyalty_code"], plain_fields=["first_name", "ssn"]
        ),
        metadata=admin,
        timeout=30,
    )
    [after] = append(stubs, admin, event("lead-umbrella-2", UMBRELLA_LEAD))
    return Policied(before.id, after.id, policy, before_reader)


def test_field_policy_is_stored_and_read_back(
    stubs: Stubs, keys: dict[str, Metadata], policied: Policied
) -> None:
    got = stubs.admin.GetFieldPolicy(
        admin_pb2.GetFieldPolicyRequest(), metadata=keys["umbrella_admin"], timeout=30
    )
    assert got.account_id == "umbrella"
    assert list(got.pii_fields) == ["customer_ref"]
    assert list(got.secret_fields) == ["loyalty_code"]
    assert list(got.plain_fields) == ["first_name", "ssn"]
    assert got == policied.policy
    other = stubs.admin.GetFieldPolicy(
        admin_pb2.GetFieldPolicyRequest(), metadata=keys["globex_admin"], timeout=30
    )
    assert other.account_id == "globex"
    assert not other.pii_fields and not other.secret_fields and not other.plain_fields


def test_a_pii_field_policy_masks_for_readers(
    stubs: Stubs, keys: dict[str, Metadata], policied: Policied
) -> None:
    assert policied.before_reader["customer_ref"] == "CR-99812-ZQ"  # a plain name by default
    reader = keys["umbrella_reader"]
    for event_id in (policied.before_id, policied.after_id):  # every answer from then on
        shown = get_event(stubs, reader, event_id)
        lead = lead_of(shown)
        assert lead["customer_ref"] != "CR-99812-ZQ"
        assert "CR-99812" not in json.dumps(as_dict(shown))
    for e in query(stubs, reader, "lead-umbrella-2"):
        assert "CR-99812" not in json.dumps(as_dict(e))
    admin_view = lead_of(get_event(stubs, keys["umbrella_admin"], policied.after_id))
    assert admin_view["customer_ref"] == "CR-99812-ZQ"  # admins see personal values


def test_a_secret_field_policy_seals_later_appends(
    stubs: Stubs, keys: dict[str, Metadata], policied: Policied
) -> None:
    for md in (keys["umbrella_admin"], keys["umbrella_reader"]):
        shown = get_event(stubs, md, policied.after_id)
        assert lead_of(shown)["loyalty_code"].startswith("fp:")
        assert "LOYAL-7781" not in json.dumps(as_dict(shown))
    timeline_text = json.dumps(
        [as_dict(e) for e in timeline(stubs, keys["umbrella_admin"], "lead-umbrella-2")]
    )
    assert "LOYAL-7781" not in timeline_text


def test_a_plain_field_policy_unmasks_but_never_declassifies_a_secret(
    stubs: Stubs, keys: dict[str, Metadata], policied: Policied
) -> None:
    reader = keys["umbrella_reader"]
    assert policied.before_reader["first_name"] == "B***"  # masked before the policy
    for event_id in (policied.before_id, policied.after_id):
        lead = lead_of(get_event(stubs, reader, event_id))
        assert lead["first_name"] == "Bartholomew"
        assert lead["last_name"] != "Ingersoll"  # still pii
        assert lead["email"] != "bart.ing@example.com"
        assert lead["ssn"].startswith("fp:")
    admin_lead = lead_of(get_event(stubs, keys["umbrella_admin"], policied.after_id))
    assert admin_lead["ssn"].startswith("fp:") and "111-22-3333" not in json.dumps(admin_lead)


@pytest.mark.parametrize("pattern", ["customer ref", "contact/email", "x" * 129])
@pytest.mark.parametrize("kind", ["pii_fields", "secret_fields", "plain_fields"])
def test_an_invalid_pattern_is_refused(
    stubs: Stubs, keys: dict[str, Metadata], policied: Policied, pattern: str, kind: str
) -> None:
    admin = keys["umbrella_admin"]
    error = code_of(
        lambda: stubs.admin.SetFieldPolicy(
            admin_pb2.FieldPolicy(**{kind: [pattern]}), metadata=admin, timeout=30
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = stubs.admin.GetFieldPolicy(admin_pb2.GetFieldPolicyRequest(), metadata=admin, timeout=30)
    assert got == policied.policy  # nothing changed


def test_a_pattern_of_128_characters_is_accepted(stubs: Stubs, keys: dict[str, Metadata]) -> None:
    admin = keys["initech_admin"]
    stored = stubs.admin.SetFieldPolicy(
        admin_pb2.FieldPolicy(pii_fields=["x" * 128]), metadata=admin, timeout=30
    )
    assert list(stored.pii_fields) == ["x" * 128]
    stubs.admin.SetFieldPolicy(admin_pb2.FieldPolicy(), metadata=admin, timeout=30)


def test_policies_are_per_account(stubs: Stubs, keys: dict[str, Metadata], policied: Policied) -> None:
    [g] = append(stubs, keys["globex_admin"], event("lead-globex-policy", UMBRELLA_LEAD))
    lead = lead_of(get_event(stubs, keys["globex_reader"], g.id))
    assert lead["customer_ref"] == "CR-99812-ZQ"  # plain by default
    assert lead["first_name"] == "B***"  # pii by default
    admin_lead = lead_of(get_event(stubs, keys["globex_admin"], g.id))
    assert admin_lead["loyalty_code"] == "LOYAL-7781-XZ"  # not secret in globex


def test_field_policies_need_an_admin_key(
    stubs: Stubs, keys: dict[str, Metadata], policied: Policied
) -> None:
    reader = keys["umbrella_reader"]
    error = code_of(
        lambda: stubs.admin.SetFieldPolicy(admin_pb2.FieldPolicy(plain_fields=["email"]), metadata=reader)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    got = stubs.admin.GetFieldPolicy(admin_pb2.GetFieldPolicyRequest(), metadata=keys["umbrella_admin"])
    assert got == policied.policy


# -- tiered retention (open mode: `now` is for keyless servers only) -------------------


def test_tiered_retention_erases_pii_then_secrets_by_age(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    from leadtrail.v1 import admin_pb2_grpc, query_pb2_grpc, submission_pb2_grpc

    server = spawn(tmp_path / "data")
    with grpc.insecure_channel(server.address) as channel:
        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        q = query_pb2_grpc.QueryServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        events = [
            event("lead-aged-1", PHILIPPA),
            event(
                "lead-aged-1",
                PHILIPPA,
                {"buyer_response": "accepted philippa.q@example.net"},
                type="recipient.delivered",
                entity_id="buyer-1",
                price="25.00",
            ),
            event("lead-aged-2", {"state": "WA", "loan_amount": 1000}),  # nothing personal
        ]
        results = submit.Append(submission_pb2.AppendRequest(events=events), timeout=30).results
        appended_ms = max(
            q.GetEvent(query_pb2.GetEventRequest(id=r.id)).recorded_at.ToMilliseconds() for r in results
        )

        def leads() -> list[dict[str, Any]]:
            return [
                lead_of(q.GetEvent(query_pb2.GetEventRequest(id=r.id, json_snapshots=True))) for r in results
            ]

        def apply(days: int) -> admin_pb2.ApplyRetentionResponse:
            request = admin_pb2.ApplyRetentionRequest()
            request.now.FromMilliseconds(appended_ms + days * DAY_MS)
            result: admin_pb2.ApplyRetentionResponse = admin.ApplyRetention(request, timeout=60)
            return result

        original = leads()
        fingerprint = original[0]["ssn"]
        assert fingerprint.startswith("fp:") and original[0]["email"] == PHILIPPA["email"]
        policy = admin.SetRetentionPolicy(
            admin_pb2.RetentionPolicy(pii_max_age_days=30, secret_max_age_days=60), timeout=30
        ).policy
        assert (policy.pii_max_age_days, policy.secret_max_age_days, policy.max_age_days) == (30, 60, 0)

        early = apply(29)
        assert (early.events_scrubbed, early.events_removed) == (0, 0)
        assert leads() == original

        pii_due = apply(31)
        assert pii_due.events_scrubbed == 2 and pii_due.events_removed == 0
        first, second, third = leads()
        for lead in (first, second):
            assert {k: lead[k] for k in ("first_name", "last_name", "email", "phone", "address")} == {
                k: ERASED for k in ("first_name", "last_name", "email", "phone", "address")
            }
            assert (lead["state"], lead["loan_amount"], lead["source"]) == ("OR", 250000, "web-form")
            assert lead["ssn"] == fingerprint  # secrets have their own, longer, age
        assert third == original[2]
        details = details_of(q.GetEvent(query_pb2.GetEventRequest(id=results[1].id, json_snapshots=True)))
        assert details["buyer_response"] == f"accepted {ERASED}"
        stats = admin.GetStats(admin_pb2.GetStatsRequest(), timeout=30)
        assert stats.event_count >= 3  # the events remain

        secret_due = apply(61)
        assert secret_due.events_scrubbed == 2 and secret_due.events_removed == 0
        first, second, third = leads()
        assert first["ssn"] == second["ssn"] == ERASED
        assert third == original[2]
        assert [r.id for r in results] == [
            e.id for e in q.QueryEvents(query_pb2.QueryEventsRequest(), timeout=30).events
        ]
    assert server.stop() == 0


def test_secret_retention_alone_removes_fingerprints_and_keeps_pii(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    from leadtrail.v1 import admin_pb2_grpc, query_pb2_grpc, submission_pb2_grpc

    server = spawn(tmp_path / "data")
    with grpc.insecure_channel(server.address) as channel:
        submit = submission_pb2_grpc.SubmissionServiceStub(channel)
        q = query_pb2_grpc.QueryServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        [result] = submit.Append(
            submission_pb2.AppendRequest(events=[event("lead-secret-aged", PHILIPPA)]), timeout=30
        ).results
        appended_ms = q.GetEvent(query_pb2.GetEventRequest(id=result.id)).recorded_at.ToMilliseconds()

        def lead() -> dict[str, Any]:
            return lead_of(q.GetEvent(query_pb2.GetEventRequest(id=result.id, json_snapshots=True)))

        def apply(days: int) -> admin_pb2.ApplyRetentionResponse:
            request = admin_pb2.ApplyRetentionRequest()
            request.now.FromMilliseconds(appended_ms + days * DAY_MS)
            response: admin_pb2.ApplyRetentionResponse = admin.ApplyRetention(request, timeout=60)
            return response

        original = lead()
        assert original["ssn"].startswith("fp:")
        admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(secret_max_age_days=10), timeout=30)
        assert apply(9).events_scrubbed == 0
        assert lead() == original
        due = apply(11)
        assert (due.events_scrubbed, due.events_removed) == (1, 0)
        assert lead() == {**original, "ssn": ERASED}  # pii stays while its tier is 0
    assert server.stop() == 0
