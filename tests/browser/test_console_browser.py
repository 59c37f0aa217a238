"""The console as a person uses it, in headless Chromium against a real server with demo data:
log in with keys of each role, search by email and phone, follow a lead's journey into the
event inspector and back, look at it as it was at a step, watch an append arrive in the live
view, read the reports and the alerts; a ``<script>`` value stays text, another account's
lead does not exist, and no page logs an error or calls another host."""

from __future__ import annotations

import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from leadtrail.client import AlertKind, Event, EventFilter, Outcome
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

harness = sys.modules["console_harness"]  # loaded by tests/browser/conftest.py


def masked(email: str) -> str:
    """How a role without access to personal data sees an email (privacy.mask_value)."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def search(browser: Any, value: str) -> None:
    """Type ``value`` into the search box of ``/`` and submit it with Enter."""
    browser.open("/")
    box = browser.testid("search-input")
    box.clear()
    box.send_keys(value + Keys.ENTER)
    browser.wait().until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, '[data-testid="search-result"]')
            or "/leads/" in d.current_url
            or "/events/" in d.current_url
            or d.find_elements(By.CSS_SELECTOR, '[data-testid="no-results"]')
        )
    )


def found_leads(browser: Any) -> list[str]:
    """The lead ids a search answered: its result rows, or the lead page it went to."""
    if browser.path.startswith("/leads/"):
        return [browser.path.removeprefix("/leads/")]
    leads = [row.get_attribute("data-lead") for row in browser.testids("search-result")]
    leads += [link.text for link in browser.testids("search-lead-link")]
    return leads


def open_lead(browser: Any, lead_id: str, **query: str) -> list[Any]:
    """The lead page's timeline steps, once it shows them."""
    browser.open(f"/leads/{lead_id}", **query)
    browser.testid("timeline-step")
    return list(browser.testids("timeline-step"))


# -- sessions, roles and masking -----------------------------------------------------------------


def test_each_role_logs_in_and_sees_what_its_role_allows(browser: Any, console: Any) -> None:
    browser.login("reader")
    open_lead(browser, harness.JOURNEY_LEAD)
    text = browser.text()
    assert masked(harness.JOURNEY_EMAIL) in text and "***-***-0142" in text
    assert harness.JOURNEY_EMAIL not in text and harness.JOURNEY_EMAIL.lower() not in text
    assert harness.JOURNEY_PHONE not in browser.page_source_text()

    browser.login("analyst")
    open_lead(browser, harness.JOURNEY_LEAD)
    assert masked(harness.JOURNEY_EMAIL) in browser.text()
    assert harness.JOURNEY_EMAIL not in browser.text()

    browser.login("admin")
    open_lead(browser, harness.JOURNEY_LEAD)
    assert harness.JOURNEY_EMAIL in browser.text()
    assert harness.JOURNEY_PHONE in browser.text()

    # Reports are the analyst's and the admin's (Aggregate): a reader is told so.
    browser.allowed_statuses.update({401, 403})
    browser.login("reader")
    browser.open("/reports")
    refusal = browser.testid("error")
    assert refusal.get_attribute("data-status") == "403" and "reader" in refusal.text, refusal.text
    assert not browser.testids("report-row")

    # A writer key appends, it does not read: the console refuses it, naming the role.
    browser.login_attempt("writer")
    browser.open(f"/leads/{harness.JOURNEY_LEAD}")
    assert browser.testid("error").get_attribute("data-status") == "403"
    text = browser.text()
    assert "role writer" in text, text
    assert not browser.testids("timeline-step")
    assert harness.JOURNEY_EMAIL not in text and masked(harness.JOURNEY_EMAIL) not in text


def test_logging_out_ends_the_session(browser: Any) -> None:
    browser.login("admin")
    browser.open("/")
    browser.testid("logout").click()  # a form posting its CSRF token
    browser.wait().until(lambda d: urllib.parse.urlsplit(d.current_url).path in ("/login", "/"))
    browser.open(f"/leads/{harness.JOURNEY_LEAD}")
    browser.testid("login-form")
    assert browser.path == "/login" and not browser.testids("timeline-step")


def test_without_a_session_every_page_asks_for_a_key(browser: Any) -> None:
    browser.logout()
    for path in ("/", f"/leads/{harness.JOURNEY_LEAD}", "/live", "/reports", "/alerts"):
        browser.open(path)
        browser.testid("login-form")
        assert browser.path == "/login", (path, browser.driver.current_url)
        assert harness.JOURNEY_EMAIL not in browser.text()


# -- search --------------------------------------------------------------------------------------


