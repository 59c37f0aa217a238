"""A server killed (kill -9) around an alert neither repeats nor misses a firing.

``LEADTRAIL_CRASH_AT`` makes the server kill itself at a named point of the evaluator
(``leadtrail.server.crashpoints``): after evaluating a firing but before appending it
(``alerts.before_emit``), and after the firing is durable but before the evaluated
position is saved (``alerts.before_save``). A plain kill -9 at a random moment of a
stream of appends is checked against an offline replay of the evaluator over the
same events.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from leadtrail.client import Client, Event, LeadTrailError
from leadtrail.server.alerts import GroupBy, Kind, Rule, RuleBook
from leadtrail.server.alerts.evaluator import Evaluator
from leadtrail.server.crashpoints import ENVIRONMENT
from leadtrail.storage import Event as StoredEvent
from leadtrail.storage import EventFilter, new_event_id

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
ALERT_TYPES = ["alert.fired", "alert.resolved"]
WAIT_S = 30.0


def make_rule(name: str, kind: Kind, types: tuple[str, ...], threshold: str, **kw: Any) -> Rule:
    return Rule(
        account_id="default",
        name=name,
        kind=kind,
        filter=EventFilter(types=types),
        threshold=Decimal(threshold),
        set_at_ms=1,
        **kw,
    )


def start(data: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str = "") -> Any:
    if crash_at:
        monkeypatch.setenv(ENVIRONMENT, crash_at)
    try:
        return server_process.ServerProcess(data, "--http", "off").start()
    finally:
        monkeypatch.delenv(ENVIRONMENT, raising=False)


def died(server: Any, timeout: float = WAIT_S) -> int:
    """The exit status of a server that is to kill itself."""
    status = server.child.wait(timeout)
    server.child.close()
    return int(status)


alert_events = sys.modules["alert_events"]  # loaded by tests/conftest.py
alerts = alert_events.alerts


def wait_for(client: Client, done: Callable[[list[Event]], bool], timeout: float = WAIT_S) -> list[Event]:
    return list(alert_events.wait_for(client, done, timeout))


@pytest.mark.parametrize("point", ["alerts.before_emit", "alerts.before_save"])
def test_a_crash_around_a_firing_neither_repeats_nor_misses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    data = tmp_path / "data"
    RuleBook(str(data)).set(
        make_rule("failures", Kind.COUNT, ("recipient.failed",), "3", window_s=3, group_by=GroupBy.ENTITY)
    )
    server = start(data, monkeypatch, crash_at=point)
    with Client(server.address, timeout=10) as client:
        written = client.append(
            [Event("recipient.failed", lead_id=f"l{i}", flow_id="f", entity_id="buyer-a") for i in range(3)]
        )
    assert died(server) == -9, server.output
    server = start(data, monkeypatch)
    try:
        with Client(server.address) as client:
            found = wait_for(client, lambda f: any(e.type == "alert.resolved" for e in f))
            time.sleep(1.5)  # a repeat would come within a tick or two
            found = alerts(client)
            assert [(e.type, e.entity_id) for e in found] == [
                ("alert.fired", "buyer-a"),
                ("alert.resolved", "buyer-a"),
            ]
            assert found[0].details["position"] == written[2].position
            assert found[1].details["fired_event_id"] == found[0].id
    finally:
        assert server.stop() == 0, server.output


@pytest.mark.parametrize("stamps", ["ordinary", "future"])
def test_kill_9_during_appends_matches_an_offline_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stamps: str
) -> None:
    """Windows move with the events' own times ("ordinary": a second apart, up to now, so
    windows slide while the server ticks between batches and replays after the kill; "future":
    a day ahead, placed at most 5 minutes past their recording) and never with the clock, so
    the firings depend on the log alone and an offline replay of it must give the same. A
    resolution by time would need a firing group to get no event for a whole window (30 s)."""
    data = tmp_path / "data"
    book = RuleBook(str(data))
    book.set(make_rule("busy", Kind.COUNT, ("step.failed",), "4", window_s=30, group_by=GroupBy.ENTITY))
    book.set(make_rule("end", Kind.MATCH, ("test.end",), "1"))
    rules = book.rules()
    rng = random.Random(15)
    now = int(time.time() * 1000)
    base, step = (now - 10_000 * 1000, 1000) if stamps == "ordinary" else (now + 86_400_000, 200)
    batches = []
    for b in range(200):
        batch = []
        for i in range(50):
            n = b * 50 + i
            batch.append(
                Event(
                    rng.choice(["step.failed", "step.done", "step.done"]),
                    lead_id=f"lead-{n}",
                    flow_id="flow",
                    id=new_event_id(),
                    entity_id=f"svc-{rng.randrange(5)}",
                    timestamp=datetime.fromtimestamp((base + n * step) / 1000, UTC),
                )
            )
        batches.append(batch)
    confirmed: list[int] = []
    server = start(data, monkeypatch)

    def produce() -> None:
        with Client(server.address, timeout=5) as client:
            for k, batch in enumerate(batches):
                try:
                    client.append(batch)
                except LeadTrailError:
                    return
                confirmed.append(k)
                time.sleep(0.005)  # a stream, not one burst: the kill falls in the middle

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(random.uniform(0.3, 1.2))  # a moment of its own each run
    server.child.proc.kill()
    producer.join(30)
    assert died(server) == -9
    server = start(data, monkeypatch)
    try:
        with Client(server.address) as client:
            for batch in batches[len(confirmed) :]:
                client.append(batch)  # a batch that was durable before the kill is a duplicate
            client.append(
                Event(
                    "test.end",
                    lead_id="end",
                    flow_id="flow",
                    timestamp=datetime.fromtimestamp(base / 1000, UTC),
                )
            )
            found = wait_for(client, lambda f: any(e.details["rule"] == "end" for e in f))
            logged = sorted(client.query(), key=lambda e: e.position)
    finally:
        assert server.stop() == 0, server.output
    replayed = Evaluator(rules).handle([_stored(e) for e in logged if e.flow_id != "alerts"], 0)
    expected = [(e.type, e.rule.name, e.group, e.position) for e in replayed]
    actual = [(e.type, e.details["rule"], e.entity_id, e.details["position"]) for e in found]
    assert len(expected) > 3
    print(f"confirmed {len(confirmed)} of {len(batches)} batches before the kill; {len(expected)} alerts")
    assert actual == expected


def _stored(e: Event) -> StoredEvent:
    assert e.timestamp is not None and e.recorded_at is not None
    return StoredEvent(
        type=e.type,
        lead_id=e.lead_id,
        flow_id=e.flow_id,
        id=e.id,
        timestamp_ms=round(e.timestamp.timestamp() * 1000),
        entity_id=e.entity_id,
        outcome=int(e.outcome),  # type: ignore[arg-type]
        account_id=e.account_id,
        position=e.position,
        recorded_at_ms=round(e.recorded_at.timestamp() * 1000),
    )
