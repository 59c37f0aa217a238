"""FindLeads over a real server: leads found by email (case-blind), phone (digits only) or
another personal field, within the caller's account and scope; the value searched never
in clear in the index or the read audit; erasure and retention take leads out of it;
``reindex`` rebuilds it; followers (``--workers``) answer it; ``leadtrail find``."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import lmdb
import pytest
from leadtrail.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

from .conftest import ServerProcess, Stubs

CLI = [sys.executable, "-m", "leadtrail.server.cli"]
T0 = 1_760_000_000_000
DAY_MS = 86_400_000


def auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def new_key(data: Path, account: str, role: str, *scope: str) -> str:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(data), "--account", account, "--role", role, *scope],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def event(lead_id: str, at: int, lead: dict[str, Any], entity_id: str = "buyer-9") -> event_pb2.Event:
    e = event_pb2.Event(type="recipient.delivered", lead_id=lead_id, flow_id="flow-find", entity_id=entity_id)
    e.timestamp.FromMilliseconds(T0 + at)
    e.lead_json = json.dumps(lead).encode()
    return e


def append(stubs: Stubs, key: str, *events: event_pb2.Event) -> None:
    request = submission_pb2.AppendRequest(events=events)
    stubs.submission.Append(request, metadata=auth(key), timeout=30)


def find(stubs: Stubs, key: str, field: str, value: str) -> list[tuple[str, int, int, int]]:
    answer = stubs.query.FindLeads(
        query_pb2.FindLeadsRequest(field=field, value=value), metadata=auth(key), timeout=30
    )
    return [
        (m.lead_id, m.first_timestamp.ToMilliseconds() - T0, m.last_timestamp.ToMilliseconds() - T0, m.events)
        for m in answer.leads
    ]


def ids(matches: list[tuple[str, int, int, int]]) -> list[str]:
    return [m[0] for m in matches]


@pytest.fixture(scope="module")
def keyed(server: ServerProcess, stubs: Stubs) -> Iterator[dict[str, str]]:
    """Keys of two accounts, and leads of both holding the same email."""
    made = {
        "admin": new_key(server.data, "acme", "admin"),
        "reader": new_key(server.data, "acme", "reader"),
        "buyer7": new_key(server.data, "acme", "reader", "--entity", "buyer-7"),
        "other": new_key(server.data, "globex", "admin"),
    }
    append(
        stubs,
        made["admin"],
        event("L1", 1, {"email": "Jane.Doe@Example.com", "phone": "+1 (555) 010-2030", "state": "TX"}),
        event(
            "L1", 2, {"email": "Jane.Doe@Example.com", "phone": "+1 (555) 010-2030", "state": "CA"}, "buyer-7"
        ),
        event("L2", 5, {"contact": {"email": " JANE.DOE@EXAMPLE.COM "}, "phone_2": "555.010.2030"}),
        event("L3", 7, {"email": "someone.else@example.com", "phone": "555-010-9999"}),
    )
    append(stubs, made["other"], event("G1", 9, {"email": "jane.doe@example.com"}))
    yield made


def test_emails_in_any_case_and_phones_in_any_format_find_the_accounts_leads(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    assert find(stubs, keyed["admin"], "email", "jane.doe@example.com") == [("L2", 5, 5, 1), ("L1", 1, 2, 2)]
    assert ids(find(stubs, keyed["admin"], "phone", "15550102030")) == ["L2", "L1"]
    assert ids(find(stubs, keyed["admin"], "phone_1", "(555) 010 2030")) == ["L2", "L1"]
    assert find(stubs, keyed["admin"], "email", "nobody@example.com") == []
    # Another account's lead holding the same email is never found, and finds only its own.
    assert ids(find(stubs, keyed["other"], "email", "JANE.DOE@example.com")) == ["G1"]


def _code_and_details(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


@pytest.mark.parametrize(
    ("field", "value", "named", "says"),
    [
        ("state", "TX", "field", "not a personal field"),
        ("", "x", "field", "required"),
        ("email", "", "value", "required"),
        ("email", "x" * 1025, "value", "1025 bytes, over the limit of 1024"),
        ("ssn", "123-45-6789", "field", "not a personal field"),
    ],
)
def test_a_search_by_a_field_not_personal_or_a_bad_value_is_refused(
    stubs: Stubs, keyed: dict[str, str], field: str, value: str, named: str, says: str
) -> None:
    request = query_pb2.FindLeadsRequest(field=field, value=value)
    code, details = _code_and_details(
        lambda: stubs.query.FindLeads(request, metadata=auth(keyed["admin"]), timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{named}:") and says in details


def test_a_masked_reader_may_search_and_a_scoped_key_sees_only_its_events(
    stubs: Stubs, keyed: dict[str, str]
) -> None:
    assert find(stubs, keyed["reader"], "email", "jane.doe@example.com") == [("L2", 5, 5, 1), ("L1", 1, 2, 2)]
    # Limited to buyer-7: only L1's step with buyer-7 is visible; L2 has none and is absent.
    assert find(stubs, keyed["buyer7"], "email", "jane.doe@example.com") == [("L1", 2, 2, 1)]


def test_the_read_audit_records_the_search_with_its_value_masked(stubs: Stubs, keyed: dict[str, str]) -> None:
    find(stubs, keyed["reader"], "email", "audit.me@example.com")
    scan = query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(types=["audit.read"]), descending=True, page_size=100
    )
    deadline = time.monotonic() + 20
    while True:  # the audit record is queued for the next group commit
        page = stubs.query.QueryEvents(scan, metadata=auth(keyed["admin"]), timeout=30)
        searches = [e for e in page.events if e.reason == "FindLeads"]
        text = [
            json.dumps(json.loads(e.details_json)) if e.details_json else str(e.details) for e in searches
        ]
        if any("audit.me" in t or "a***@example.com" in t for t in text) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any("a***@example.com" in t for t in text), text
    assert not any("audit.me" in t for t in text)


def raw_lead_entries(data: Path, lead_id: str) -> int:
    """Entries naming the lead in ``fingerprints`` and ``leadprints``, read with LMDB alone."""
    suffix = hashlib.blake2b(lead_id.encode(), digest_size=8).digest()  # a lead key ends in its hash
    env = lmdb.open(str(data / "index"), readonly=True, max_dbs=32, subdir=True)
    try:
        total = 0
        for name, in_value in ((b"fingerprints", True), (b"leadprints", False)):
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                for key, value in txn.cursor().iternext(keys=True, values=True):
                    total += bytes(value if in_value else key).endswith(suffix)
        return total
    finally:
        env.close()


def test_the_key_is_private_and_the_index_holds_no_value_in_clear(
    server: ServerProcess, stubs: Stubs, keyed: dict[str, str]
) -> None:
    key_file = server.data / "search.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    index = (server.data / "index" / "data.mdb").read_bytes()
    for value in (b"Jane.Doe@Example.com", b"jane.doe@example.com", b"JANE.DOE", b"5550102030", b"010-2030"):
        assert value not in index
    assert key_file.read_bytes() not in index
    assert raw_lead_entries(server.data, "L1") == 4  # email and phone, both ways


def test_after_erasure_the_email_finds_nothing_and_no_entry_of_the_lead_remains(
    server: ServerProcess, stubs: Stubs, keyed: dict[str, str]
) -> None:
    append(stubs, keyed["admin"], event("E1", 20, {"email": "erase.me@example.com", "phone": "555-222-3333"}))
    assert ids(find(stubs, keyed["admin"], "email", "erase.me@example.com")) == ["E1"]
    assert raw_lead_entries(server.data, "E1") == 4
    erase = admin_pb2.EraseLeadRequest(lead_id="E1", reason="subject request 17")
    stubs.admin.EraseLead(erase, metadata=auth(keyed["admin"]), timeout=60)
    assert find(stubs, keyed["admin"], "email", "erase.me@example.com") == []
    assert find(stubs, keyed["admin"], "phone", "5552223333") == []
    assert raw_lead_entries(server.data, "E1") == 0


def _wipe_search_entries(data: Path) -> None:
    env = lmdb.open(str(data / "index"), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        for name in (b"fingerprints", b"leadprints"):
            txn.drop(env.open_db(name, txn=txn), delete=False)
    env.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_followers_answer_reindex_rebuilds_retention_removes_and_the_cli_finds(
    spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = spawn(data, "--workers", "2", "--http", "off")
    with grpc.insecure_channel(server.address) as channel:
        submission_pb2_grpc.SubmissionServiceStub(channel).Append(
            submission_pb2.AppendRequest(
                events=[
                    event("K1", 1, {"email": "Kim@Example.org", "phone": "+1 555 444 1212"}),
                    event("K1", 2, {"email": "Kim@Example.org", "phone": "+1 555 444 1212"}),
                    event("K2", 3, {"mobile": "5554441212"}),
                ]
            ),
            timeout=30,
        )
    # Connections of their own: some land on the follower, which reads the index read-only.
    channels = [
        grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(6)
    ]
    request = query_pb2.FindLeadsRequest(field="phone", value="555-444-1212")
    try:
        deadline = time.monotonic() + 20
        while True:
            answers = [
                [m.lead_id for m in query_pb2_grpc.QueryServiceStub(c).FindLeads(request, timeout=10).leads]
                for c in channels
            ]
            if all(a == ["K2", "K1"] for a in answers) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert answers == [["K2", "K1"]] * len(channels)
    finally:
        for channel in channels:
            channel.close()

    table = _cli("find", "--email", "kim@example.ORG", "--server", server.address)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["LEAD", "FIRST", "LAST", "EVENTS"] and len(lines) == 2
    assert lines[1].split()[0] == "K1" and lines[1].split()[-1] == "2"
    as_json = _cli("find", "--phone", "5554441212", "--format", "json", "--server", server.address)
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line)["lead_id"] for line in as_json.stdout.splitlines()] == ["K2", "K1"]
    refused = _cli("find", "--field", "state", "--value", "TX", "--server", server.address)
    assert refused.returncode != 0 and "not a personal field" in refused.stderr
    assert server.stop() == 0

    _wipe_search_entries(data)
    assert _cli("reindex", "--data", str(data)).returncode == 0
    server = spawn(data, "--http", "off")
    with grpc.insecure_channel(server.address) as channel:
        query = query_pb2_grpc.QueryServiceStub(channel)
        assert [m.lead_id for m in query.FindLeads(request, timeout=10).leads] == ["K2", "K1"]
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(max_age_days=1), timeout=10)
        now = admin_pb2.ApplyRetentionRequest()
        now.now.FromMilliseconds(int(time.time() * 1000) + 3 * DAY_MS)
        assert admin.ApplyRetention(now, timeout=60).events_removed == 3
        assert list(query.FindLeads(request, timeout=10).leads) == []
    assert server.stop() == 0
    assert raw_lead_entries(data, "K1") == raw_lead_entries(data, "K2") == 0


def test_a_timeline_as_of_a_moment_ends_at_it(stubs: Stubs, keyed: dict[str, str]) -> None:
    request = query_pb2.GetTimelineRequest(lead_id="L1", json_snapshots=True)
    whole = stubs.query.GetTimeline(request, metadata=auth(keyed["admin"]), timeout=30)
    assert len(whole.steps) == 2
    request.as_of.FromMilliseconds(T0 + 1)
    then = stubs.query.GetTimeline(request, metadata=auth(keyed["admin"]), timeout=30)
    assert len(then.steps) == 1
    assert json.loads(then.steps[0].event.lead_json)["state"] == "TX"
