"""What the console's browser tests share: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against a real ``leadtrail serve`` with demo data.

``tests/browser/conftest.py`` loads this file by path as the module ``console_harness``
and makes its fixtures of it. Per test module: one server (loopback ports the OS picks,
keys of every role of account ``acme`` and an admin key of account ``globex``), filled
with ``leadtrail demo`` and a few leads appended here with known emails, phones, a
ten-step journey and a field holding a ``<script>`` tag; and one browser. A missing
Chromium fails the tests with what to install: the console's promise is that it works in
a browser, so CI must not pass without one.

Every test ends with a look at the browser's own logs: no console error (beyond the
refusals a test asked for) and no request to anything but the LeadTrail server.

Screenshots: ``LEADTRAIL_SCREENSHOTS=DIR`` keeps one PNG per page in DIR (the README's
pictures come from ``LEADTRAIL_SCREENSHOTS=docs/screenshots``); without it they go to a
temporary directory, so the code that takes them runs on every test run.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from leadtrail.client import Client, Event, Outcome
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15.0
"""The longest a test waits for a page, an element or a live row (a loaded 2-core machine)."""
WIDTH, HEIGHT = 1280, 900
SCREENSHOTS_ENV = "LEADTRAIL_SCREENSHOTS"
ROLES = ("admin", "analyst", "reader", "writer")
T = TypeVar("T")

JOURNEY_LEAD = "lead-dana-reyes"
JOURNEY_EMAIL = "Dana.Reyes@example.com"
JOURNEY_PHONE = "+1 (512) 555-0142"
PHONE_LEAD = "lead-phone-only"
PHONE_ONLY = "737-555-0199"
SCRIPT_LEAD = "lead-script-note"
SCRIPT_VALUE = "<script>alert(1)</script>"
OTHER_LEAD = "lead-globex-private"
OTHER_EMAIL = "private.person@globex.example"


@dataclass(frozen=True)
class Step:
    """One step of the ten-step journey as appended: its event id and what a page shows."""

    id: str
    type: str
    timestamp: datetime
    since_previous: timedelta


@dataclass
class Console:
    """The running server and what the module's tests know about its data."""

    server: Any
    url: str
    """``http://127.0.0.1:PORT`` of the console."""
    grpc: str
    """``127.0.0.1:PORT`` of the gRPC listener."""
    keys: dict[str, str]
    """Role -> key of account ``acme``; ``other`` -> an admin key of account ``globex``."""
    journey: list[Step] = field(default_factory=list)
    other_event: str = ""
    """An event id of account ``globex``."""

    def client(self, role: str = "admin") -> Client:
        return Client(self.grpc, api_key=self.keys[role])

    def page(self, path: str, **query: str) -> str:
        return self.url + path + (("?" + urllib.parse.urlencode(query)) if query else "")