def test_search_by_email_phone_and_lead_id(browser: Any, console: Any, screenshots: Path) -> None:
    browser.login("admin")
    search(browser, harness.JOURNEY_EMAIL.lower())  # case-blind
    assert found_leads(browser) == [harness.JOURNEY_LEAD]
    if not browser.path.startswith("/leads/"):
        browser.screenshot(screenshots, "search")
        row = browser.testids("search-result")[0]
        assert row.find_elements(By.TAG_NAME, "td")[-1].text == "10"  # the lead's events
        row.find_element(By.TAG_NAME, "a").click()
    browser.wait().until(lambda d: f"/leads/{harness.JOURNEY_LEAD}" in d.current_url)

    search(browser, "(737) 555 0199")  # digits only: written another way
    assert found_leads(browser) == [harness.PHONE_LEAD]

    search(browser, harness.JOURNEY_LEAD)
    assert found_leads(browser) == [harness.JOURNEY_LEAD]

    search(browser, console.journey[2].id)  # an event id: its inspector
    assert browser.path == f"/events/{console.journey[2].id}"
    assert browser.testid("event-field")

    search(browser, harness.OTHER_EMAIL)  # another account's lead is not there
    assert found_leads(browser) == []
    assert harness.OTHER_LEAD not in browser.text()


def test_reader_searches_by_the_value_and_sees_masked_results(browser: Any, console: Any) -> None:
    browser.login("reader")
    search(browser, harness.JOURNEY_EMAIL)
    assert found_leads(browser) == [harness.JOURNEY_LEAD]
    assert harness.JOURNEY_EMAIL not in browser.page_source_text()
    # The inspector too: fields, snapshot and raw JSON, as the reader's gRPC answer.
    browser.open(f"/events/{console.journey[0].id}")
    assert masked(harness.JOURNEY_EMAIL) in browser.testid("raw-json").text
    source = browser.page_source_text()
    assert harness.JOURNEY_EMAIL not in source and harness.JOURNEY_PHONE not in source


# -- the lead, its journey and the event inspector -----------------------------------------------


def test_lead_page_shows_the_journey_in_order(browser: Any, console: Any, screenshots: Path) -> None:
    browser.login("admin")
    steps = open_lead(browser, harness.JOURNEY_LEAD)
    assert len(steps) == len(console.journey) == 10
    types = [browser.testids("step-type", step)[0].text.strip() for step in steps]
    assert types == [step.type for step in console.journey]
    since = [browser.testids("step-since-previous", step)[0].text.strip() for step in steps]
    for shown, step in zip(since[1:], console.journey[1:], strict=True):
        assert harness.shows_duration(shown, step.since_previous), (shown, step.since_previous)
    assert (since[1], since[7], since[9]) == ("+140 ms", "+900 ms", "+1 d")
    # The fields each step added, changed or removed, with the kind shown.
    changes = [
        {
            (c.get_attribute("data-kind"), c.get_attribute("data-field")): c.text
            for c in browser.testids("field-change", s)
        }
        for s in steps
    ]
    assert set(changes[0]) == {("added", f) for f in ("email", "phone", "first_name", "state")}
    assert set(changes[1]) == {("added", "email.valid")}
    assert changes[4] == {}
    assert set(changes[8]) == {("changed", "filter.score"), ("removed", "retry.count")}
    assert "71" in changes[8]["changed", "filter.score"] and "88" in changes[8]["changed", "filter.score"]
    assert all(kind.upper() in text for (kind, _), text in changes[8].items())
    assert set(changes[9]) == {("added", "status")}
    # The snapshot is the latest: the status the feedback set.
    assert "sold" in browser.text()
    browser.screenshot(screenshots, "lead")


def test_a_step_opens_the_event_inspector_with_neighbours(
    browser: Any, console: Any, screenshots: Path
) -> None:
    browser.login("admin")
    steps = open_lead(browser, harness.JOURNEY_LEAD)
    fifth = console.journey[4]
    steps[4].find_element(By.CSS_SELECTOR, f'a[href*="/events/{fifth.id}"]').click()
    browser.wait().until(lambda d: f"/events/{fifth.id}" in d.current_url)
    fields = {element.get_attribute("data-field"): element.text for element in browser.testids("event-field")}
    assert fifth.id in fields["id"], fields
    assert fields["type"].strip().endswith("recipient.failed") or "recipient.failed" in fields["type"]
    assert harness.JOURNEY_LEAD in fields["lead_id"]
    assert "rcp_north" in fields["entity_id"]
    assert "Hourly cap reached" in fields["reason"]
    assert "FAILURE" in fields["outcome"].upper()
    raw = browser.testid("raw-json").text
    assert '"rule_set"' in raw and fifth.id in raw
    browser.screenshot(screenshots, "event")
    browser.grant_clipboard()
    browser.testid("copy-json").click()
    harness.until("the copy done", lambda: browser.testid("copy-status").text)
    assert browser.testid("copy-status").text == "copied"
    assert browser.clipboard() == raw

    browser.testid("neighbour-next").click()
    browser.wait().until(lambda d: f"/events/{console.journey[5].id}" in d.current_url)
    browser.testid("neighbour-prev").click()
    browser.wait().until(lambda d: f"/events/{fifth.id}" in d.current_url)
    browser.testid("neighbour-prev").click()
    browser.wait().until(lambda d: f"/events/{console.journey[3].id}" in d.current_url)

    browser.testid("event-lead-link").click()
    browser.wait().until(lambda d: d.current_url.endswith(f"/leads/{harness.JOURNEY_LEAD}"))
    assert len(browser.testids("timeline-step")) == 10


