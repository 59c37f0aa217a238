"""The web console of a real ``leadtrail serve --http 127.0.0.1:0`` with API keys, read with a
real HTTP client: every page and its testids, escaping, accounts kept apart, sessions and
their cookie, CSRF, revocation, masking by role, the read audit and the live stream.

One server for the module: keys of every role in account ``acme`` and an admin of ``beta``,
a three-step lead (``lead-x``) holding a ``<script>`` and personal values, and a lead of
``beta``. Open mode and HTTPS have their own servers (``test_console_open.py``).
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import orjson
import pytest
from leadtrail.server.keys import KeyStore
from leadtrail.v1 import event_pb2, query_pb2, query_pb2_grpc, submission_pb2, submission_pb2_grpc
from server_process import ServerProcess

SCRIPT = "<script>alert('pwned')</script>"
EMAIL = "Jo.Doe@example.com"
T0 = 1_764_000_000_000


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def testids(self, name: str) -> list[str]:
        """The elements carrying ``data-testid="name"``, as their opening tags."""
        return re.findall(rf'<[^>]*data-testid="{re.escape(name)}"[^>]*>', self.body)

    @property
    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class Keys:
    secrets: dict[str, str]
    ids: dict[str, str]


@dataclass
class Console:
    server: ServerProcess
    keys: Keys
    events: dict[str, str]
    """Names of the appended events -> their ids."""

    def request(
        self,
        path: str,
        *,
        key: str | None = None,
        cookie: str | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        host, _, port = self.server.http_address.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if cookie is not None:
            sent["Cookie"] = cookie
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request("POST" if form is not None else "GET", path, body=body, headers=sent)
            answer = connection.getresponse()
            return Answer(answer.status, answer.headers, answer.read().decode())
        finally:
            connection.close()

    def login(self, role: str) -> tuple[str, str]:
        """A session of the ``acme`` key of ``role``: its Cookie header and its CSRF token."""
        answer = self.request("/login", form={"key": self.keys.secrets[role], "next": "/alerts"})
        assert answer.status == 303 and answer.headers["Location"] == "/alerts", answer.body
        cookie = answer.cookies[0].split(";")[0]
        page = self.request("/", cookie=cookie)
        assert page.status == 200, page.body
        token = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert token is not None
        return cookie, token.group(1)

    def grpc(self, key: str) -> tuple[grpc.Channel, tuple[tuple[str, str], ...]]:
        return grpc.insecure_channel(self.server.address), (("authorization", f"Bearer {key}"),)


def _event(type_: str, lead_id: str, at: int, lead: dict[str, Any], **fields: Any) -> event_pb2.Event:
    event = event_pb2.Event(type=type_, lead_id=lead_id, flow_id="flow-console", **fields)
    event.timestamp.FromMilliseconds(at)
    event.lead_json = orjson.dumps(lead)
    return event


def _append(console: Console, key: str, *events: event_pb2.Event) -> list[str]:
    channel, metadata = console.grpc(key)
    with channel:
        stub = submission_pb2_grpc.SubmissionServiceStub(channel)
        answer = stub.Append(submission_pb2.AppendRequest(events=events), metadata=metadata, timeout=30)
    return [result.id for result in answer.results]


def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data: Path = tmp_path_factory.mktemp("console") / "data"
    data.mkdir(parents=True)
    store = KeyStore(str(data))
    secrets, ids = {}, {}
    for name, account, role in (
        ("admin", "acme", "admin"),
        ("analyst", "acme", "analyst"),
        ("reader", "acme", "reader"),
        ("writer", "acme", "writer"),
        ("revoked", "acme", "reader"),
        ("beta", "beta", "admin"),
    ):
        secrets[name], key = store.create(account, role, T0)
        ids[name] = key.key_id
    server = ServerProcess(data).start()
    made = Console(server, Keys(secrets, ids), {})
    first = {"email": EMAIL, "phone": "(555) 010-2345", "note": SCRIPT, "state": "TX"}
    names = ("submitted", "enhanced", "delivered")
    made.events.update(
        zip(
            names,
            _append(
                made,
                secrets["writer"],
                _event("source.submitted", "lead-x", T0, first, entity_id="src-1", price="-4.50"),
                _event("enhancement.success", "lead-x", T0 + 1500, {**first, "email.valid": True}),
                _event(
                    "recipient.delivered",
                    "lead-x",
                    T0 + 125_000,
                    {"email": EMAIL, "email.valid": True, "note": SCRIPT},
                    entity_id="buyer-1",
                    outcome=event_pb2.OUTCOME_SUCCESS,
                    price="25.00",
                    reason=SCRIPT,
                ),
            ),
            strict=True,
        )
    )
    (made.events["beta"],) = _append(
        made, secrets["beta"], _event("source.submitted", "lead-beta", T0, {"email": "b@beta.example"})
    )
    yield made
    assert server.stop() == 0, server.output


# -- pages and their testids -----------------------------------------------------------------------


def test_the_lead_page_shows_the_journey_in_order_with_durations_and_changes(console: Console) -> None:
    answer = console.request("/leads/lead-x", key=console.keys.secrets["admin"])
    assert answer.status == 200, answer.body
    steps = answer.testids("timeline-step")
    assert [re.search(r'data-event="([^"]+)"', s).group(1) for s in steps] == [  # type: ignore[union-attr]
        console.events[name] for name in ("submitted", "enhanced", "delivered")
    ]
    types = re.findall(r'data-testid="step-type"[^>]*>([^<]+)<', answer.body)
    assert types == ["source.submitted", "enhancement.success", "recipient.delivered"]
    since = re.findall(r'data-testid="step-since-previous">([^<]+)<', answer.body)
    assert since == ["+0 ms", "+1.5 s", "+2 min 3 s"]
    changes = answer.testids("field-change")
    assert any('data-kind="added"' in c and 'data-field="email.valid"' in c for c in changes)
    assert any('data-kind="removed"' in c and 'data-field="state"' in c for c in changes)
    assert answer.testids("lead-snapshot") and answer.testids("as-of-link")
    assert re.search(r'data-testid="total-duration">2 min 5 s<', answer.body)


def test_every_page_answers_with_its_testids_and_security_headers(console: Console) -> None:
    admin = console.keys.secrets["admin"]
    pages = {
        "/": ["search-input", "search-form"],
        "/leads/lead-x": ["timeline-step", "step-type", "step-since-previous", "field-change"],
        f"/events/{console.events['delivered']}": ["event-field", "raw-json", "copy-json", "neighbour-prev"],
        "/live": ["live-events", "live-filters"],
        "/reports": ["report-row", "report-chart", "report-csv-sources"],
        "/alerts": [],
        "/login": ["login-form"],
    }
    for path, testids in pages.items():
        answer = console.request(path, key=admin)
        assert answer.status == 200, (path, answer.body)
        for testid in testids:
            assert answer.testids(testid), (path, testid)
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Referrer-Policy"] == "same-origin"
        assert answer.headers["Cache-Control"] == "no-store"
        assert re.fullmatch(r"app;dur=\d+(\.\d+)?", answer.headers["Server-Timing"])
        assert "<script>" not in answer.body.replace('<script src="/static/console.js" defer></script>', "")


def test_the_event_inspector_shows_every_field_its_raw_json_and_its_neighbours(console: Console) -> None:
    event_id = console.events["enhanced"]
    answer = console.request(f"/events/{event_id}", key=console.keys.secrets["admin"])
    assert answer.status == 200, answer.body
    fields = set(re.findall(r'data-testid="event-field" data-field="([^"]+)"', answer.body))
    assert {"id", "type", "timestamp", "recorded_at", "position", "lead_id", "outcome", "price"} <= fields
    raw = re.search(r'data-testid="raw-json">([^<]*)</pre>', answer.body)
    assert raw is not None
    record = orjson.loads(raw.group(1).replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&"))
    assert record["id"] == event_id and record["lead"]["email.valid"] is True
    assert f'href="/events/{console.events["submitted"]}" data-testid="neighbour-prev"' in answer.body
    assert f'href="/events/{console.events["delivered"]}" data-testid="neighbour-next"' in answer.body


def test_as_of_a_step_shows_the_lead_as_it_was_then(console: Console) -> None:
    answer = console.request(f"/leads/lead-x?as_of={T0 + 1500}", key=console.keys.secrets["admin"])
    assert answer.status == 200, answer.body
    assert len(answer.testids("timeline-step")) == 2
    assert answer.testids("as-of-banner")
    assert 'data-field="state"' in answer.body.split('data-testid="lead-snapshot"')[1]


def test_unknown_and_other_accounts_leads_and_events_are_the_same_404(console: Console) -> None:
    admin = console.keys.secrets["admin"]
    other = console.request("/leads/lead-beta", key=admin)
    unknown = console.request("/leads/lead-nobody", key=admin)
    assert other.status == unknown.status == 404
    assert 'data-testid="error" data-status="404"' in other.body
    assert other.body.replace("lead-beta", "X") == unknown.body.replace("lead-nobody", "X")
    assert "b@beta.example" not in other.body
    assert console.request(f"/events/{console.events['beta']}", key=admin).status == 404
    assert console.request("/leads/lead-beta", key=console.keys.secrets["beta"]).status == 200
    search = console.request("/?" + urlencode({"q": "lead-beta"}), key=admin)
    assert search.status == 200 and search.testids("no-results") and "/leads/lead-beta" not in search.body


def test_a_script_in_a_lead_field_is_shown_as_text(console: Console) -> None:
    admin = console.keys.secrets["admin"]
    escaped = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"
    for path in ("/leads/lead-x", f"/events/{console.events['delivered']}"):
        answer = console.request(path, key=admin)
        assert answer.status == 200
        assert SCRIPT not in answer.body and escaped in answer.body, path
    script = console.request("/static/console.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "innerHTML" not in script.body and "textContent" in script.body


def test_search_goes_to_a_lead_or_an_event_by_id(console: Console) -> None:
    admin = console.keys.secrets["admin"]
    lead = console.request("/?" + urlencode({"q": "lead-x"}), key=admin)
    assert lead.status == 303 and lead.headers["Location"] == "/leads/lead-x"
    event_id = console.events["submitted"]
    event = console.request("/", key=admin, form={"q": event_id})
    assert event.status == 303 and event.headers["Location"] == f"/events/{event_id}"


# -- who may see what ------------------------------------------------------------------------------


def test_a_reader_sees_personal_values_masked_and_an_admin_in_clear(console: Console) -> None:
    reader = console.request("/leads/lead-x", key=console.keys.secrets["reader"])
    admin = console.request("/leads/lead-x", key=console.keys.secrets["admin"])
    assert reader.status == admin.status == 200
    assert EMAIL not in reader.body and "J***@example.com" in reader.body
    assert EMAIL in admin.body


def test_roles_without_the_right_get_a_403_page_naming_their_role(console: Console) -> None:
    writer = console.request("/leads/lead-x", key=console.keys.secrets["writer"])
    assert writer.status == 403 and "role writer" in writer.body and writer.testids("error")
    reader = console.request("/reports", key=console.keys.secrets["reader"])
    assert reader.status == 403 and "role reader" in reader.body
    analyst = console.request("/reports", key=console.keys.secrets["analyst"])
    assert analyst.status == 200
    rows = re.findall(r'data-testid="report-row" data-table="recipients" data-key="([^"]+)"', analyst.body)
    assert rows == ["buyer-1"]
    csv = console.request("/reports.csv?table=outcomes", key=console.keys.secrets["analyst"])
    assert csv.status == 200 and csv.headers["Content-Type"].startswith("text/csv")
    assert csv.body.splitlines()[0].startswith("type,") and "recipient.delivered," in csv.body


def test_without_a_key_a_page_asks_to_log_in_and_a_bad_key_is_401(console: Console) -> None:
    anonymous = console.request("/leads/lead-x?as_of=1")
    assert anonymous.status == 303
    assert anonymous.headers["Location"] == "/login?" + urlencode({"next": "/leads/lead-x?as_of=1"})
    bad = console.request("/leads/lead-x", key="ltk_not-a-key")
    assert bad.status == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")
    assert console.request("/live/stream").status == 401


def test_pages_shown_are_recorded_as_reads(console: Console) -> None:
    reader = console.keys.secrets["reader"]
    assert console.request("/leads/lead-x", key=reader).status == 200
    channel, metadata = console.grpc(console.keys.secrets["admin"])
    wanted = query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(types=["audit.read"], lead_id=console.keys.ids["reader"])
    )

    def recorded() -> bool:
        answer = query_pb2_grpc.QueryServiceStub(channel).QueryEvents(wanted, metadata=metadata, timeout=30)
        return any(e.reason == "GetTimeline" for e in answer.events)

    with channel:
        eventually(recorded, "the lead page was not recorded as a GetTimeline read")


# -- sessions --------------------------------------------------------------------------------------


def test_a_login_makes_a_strict_http_only_session_cookie(console: Console) -> None:
    answer = console.request("/login", form={"key": console.keys.secrets["reader"], "next": "/"})
    assert answer.status == 303
    (cookie,) = answer.cookies
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= attributes and "secure" not in attributes
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    session = cookie.split(";")[0]
    page = console.request("/leads/lead-x", cookie=session)
    assert page.status == 200 and "J***@example.com" in page.body


def test_a_wrong_key_or_a_cross_site_login_is_refused(console: Console) -> None:
    wrong = console.request("/login", form={"key": "ltk_wrong", "next": "/"})
    assert wrong.status == 401 and not wrong.cookies and wrong.testids("error")
    foreign = console.request(
        "/login", form={"key": console.keys.secrets["reader"]}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status == 403 and not foreign.cookies


def test_a_post_without_the_sessions_csrf_token_is_refused(console: Console) -> None:
    cookie, token = console.login("reader")
    assert console.request("/logout", cookie=cookie, form={}).status == 403
    assert console.request("/logout", cookie=cookie, form={"csrf": token[::-1]}).status == 403
    assert console.request("/", cookie=cookie, form={"q": "lead-x"}).status == 403
    foreign = {"Origin": "http://evil.example"}
    assert console.request("/logout", cookie=cookie, form={"csrf": token}, headers=foreign).status == 403
    assert console.request("/leads/lead-x", cookie=cookie).status == 200  # still logged in
    out = console.request("/logout", cookie=cookie, form={"csrf": token})
    assert out.status == 303 and out.headers["Location"] == "/login"
    assert console.request("/leads/lead-x", cookie=cookie).status == 303  # the session is gone


def test_a_revoked_keys_session_stops_working_at_once(console: Console) -> None:
    cookie, _ = console.login("revoked")
    assert console.request("/leads/lead-x", cookie=cookie).status == 200
    store = KeyStore(str(console.server.data))
    store.revoke(console.keys.ids["revoked"], T0 + 1)
    after = console.request("/leads/lead-x", cookie=cookie)
    assert after.status == 303 and after.headers["Location"].startswith("/login")


# -- live ------------------------------------------------------------------------------------------


def _subscribers(console: Console) -> float:
    answer = console.request("/metrics", key=console.keys.secrets["admin"])
    found = re.search(r"^leadtrail_subscribers (\S+)$", answer.body, re.MULTILINE)
    assert found is not None, answer.body
    return float(found.group(1))


def test_the_live_stream_delivers_an_append_masked_and_ends_with_the_browser(console: Console) -> None:
    host, _, port = console.server.http_address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    reader = console.keys.secrets["reader"]
    connection.request("GET", "/live/stream?type=recipient.*", headers={"Authorization": f"Bearer {reader}"})
    answer = connection.getresponse()
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/event-stream")
    try:
        lines = iter(answer.readline, b"")
        assert b"event: ready\n" in [next(lines) for _ in range(4)]
        lead = {"email": "Jo.Live@example.com", "note": SCRIPT}
        (appended,) = _append(
            console,
            console.keys.secrets["writer"],
            # Before T0: outside the reports' range.
            _event("source.submitted", "lead-live", T0 - 10_000, lead),  # filtered out
            _event("recipient.delivered", "lead-live", T0 - 9_000, lead, entity_id="buyer-2"),
        )[1:]
        data = next(line for line in lines if line.startswith(b'data: {"'))
        shown = orjson.loads(data[len(b"data: ") :])
        assert shown["id"] == appended and shown["type"] == "recipient.delivered"
        assert shown["lead"]["email"] == "J***@example.com" and shown["lead"]["note"] == SCRIPT
        assert _subscribers(console) == 1
    finally:
        connection.close()
    eventually(lambda: _subscribers(console) == 0, "the live subscription outlived its browser")


def test_search_by_email_or_phone_lists_the_callers_leads(console: Console) -> None:
    cookie, token = console.login("reader")
    by_email = console.request("/", cookie=cookie, form={"q": EMAIL.upper(), "csrf": token})
    assert by_email.status == 200, by_email.body
    rows = by_email.testids("search-result")
    assert [re.search(r'data-lead="([^"]+)"', row).group(1) for row in rows] == ["lead-x"]  # type: ignore[union-attr]
    assert EMAIL not in by_email.body and EMAIL.upper() not in by_email.body  # echoed masked
    assert 'data-testid="search-query">J***@EXAMPLE.COM<' in by_email.body
    by_phone = console.request("/", cookie=cookie, form={"q": "+1 555.010.2345"[3:], "csrf": token})
    assert 'data-lead="lead-x"' in by_phone.body
    beta = console.request("/", cookie=cookie, form={"q": "b@beta.example", "csrf": token})
    assert beta.status == 200 and beta.testids("no-results") and "lead-beta" not in beta.body


def test_reports_sum_revenue_cost_and_profit_by_source_and_recipient(console: Console) -> None:
    analyst = console.keys.secrets["analyst"]
    page = console.request(f"/reports?since={T0}&until=2030-01-01", key=analyst)
    assert page.status == 200, page.body
    assert len(page.testids("report-chart")) == 3 and page.testids("chart-bar")
    for table, entity, expected in (
        ("sources", "src-1", "src-1,1,0,-4.50,-4.50,-4.50"),
        ("recipients", "buyer-1", "buyer-1,1,25.00,0,25.00,25.00"),
    ):
        assert f'data-table="{table}" data-key="{entity}"' in page.body
        csv = console.request(f"/reports.csv?table={table}&since={T0}&until=2030-01-01", key=analyst)
        assert csv.status == 200
        assert csv.body.splitlines() == ["entity,events,revenue,cost,profit,price sum", expected]
    empty = console.request("/reports.csv?table=sources&until=2020-01-01", key=analyst)
    assert empty.body.splitlines() == ["entity,events,revenue,cost,profit,price sum"]
    bad = console.request("/reports?since=yesterday", key=analyst)
    assert bad.status == 400 and "since" in bad.body


def test_a_journey_past_a_thousand_steps_is_paged(console: Console) -> None:
    steps = [_event("retry.scheduled", "lead-long", T0 + i, {"n": i}) for i in range(1001)]
    _append(console, console.keys.secrets["writer"], *steps[:1000])
    _append(console, console.keys.secrets["writer"], *steps[1000:])
    admin = console.keys.secrets["admin"]
    first = console.request("/leads/lead-long", key=admin)
    assert first.status == 200 and len(first.testids("timeline-step")) == 1000
    (link,) = first.testids("next-page")
    target = re.search(r'href="([^"]+)"', link).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    second = console.request(target, key=admin)
    assert second.status == 200 and len(second.testids("timeline-step")) == 1
    assert not second.testids("next-page") and 'data-field="n"><th>n</th><td>1000<' in second.body
