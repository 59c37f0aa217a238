"""Alert rules evaluated by a real server on events appended over gRPC: every kind fires
(and resolves where it resolves), per group, per account, only on events after the rule.

Rules are written into the data directory before the server starts (``RuleBook``, the
file the server reads); the alert events are read back over gRPC like any other event.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from leadtrail.client import Client, Event, Outcome
from leadtrail.server.alerts import GroupBy, Kind, Rule, RuleBook
from leadtrail.server.alerts.evaluator import MAX_GROUPS
from leadtrail.storage import EventFilter

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
ALERT_TYPES = ["alert.fired", "alert.resolved"]
WAIT_S = 20.0


def make_rule(name: str, kind: Kind, types: tuple[str, ...], threshold: str, **kw: Any) -> Rule:
    account = kw.pop("account_id", "default")
    base = kw.pop("base", None)
    return Rule(
        account_id=account,
        name=name,
        kind=kind,
        filter=EventFilter(account_id=account, types=types),
        base=EventFilter(account_id=account, types=base) if base else None,
        threshold=Decimal(threshold),
        set_at_ms=1,
        **kw,
    )


def serve(data: Path, *rules: Rule) -> Any:
    book = RuleBook(str(data))
    for rule in rules:
        book.set(rule)
    return server_process.ServerProcess(data, "--http", "off").start()


@pytest.fixture
def running() -> Iterator[list[Any]]:
    """Servers a test started: stopped (cleanly) at its end."""
    started: list[Any] = []
    yield started
    for server in started:
        if server.child is not None and server.child.proc.poll() is None:
            assert server.stop() == 0, server.output


alert_events = sys.modules["alert_events"]  # loaded by tests/conftest.py
alerts = alert_events.alerts


def wait_for(client: Client, done: Callable[[list[Event]], bool], timeout: float = WAIT_S) -> list[Event]:
    return list(alert_events.wait_for(client, done, timeout))


def summary(found: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.type, e.details["rule"], e.entity_id) for e in found]


def ev(type: str, lead: str = "lead-1", entity: str = "buyer-a", ts: int | None = None, **kw: Any) -> Event:
    stamp = datetime.fromtimestamp(ts / 1000, UTC) if ts is not None else None
    return Event(type, lead_id=lead, flow_id="flow-1", entity_id=entity, timestamp=stamp, **kw)


def test_count_fires_once_per_group_and_resolves_when_the_window_passes(
    tmp_path: Path, running: list[Any]
) -> None:
    rule = make_rule("failures", Kind.COUNT, ("recipient.failed",), "3", window_s=2, group_by=GroupBy.ENTITY)
    server = serve(tmp_path / "data", rule)
    running.append(server)
    with Client(server.address) as client:
        a = client.append(
            [ev("recipient.failed", f"l{i}", "buyer-a", outcome=Outcome.FAILURE) for i in range(3)]
        )
        client.append([ev("recipient.failed", f"m{i}", "buyer-b", outcome=Outcome.FAILURE) for i in range(2)])
        client.append([ev("recipient.delivered", "x", "buyer-b")])  # another type: never counted
        found = wait_for(client, lambda f: len(f) >= 1)
        fired = found[0]
        assert summary(found[:1]) == [("alert.fired", "failures", "buyer-a")]
        assert fired.flow_id == "alerts" and fired.lead_id == "rule:failures"
        assert fired.outcome is Outcome.FAILURE and fired.reason
        assert fired.details["kind"] == "count" and fired.details["value"] == "3"
        assert fired.details["threshold"] == "3" and fired.details["window_s"] == 2
        assert fired.details["position"] == a[2].position
        assert fired.details["sample_event_ids"] == [r.id for r in a]
        found = wait_for(client, lambda f: any(e.type == "alert.resolved" for e in f))
        assert summary(found) == [
            ("alert.fired", "failures", "buyer-a"),
            ("alert.resolved", "failures", "buyer-a"),
        ]
        resolved = found[1]
        assert resolved.outcome is Outcome.SUCCESS and resolved.details["fired_event_id"] == fired.id
        # buyer-b reaches 3 in a new window: its own alert
        b = client.append([ev("recipient.failed", f"n{i}", "buyer-b") for i in range(3)])
        found = wait_for(client, lambda f: len(f) >= 3)
        assert summary(found)[2] == ("alert.fired", "failures", "buyer-b")
        assert found[2].details["position"] == b[2].position


def test_one_firing_until_it_resolves(tmp_path: Path, running: list[Any]) -> None:
    rule = make_rule("busy", Kind.COUNT, ("step.*",), "2", window_s=3600)
    server = serve(tmp_path / "data", rule, END)
    running.append(server)
    with Client(server.address) as client:
        for i in range(10):
            client.append([ev("step.done", f"l{i}"), ev("step.done", f"l{i}")])
        assert summary(until_end(client)) == [("alert.fired", "busy", "")]


def test_rate_fires_per_group_with_enough_base_events(tmp_path: Path, running: list[Any]) -> None:
    rule = make_rule(
        "delivery",
        Kind.RATE,
        ("recipient.failed", "recipient.error"),
        "0.5",
        base=("recipient.*",),
        window_s=3600,
        min_events=4,
        group_by=GroupBy.ENTITY,
    )
    server = serve(tmp_path / "data", rule)
    running.append(server)
    with Client(server.address) as client:
        client.append([ev("recipient.failed", f"l{i}", "buyer-a") for i in range(3)])  # 3 < min_events
        client.append([ev("recipient.delivered", f"l{i}", "buyer-b") for i in range(6)])
        last = client.append([ev("recipient.error", "l9", "buyer-a")])
        found = wait_for(client, lambda f: len(f) >= 1)
        assert summary(found) == [("alert.fired", "delivery", "buyer-a")]
        assert found[0].details["value"] == "1.0000" and found[0].details["position"] == last[0].position
        client.append([ev("recipient.delivered", f"k{i}", "buyer-a") for i in range(5)])
        found = wait_for(client, lambda f: len(f) >= 2)
        assert summary(found)[1] == ("alert.resolved", "delivery", "buyer-a")


def test_drop_fires_when_the_share_falls_below_its_baseline(tmp_path: Path, running: list[Any]) -> None:
    rule = make_rule(
        "quality",
        Kind.DROP,
        ("source.accepted",),
        "0.3",
        base=("source.submitted", "source.accepted"),
        window_s=2,
        baseline_windows=2,
        min_events=5,
        group_by=GroupBy.ENTITY,
    )
    server = serve(tmp_path / "data", rule)
    running.append(server)
    t = int(time.time()) * 1000
    with Client(server.address) as client:
        baseline = []
        for back in (4000, 3000):
            for i in range(10):
                baseline += [ev("source.submitted", f"b{back}{i}", "src", t - back)]
                baseline += [ev("source.accepted", f"b{back}{i}", "src", t - back)]
        client.append(baseline)
        now = client.append([ev("source.submitted", f"c{i}", "src", t) for i in range(10)])
        found = wait_for(client, lambda f: len(f) >= 1)
        assert summary(found) == [("alert.fired", "quality", "src")]
        assert found[0].details["value"] == "0.5000" and found[0].details["position"] == now[4].position
        client.append([ev("source.accepted", f"d{i}", "src", t) for i in range(20)])
        found = wait_for(client, lambda f: len(f) >= 2)
        assert summary(found)[1] == ("alert.resolved", "quality", "src")


def test_absence_fires_when_a_service_falls_silent(tmp_path: Path, running: list[Any]) -> None:
    rule = make_rule(
        "enhancer-down", Kind.ABSENCE, ("enhancement.succeeded",), "0", window_s=1, group_by=GroupBy.ENTITY
    )
    server = serve(tmp_path / "data", rule)
    running.append(server)
    with Client(server.address) as client:
        client.append(ev("enhancement.succeeded", "l1", "enhancer"))
        found = wait_for(client, lambda f: len(f) >= 1)
        assert summary(found) == [("alert.fired", "enhancer-down", "enhancer")]
        client.append(ev("enhancement.succeeded", "l2", "enhancer"))
        found = wait_for(client, lambda f: len(f) >= 2)
        assert summary(found)[1] == ("alert.resolved", "enhancer-down", "enhancer")
        assert found[1].details["fired_event_id"] == found[0].id


END = make_rule("end", Kind.MATCH, ("test.end",), "1")
"""Fires on ``test.end``: every event before it has been evaluated once its firing is written."""


def until_end(client: Client) -> list[Event]:
    """The alerts of every event appended so far (``END`` among the rules)."""
    client.append(ev("test.end", "end"))
    found = wait_for(client, lambda f: any(e.details["rule"] == "end" for e in f))
    return [e for e in found if e.details["rule"] != "end"]


def test_a_client_clock_behind_the_servers_neither_silences_nor_flaps_alerts(
    tmp_path: Path, running: list[Any]
) -> None:
    """Events stamped an hour behind the server's clock: a steady service is never absent, and
    a count rule resolves when its events stop and fires again when they come back."""
    quiet = make_rule("quiet", Kind.ABSENCE, ("service.heartbeat",), "0", window_s=5)
    fails = make_rule("fails", Kind.COUNT, ("step.failed",), "3", window_s=1)
    server = serve(tmp_path / "data", quiet, fails, END)
    running.append(server)
    lag = 3_600_000

    def behind(type: str, lead: str) -> Event:
        return ev(type, lead, ts=int(time.time() * 1000) - lag)

    with Client(server.address) as client:
        client.append([behind("step.failed", f"a{i}") for i in range(3)])
        wait_for(client, lambda f: len(f) >= 1)
        for i in range(12):  # three seconds of heartbeats: the ticks go by meanwhile
            client.append(behind("service.heartbeat", f"h{i}"))
            time.sleep(0.25)
        client.append([behind("service.heartbeat", "h"), *[behind("step.failed", f"b{i}") for i in range(3)]])
        found = until_end(client)
        assert summary(found) == [
            ("alert.fired", "fails", ""),
            ("alert.resolved", "fails", ""),
            ("alert.fired", "fails", ""),
        ]


def test_match_fires_for_each_event_with_its_lead(tmp_path: Path, running: list[Any]) -> None:
    rule = make_rule("flagged", Kind.MATCH, ("lead.flagged",), "1")
    server = serve(tmp_path / "data", rule, END)
    running.append(server)
    with Client(server.address) as client:
        client.append([ev("lead.flagged", "l1"), ev("lead.scored", "l2"), ev("lead.flagged", "l3")])
        found = until_end(client)
        assert [(e.type, e.lead_id) for e in found] == [("alert.fired", "l1"), ("alert.fired", "l3")]


def test_lead_margin_sums_every_price_of_the_lead(tmp_path: Path, running: list[Any]) -> None:
    rule = make_rule("negative-margin", Kind.LEAD_MARGIN, ("flow.completed",), "-0.01")
    server = serve(tmp_path / "data", rule)
    running.append(server)
    with Client(server.address) as client:
        # earlier appends: the evaluator reads these sums from the log when the lead completes
        client.append(
            [
                ev("source.purchased", "loss", price=Decimal("-12.50")),
                ev("source.purchased", "win", price=Decimal("-3")),
            ]
        )
        client.append(
            [
                ev("recipient.delivered", "loss", price=Decimal("12.49")),
                ev("recipient.delivered", "win", price=Decimal("9.00")),
            ]
        )
        client.append([ev("flow.completed", "loss"), ev("flow.completed", "win")])
        # a lead whose whole story is in one append
        client.append(
            [
                ev("source.purchased", "even", price=Decimal("-1")),
                ev("recipient.delivered", "even", price=Decimal("0.99")),
                ev("flow.completed", "even"),
            ]
        )
        found = wait_for(client, lambda f: len(f) >= 2)
        assert [(e.lead_id, e.details["value"]) for e in found] == [("loss", "-0.01"), ("even", "-0.01")]


def test_another_accounts_events_never_count(tmp_path: Path, running: list[Any]) -> None:
    data = tmp_path / "data"
    acme = server_process.create_key(data, "acme", "admin")
    other = server_process.create_key(data, "default", "admin")
    rule = make_rule("failures", Kind.COUNT, ("recipient.failed",), "3", window_s=3600, account_id="acme")
    server = serve(data, rule)
    running.append(server)
    with Client(server.address, api_key=other) as theirs, Client(server.address, api_key=acme) as ours:
        theirs.append([ev("recipient.failed", f"l{i}") for i in range(5)])
        list(theirs.query(types=["recipient.*"]))  # a recorded read: the server's own event, never counted
        mine = ours.append([ev("recipient.failed", f"m{i}") for i in range(3)])
        found = wait_for(ours, lambda f: len(f) >= 1)
        assert summary(found) == [("alert.fired", "failures", "")]
        assert found[0].account_id == "acme" and found[0].details["position"] == mine[2].position
        assert alerts(theirs) == []


def test_a_rule_counts_only_events_after_it_was_set(tmp_path: Path, running: list[Any]) -> None:
    data = tmp_path / "data"
    server = serve(data)
    with Client(server.address) as client:
        early = client.append([ev("recipient.failed", f"l{i}") for i in range(5)])
    assert server.stop() == 0
    rule = make_rule("failures", Kind.COUNT, ("recipient.failed",), "3", window_s=3600)
    server = serve(data, Rule(**{**_fields(rule), "set_after_position": early[-1].position}))
    running.append(server)
    with Client(server.address) as client:
        later = client.append([ev("recipient.failed", f"m{i}") for i in range(3)])
        found = wait_for(client, lambda f: len(f) >= 1)
        assert summary(found) == [("alert.fired", "failures", "")]
        assert found[0].details["position"] == later[2].position


def _fields(rule: Rule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in Rule.__dataclass_fields__}


def test_many_groups_stay_bounded_and_a_firing_group_still_resolves(
    tmp_path: Path, running: list[Any]
) -> None:
    data = tmp_path / "data"
    rule = make_rule("per-entity", Kind.COUNT, ("step.failed",), "2", window_s=2, group_by=GroupBy.ENTITY)
    server = serve(data, rule)
    running.append(server)
    with Client(server.address) as client:
        client.append([ev("step.failed", "h1", "hot"), ev("step.failed", "h2", "hot")])
        wait_for(client, lambda f: len(f) >= 1)
        for k in range(12):  # 12,000 groups of one event each: more than MAX_GROUPS (10,000)
            client.append([ev("step.failed", f"l{k}-{i}", f"e{k}-{i}") for i in range(1000)])
        found = wait_for(client, lambda f: any(e.type == "alert.resolved" for e in f))
        assert summary(found) == [
            ("alert.fired", "per-entity", "hot"),
            ("alert.resolved", "per-entity", "hot"),
        ]
    assert server.stop() == 0, server.output
    # what the evaluator held, as it saved it on stopping: every group seen up to the bound
    with open(data / "consumers" / "alerts.json", "rb") as f:
        saved = json.load(f)
    (held,) = [groups for _, name, *_, groups in saved["state"]["rules"] if name == "per-entity"]
    assert len(held) == MAX_GROUPS
    assert {g[0] for g in held} >= {f"e11-{i}" for i in range(1000)}  # the newest are kept


def test_a_clean_restart_keeps_the_firing_state(tmp_path: Path, running: list[Any]) -> None:
    data = tmp_path / "data"
    rule = make_rule("failures", Kind.COUNT, ("recipient.failed",), "3", window_s=4)
    server = serve(data, rule)
    with Client(server.address) as client:
        client.append([ev("recipient.failed", f"l{i}") for i in range(3)])
        wait_for(client, lambda f: len(f) >= 1)
    assert server.stop() == 0, server.output
    server = serve(data)
    running.append(server)
    with Client(server.address) as client:
        client.append(ev("recipient.failed", "l9"))  # still at or above 3: no second firing
        found = wait_for(client, lambda f: any(e.type == "alert.resolved" for e in f))
        assert summary(found) == [("alert.fired", "failures", ""), ("alert.resolved", "failures", "")]
        assert found[1].details["fired_event_id"] == found[0].id


def test_lead_margin_reads_what_came_before_the_evaluator_started(tmp_path: Path, running: list[Any]) -> None:
    data = tmp_path / "data"
    server = serve(data)
    with Client(server.address) as client:
        client.append(
            [
                ev("source.purchased", "old", price=Decimal("-20")),
                ev("recipient.delivered", "old", price=Decimal("5")),
            ]
        )
    assert server.stop() == 0, server.output
    server = serve(data, make_rule("negative-margin", Kind.LEAD_MARGIN, ("flow.completed",), "-0.01"))
    running.append(server)
    with Client(server.address) as client:
        client.append([ev("recipient.delivered", "old", price=Decimal("4.99")), ev("flow.completed", "old")])
        found = wait_for(client, lambda f: len(f) >= 1)
        assert [(e.lead_id, e.details["value"]) for e in found] == [("old", "-10.01")]