def test_the_lead_as_of_a_step(browser: Any, console: Any) -> None:
    browser.login("admin")
    steps = open_lead(browser, harness.JOURNEY_LEAD)
    steps[3].find_element(By.CSS_SELECTOR, '[data-testid="as-of-link"]').click()
    browser.wait().until(lambda d: "as_of=" in d.current_url)
    assert "as of" in browser.testid("as-of-banner").text
    shown = browser.testids("timeline-step")
    assert [browser.testids("step-type", s)[0].text.strip() for s in shown] == [
        step.type for step in console.journey[:4]
    ]
    snapshot = {
        field.get_attribute("data-field"): field.find_element(By.TAG_NAME, "td").text
        for field in browser.testids("snapshot-field")
    }
    assert snapshot["filter.score"] == "71"  # as it was then, 88 later
    assert "status" not in snapshot and "buyer" not in snapshot  # set by later steps


def assert_no_dialog(browser: Any, where: str) -> None:
    try:
        alert = browser.driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"a dialog opened on {where}: {text!r}")


def test_a_script_in_a_lead_field_is_shown_as_text(browser: Any, console: Any) -> None:
    browser.login("admin")
    browser.open(f"/leads/{harness.SCRIPT_LEAD}")
    browser.testid("timeline-step")
    assert harness.SCRIPT_VALUE in browser.text()
    assert_no_dialog(browser, "the lead page")
    # The inspector of that event too, where every field is on show.
    browser.testids("timeline-step")[0].find_element(By.CSS_SELECTOR, 'a[href*="/events/"]').click()
    browser.testid("event-field")
    assert harness.SCRIPT_VALUE in browser.text()
    assert_no_dialog(browser, "the event inspector")
    inline = "return document.querySelectorAll('body script').length"
    assert browser.driver.execute_script(inline) == 0


# -- live, reports, alerts -----------------------------------------------------------------------


def live_rows(browser: Any) -> str:
    return "\n".join(row.text for row in browser.testids("live-event"))


def append_until_shown(browser: Any, client: Any, events: Any) -> list[str]:
    """Append ``events(n)`` (n = 0, 1, ...) until a row of one of them shows in the live view;
    the leads appended. The page subscribes from the end once its script runs: what was
    appended before that is history, so the appends go on (a bounded while) until one shows."""
    appended: list[str] = []
    deadline = time.monotonic() + harness.WAIT_S
    while not any(lead in live_rows(browser) for lead in appended):
        assert time.monotonic() < deadline, f"no live row for {appended}: {browser.text()[:1000]}"
        batch = events(len(appended))
        client.append(batch)
        appended.append(batch[-1].lead_id)
        time.sleep(0.3)
    return appended


def test_the_live_view_shows_appends(browser: Any, console: Any, screenshots: Path) -> None:
    browser.login("admin")
    browser.open("/live")
    harness.until("the live stream open", lambda: browser.testid("live-status").text == "live")
    with console.client("writer") as client:

        def submitted(n: int) -> list[Event]:
            return [
                Event("source.submitted", lead_id=f"lead-live-{n}", flow_id="flow-live", entity_id="src_live")
            ]

        append_until_shown(browser, client, submitted)
        more = [
            ("source.accepted", Outcome.SUCCESS, None, ""),
            ("enhancement.error", Outcome.ERROR, None, "Timeout after 5000 ms"),
            ("filter.passed", Outcome.SUCCESS, None, ""),
            ("recipient.failed", Outcome.FAILURE, None, "Hourly cap reached (15/15)"),
            ("recipient.delivered", Outcome.SUCCESS, "12.50", ""),
        ]
        client.append(
            [
                Event(
                    type_,
                    lead_id="lead-live-journey",
                    flow_id="flow-live",
                    entity_id="rcp_live" if type_.startswith("recipient.") else "svc_live",
                    outcome=outcome,
                    price=price,
                    reason=reason,
                )
                for type_, outcome, price, reason in more
            ]
        )
    harness.until("the journey's rows", lambda: live_rows(browser).count("lead-live-journey") == len(more))
    rows = browser.testids("live-event")[: len(more)]
    shown = [browser.testids("live-event-type", row)[0].text for row in rows]
    assert shown == [type_ for type_, *_ in reversed(more)]  # newest first
    browser.screenshot(screenshots, "live")


