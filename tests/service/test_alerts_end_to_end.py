"""Alerting end to end, as an operator runs it: a rule set over gRPC with a webhook, events
appended over gRPC, the firing and its resolution delivered signed to a real HTTP receiver
(which fails the first attempts), listed by ListAlerts, counted by /metrics, every attempt
an event in the log; and a server killed between the commit and the firing that, once
restarted, fires and delivers exactly once."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from leadtrail.client import AlertKind, Client, Event, EventFilter, GroupBy, NotFoundError, Outcome
from leadtrail.server.alerts.signing import verify
from leadtrail.server.alerts.webhooks import POLICY_ENV
from leadtrail.server.crashpoints import ENVIRONMENT as CRASH_ENV
from prometheus_client.parser import text_string_to_metric_families

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
webhook_receiver = sys.modules["webhook_receiver"]
FAST = "timeout=1,first=0.05,max=0.2,give_up=60"
SECRET = "end-to-end-secret"
WAIT_S = 30.0
T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def stored(client: Client, event_id: str) -> Event | None:
    try:
        return client.get(event_id)
    except NotFoundError:
        return None


def firing_gauge(http_address: str, rule: str) -> float | None:
    with urllib.request.urlopen(f"http://{http_address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "leadtrail_alerts_firing":
            for sample in family.samples:
                if sample.labels.get("rule") == rule:
                    return sample.value
    return None


def errors(entity: str, n: int, tag: str) -> list[Event]:
    return [
        Event(
            "recipient.error", lead_id=f"{tag}-{i}", flow_id="flow-1", entity_id=entity, outcome=Outcome.ERROR
        )
        for i in range(n)
    ]


def attempts(client: Client) -> list[Event]:
    found = list(client.query(flow_id="alerts", types=["alert.delivered", "alert.delivery_failed"]))
    return sorted(found, key=lambda e: e.position)


def test_a_firing_and_its_resolution_reach_the_webhook_signed_and_are_listed_and_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POLICY_ENV, FAST)
    plan = lambda index, request: 500 if index < 2 else 200  # noqa: E731 - the receiver's answers
    with webhook_receiver.Receiver(plan) as receiver:
        server = server_process.ServerProcess(tmp_path / "data").start()
        try:
            with Client(server.address) as client:
                rule = client.set_alert_rule(
                    "buyer-errors",
                    kind=AlertKind.COUNT,
                    filter=EventFilter("recipient.error"),
                    threshold=3,
                    window_s=2,
                    group_by=GroupBy.ENTITY,
                    webhook_url=receiver.url(),
                    webhook_secret=SECRET,
                )
                assert rule.webhook_secret == "" and rule.webhook_secret_set
                assert firing_gauge(server.http_address, "buyer-errors") == 0
                client.append(errors("buyer-a", 2, "a") + errors("buyer-b", 1, "b"))  # below: nothing fires
                appended = client.append(errors("buyer-a", 1, "a2"))

                firing = until("the alert fires", lambda: client.list_alerts(firing_only=True))
                (alert,) = firing
                assert (alert.rule, alert.group, alert.firing, str(alert.value)) == (
                    "buyer-errors",
                    "buyer-a",
                    True,
                    "3",
                )
                # Listed from the evaluator's state, whose alert.fired event may still be on
                # its way to the log on a busy machine.
                fired = until("the alert.fired event is stored", lambda: stored(client, alert.event_id))
                assert fired.type == "alert.fired" and fired.details["position"] == appended[0].position
                assert firing_gauge(server.http_address, "buyer-errors") == 1

                # Two refused attempts, then delivered: three POSTs of the same event, signed.
                seen = receiver.wait_for(lambda r: len(r) >= 3)
                for request in seen[:3]:
                    assert request.headers["X-LeadTrail-Event-Id"] == alert.event_id
                    assert request.headers["Content-Type"].startswith("application/json")
                    assert verify(SECRET, request.body, request.headers["X-LeadTrail-Signature"])
                    body = orjson.loads(request.body)
                    assert (body["id"], body["type"], body["entity_id"]) == (
                        fired.id,
                        "alert.fired",
                        "buyer-a",
                    )
                assert [r.headers["X-LeadTrail-Attempt"] for r in seen[:3]] == ["1", "2", "3"]

                # The window passes without errors: resolved, delivered after its firing.
                resolved = until(
                    "the alert resolves",
                    lambda: [a for a in client.list_alerts(rule="buyer-errors") if a.resolved_event_id],
                )
                assert resolved[0].event_id == alert.event_id and not resolved[0].firing
                seen = receiver.wait_for(
                    lambda r: any(
                        x.headers["X-LeadTrail-Event-Id"] == resolved[0].resolved_event_id for x in r
                    )
                )
                assert [x.headers["X-LeadTrail-Event-Id"] for x in seen] == [alert.event_id] * 3 + [
                    resolved[0].resolved_event_id
                ]
                assert orjson.loads(seen[3].body)["type"] == "alert.resolved"
                assert firing_gauge(server.http_address, "buyer-errors") == 0

                # Every attempt is an event of the log, in order.
                outcomes = until(
                    "four attempts recorded", lambda: (a := attempts(client)) and len(a) >= 4 and a
                )
                assert [(e.type, e.details["event_id"], e.details["attempt"]) for e in outcomes] == [
                    ("alert.delivery_failed", alert.event_id, 1),
                    ("alert.delivery_failed", alert.event_id, 2),
                    ("alert.delivered", alert.event_id, 3),
                    ("alert.delivered", resolved[0].resolved_event_id, 1),
                ]
                assert [e.details["status"] for e in outcomes] == [500, 500, 200, 200]
                assert all(SECRET not in orjson.dumps(e.details).decode() for e in outcomes)
        finally:
            assert server.stop() == 0, server.output


def test_a_server_killed_between_commit_and_firing_fires_and_delivers_once_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POLICY_ENV, FAST)
    data = tmp_path / "data"
    with webhook_receiver.Receiver(lambda index, request: 200) as receiver:
        server = server_process.ServerProcess(data, "--http", "off").start()
        with Client(server.address) as client:
            client.set_alert_rule(
                "any-error",
                kind="count",
                filter=EventFilter("recipient.error"),
                threshold=2,
                window_s=3600,
                webhook_url=receiver.url(),
                webhook_secret=SECRET,
            )
        assert server.stop() == 0, server.output
        monkeypatch.setenv(CRASH_ENV, "alerts.before_emit")
        server = server_process.ServerProcess(data, "--http", "off").start()
        monkeypatch.delenv(CRASH_ENV)
        with Client(server.address) as client:
            client.append(errors("buyer-a", 2, "x"))  # acknowledged: durable before the crash
        assert server.child.wait(WAIT_S) != 0  # killed itself before appending the firing
        server.child.close()
        assert receiver.seen() == []

        server = server_process.ServerProcess(data, "--http", "off").start()
        try:
            with Client(server.address) as client:
                delivered = until(
                    "the firing delivered",
                    lambda: [e for e in attempts(client) if e.type == "alert.delivered"],
                )
                fired = list(client.query(types=["alert.fired"]))
                assert [e.details["rule"] for e in fired] == ["any-error"]
                assert [e.details["event_id"] for e in delivered] == [fired[0].id]
                client.append(errors("buyer-a", 3, "y"))  # still firing: no second alert.fired
                time.sleep(0.5)  # a firing would follow within milliseconds; give it ample time
                assert [e.id for e in client.query(types=["alert.fired"])] == [fired[0].id]
            assert [r.headers["X-LeadTrail-Event-Id"] for r in receiver.seen()] == [fired[0].id]
        finally:
            assert server.stop() == 0, server.output