def until(what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    """``probe()`` once it is truthy, polled until ``timeout``; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


# -- the browser ---------------------------------------------------------------------------------


class Browser:
    """A headless Chromium with the waits and checks the console tests share."""

    def __init__(self, driver: WebDriver, console: Console) -> None:
        self.driver = driver
        self.console = console
        self.allowed_statuses: set[int] = set()
        """HTTP error statuses the current test asked for (a 404 page, a refusal): Chromium
        logs them as console errors, which are otherwise failures."""
        self.requests_seen = 0
        """Requests read from the performance log: none would mean the log is not read."""

    # navigation

    def open(self, path: str, **query: str) -> None:
        self.driver.get(self.console.page(path, **query))

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.driver.current_url).path

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def wait(self, timeout: float = WAIT_S) -> WebDriverWait[WebDriver]:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1)

    def testids(self, name: str, within: WebElement | None = None) -> list[WebElement]:
        root: Any = within if within is not None else self.driver
        found: list[WebElement] = root.find_elements(By.CSS_SELECTOR, f'[data-testid="{name}"]')
        return found

    def testid(self, name: str, timeout: float = WAIT_S) -> WebElement:
        """The first element with ``data-testid=name``, waited for."""
        try:
            element: WebElement = self.wait(timeout).until(
                lambda d: d.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')
            )
        except TimeoutException:
            raise AssertionError(
                f"no data-testid={name!r} on {self.driver.current_url} within {timeout} s; the page says:\n"
                f"{self._body_text()[:2000]}"
            ) from None
        return element

    def _body_text(self) -> str:
        try:
            return self.text()
        except WebDriverException:
            return "(no page)"

    # sessions

    def logout(self) -> None:
        """No session: the cookies of the console's origin are gone."""
        self.open("/login")
        self.driver.delete_all_cookies()

    def login_attempt(self, role: str) -> None:
        """Post the key of ``role`` through the /login form and wait for the answer page."""
        self.logout()
        self.open("/login")
        form = self.testid("login-form")
        key_input = form.find_element(By.CSS_SELECTOR, "input[name=key], input[type=password]")
        key_input.send_keys(self.console.keys[role])
        key_input.submit()
        self.wait().until(staleness_of(form))

    def login(self, role: str) -> None:
        """Log in through the /login form with the key of ``role``, as a person does."""
        self.login_attempt(role)
        assert self.path != "/login", f"{role} key not admitted: {self._body_text()[:1000]}"

    def page_source_text(self) -> str:
        """The page's HTML as served and grown by its script, hidden parts included."""
        return str(self.driver.page_source)

    # the clipboard (the inspector's copy button)

    def grant_clipboard(self) -> None:
        origin = self.console.url
        permissions = ["clipboardReadWrite", "clipboardSanitizedWrite"]
        self.driver.execute_cdp_cmd(
            "Browser.grantPermissions", {"origin": origin, "permissions": permissions}
        )

    def clipboard(self) -> str:
        text = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, (e) => done('clipboard: ' + e));"
        )
        return str(text)

    # what a page must never do

    def problems(self) -> list[str]:
        """Console errors (beyond allowed statuses) and requests to anything but the server,
        since the previous call."""
        found = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            message = entry["message"]
            if any(f"status of {status}" in message for status in self.allowed_statuses):
                continue
            found.append(f"console: {message}")
        origin = urllib.parse.urlsplit(self.console.url).netloc
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] != "Network.requestWillBeSent":
                continue
            url = message["params"]["request"]["url"]
            self.requests_seen += 1
            parts = urllib.parse.urlsplit(url)
            if parts.scheme in ("data", "about", "blob"):
                continue
            if parts.netloc != origin:
                found.append(f"request to another host: {url}")
        return found

    # pictures

    def screenshot(self, directory: Path, name: str) -> Path:
        """A PNG of the whole page, 1280 pixels wide, as ``directory/name.png``: the viewport
        is made as tall as the page for the picture (up to 4,000 pixels), then put back."""
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
        )
        height = max(HEIGHT, min(int(height), 4000))
        metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            path = directory / f"{name}.png"
            assert self.driver.save_screenshot(str(path)), f"no screenshot of {self.driver.current_url}"
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        assert png_size(path.read_bytes()) == (WIDTH, height), path
        return path


_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000), ("ms", 1))


def shows_duration(shown: str, duration: timedelta) -> bool:
    """Whether ``shown`` is ``+duration`` in human units: its largest unit is the largest that
    fits the duration (``+140 ms``, ``+2.5 s``, ``+1 min 32 s``, ``+21 h``, ``+1 d``)."""
    ms = duration // timedelta(milliseconds=1)
    expected = next(unit for unit, size in _UNITS if ms >= size)
    units = re.findall(r"\d\s*(d|h|min|s|ms)\b", shown)
    return shown.startswith("+") and bool(units) and units[0] == expected


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def chromium_options() -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},{HEIGHT}",
        # No call home of the browser's own (updates, safe browsing, field trials).
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return options


def start_chromium() -> WebDriver:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the console tests need headless Chromium: {', '.join(missing)} missing "
            "(apt-get install chromium chromium-driver; .ci/run installs them)",
            pytrace=False,
        )
    try:
        return webdriver.Chrome(options=chromium_options(), service=Service(CHROMEDRIVER))
    except WebDriverException as e:
        pytest.fail(f"Chromium did not start ({CHROMIUM}, {CHROMEDRIVER}): {e.msg}", pytrace=False)


# -- the server and its data ---------------------------------------------------------------------


def run_demo(address: str, key: str, leads: int) -> None:
    done = subprocess.run(
        [*server_process.LEADTRAIL, "demo", "--leads", str(leads), "--server", address, "--api-key", key],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "LEADTRAIL_API_KEY"},
    )
    assert done.returncode == 0, done.stderr