def test_the_live_view_filters_by_type(browser: Any, console: Any) -> None:
    browser.login("reader")
    browser.open("/live", type="recipient.*")
    harness.until("the live stream open", lambda: browser.testid("live-status").text == "live")
    with console.client("writer") as client:

        def source_then_recipient(n: int) -> list[Event]:
            return [
                Event("source.submitted", lead_id=f"lead-filter-src-{n}", flow_id="flow-live"),
                Event(
                    "recipient.failed",
                    lead_id=f"lead-filter-rcp-{n}",
                    flow_id="flow-live",
                    reason=harness.SCRIPT_VALUE,
                ),
            ]

        append_until_shown(browser, client, source_then_recipient)
    assert "lead-filter-src" not in live_rows(browser)
    assert harness.SCRIPT_VALUE in live_rows(browser)  # set as text by the page's script
    assert_no_dialog(browser, "/live")


def test_reports_show_rows_and_a_chart(browser: Any, screenshots: Path) -> None:
    browser.login("analyst")
    browser.open(
        "/reports", since="2020-01-01", until=(datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    )
    browser.testid("report-row")
    rows = {
        (row.get_attribute("data-table"), row.get_attribute("data-key")): [
            cell.text for cell in row.find_elements(By.TAG_NAME, "td")
        ]
        for row in browser.testids("report-row")
    }
    assert {"source.submitted", "recipient.delivered"} <= {key for table, key in rows if table == "outcomes"}
    # The ten-step journey's money (no demo flow uses these entities): events, revenue, cost, profit.
    assert rows["recipients", "rcp_south"][1:5] == ["1", "31.25", "0", "31.25"]
    assert rows["sources", "src_browser"][1:5] == ["4", "0", "-4.50", "-4.50"]
    bars = {bar.get_attribute("data-label"): bar for bar in browser.testids("chart-bar")}
    assert bars["rcp_south"].get_attribute("data-value") == "31.25"
    assert bars["rcp_south"].find_element(By.TAG_NAME, "rect").size["width"] > 0  # drawn, in an svg
    assert browser.driver.find_elements(By.CSS_SELECTOR, '[data-testid="report-chart"] svg')
    browser.screenshot(screenshots, "reports")


def test_alerts_page_shows_a_firing(browser: Any, console: Any, screenshots: Path) -> None:
    with console.client("admin") as client:
        client.set_alert_rule(
            "browser-probe",
            kind=AlertKind.MATCH,
            filter=EventFilter(types=("browser.probe",)),
            description="a probe from the browser tests",
        )
        client.append(
            Event("browser.probe", lead_id="lead-probe", flow_id="flow-probe", outcome=Outcome.ERROR)
        )
    browser.login("reader")

    def firing() -> list[Any]:
        browser.open("/alerts")
        return [row for row in browser.testids("alert-row") if "browser-probe" in row.text]

    rows = harness.until("an alert-row for the probe", firing)
    link = rows[0].find_element(By.CSS_SELECTOR, 'a[href*="/events/evt_"]')
    browser.screenshot(screenshots, "alerts")
    link.click()
    browser.wait().until(lambda d: "/events/evt_" in d.current_url)
    fields = {e.get_attribute("data-field"): e.text for e in browser.testids("event-field")}
    assert "alert.fired" in fields["type"]
    assert "lead-probe" in fields["lead_id"]


# -- accounts ------------------------------------------------------------------------------------


def test_another_accounts_lead_is_not_found(browser: Any, console: Any) -> None:
    browser.allowed_statuses.add(404)
    browser.login("admin")
    browser.open(f"/leads/{harness.OTHER_LEAD}")
    assert browser.testid("error").get_attribute("data-status") == "404"
    other = browser.text()
    assert harness.OTHER_EMAIL not in other and not browser.testids("timeline-step")
    browser.open("/leads/lead-that-never-was")
    unknown = browser.text()
    # Identical to a lead that does not exist: nothing tells that it does elsewhere.
    assert other.replace(harness.OTHER_LEAD, "X") == unknown.replace("lead-that-never-was", "X")
    browser.open(f"/events/{console.other_event}")
    assert browser.testid("error").get_attribute("data-status") == "404"
    assert harness.OTHER_EMAIL not in browser.text()
    search(browser, console.other_event)  # by its id in the search box: the same
    assert browser.testid("error").get_attribute("data-status") == "404"
    assert not browser.testids("event-field") and harness.OTHER_LEAD not in browser.text()

    browser.login("other")  # the lead is there for its own account
    assert len(open_lead(browser, harness.OTHER_LEAD)) == 1
    assert harness.OTHER_EMAIL in browser.text()