def journey_events(start: datetime) -> list[Event]:
    """Ten steps of one lead over two days: every unit of a duration (ms, s, min, h, d), fields
    added, changed and removed, a failure, a retry and a sale."""
    base = {"email": JOURNEY_EMAIL, "phone": JOURNEY_PHONE, "first_name": "Dana", "state": "TX"}
    hour, day = 3_600_000, 86_400_000
    offsets_ms = [0, 140, 2_600, 95_000, 4 * 60_000, 2 * hour, 3 * hour, 3 * hour + 900, day, 2 * day]
    steps: list[tuple[str, str, Outcome, str, dict[str, Any], str | None]] = [
        ("source.submitted", "src_browser", Outcome.SUCCESS, "", {}, "-4.50"),
        ("source.accepted", "src_browser", Outcome.SUCCESS, "", {"email.valid": True}, None),
        ("enhancement.success", "svc_phone_check", Outcome.SUCCESS, "", {"phone.carrier": "Verizon"}, None),
        ("filter.passed", "fil_states", Outcome.SUCCESS, "", {"filter.score": 71}, None),
        ("recipient.failed", "rcp_north", Outcome.FAILURE, "Hourly cap reached", {}, None),
        ("retry.scheduled", "rcp_north", Outcome.SKIP, "Retry after cap", {"retry.count": 1}, None),
        ("recipient.error", "rcp_north", Outcome.ERROR, "Timeout after 3000 ms", {"retry.count": 2}, None),
        ("recipient.delivered", "rcp_south", Outcome.SUCCESS, "", {"buyer": "rcp_south"}, "31.25"),
        ("flow.completed", "flow_browser", Outcome.SUCCESS, "", {"filter.score": 88}, None),
        ("feedback.received", "rcp_south", Outcome.SUCCESS, "Converted", {"status": "sold"}, None),
    ]
    events = []
    lead: dict[str, Any] = dict(base)
    for i, (type_, entity, outcome, reason, changes, price) in enumerate(steps):
        lead = {**lead, **changes}
        if type_ == "flow.completed":
            lead.pop("retry.count", None)  # a removed field
        events.append(
            Event(
                type_,
                lead_id=JOURNEY_LEAD,
                flow_id="flow-browser",
                timestamp=start + timedelta(milliseconds=offsets_ms[i]),
                entity_id=entity,
                outcome=outcome,
                reason=reason,
                duration_ms=120 + i,
                integration="browser-tests",
                response_code=200 if outcome == Outcome.SUCCESS else 503,
                price=Decimal(price) if price is not None else None,
                details={"step": i + 1, "rule_set": "default"},
                lead=dict(lead),
            )
        )
    return events


def fill(console: Console) -> None:
    run_demo(console.grpc, console.keys["admin"], leads=25)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    with console.client("admin") as client:
        results = client.append(journey_events(start))
        events = journey_events(start)
        previous = events[0].timestamp
        for result, event in zip(results, events, strict=True):
            assert event.timestamp is not None and previous is not None
            console.journey.append(Step(result.id, event.type, event.timestamp, event.timestamp - previous))
            previous = event.timestamp
        client.append(
            [
                Event(
                    "source.submitted",
                    lead_id=PHONE_LEAD,
                    flow_id="flow-browser",
                    timestamp=start + timedelta(hours=1),
                    entity_id="src_browser",
                    outcome=Outcome.SUCCESS,
                    lead={"phone": PHONE_ONLY, "state": "CA"},
                ),
                Event(
                    "source.submitted",
                    lead_id=SCRIPT_LEAD,
                    flow_id="flow-browser",
                    timestamp=start + timedelta(hours=2),
                    entity_id="src_browser",
                    outcome=Outcome.SUCCESS,
                    reason=SCRIPT_VALUE,
                    details={"note": SCRIPT_VALUE},
                    lead={"note": SCRIPT_VALUE, "state": "NY", "email": "script@example.com"},
                ),
            ]
        )
    with console.client("other") as client:
        result = client.append(
            Event(
                "source.submitted",
                lead_id=OTHER_LEAD,
                flow_id="flow-globex",
                timestamp=start,
                entity_id="src_globex",
                outcome=Outcome.SUCCESS,
                lead={"email": OTHER_EMAIL, "state": "WA"},
            )
        )
        console.other_event = result.id


def present(browser: Browser, name: str) -> bool:
    try:
        browser.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')
    except NoSuchElementException:
        return False
    return True
