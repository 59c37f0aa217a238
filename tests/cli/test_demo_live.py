"""`leadtrail demo --live` against a real server: the rate, the incidents, the seed."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from leadtrail.client import Client, Event, Outcome
from leadtrail.server.simulation import LiveTraffic

if TYPE_CHECKING:
    from conftest import CLI, Run

server_process = sys.modules["server_process"]  # loaded by conftest.py from tests/server_process.py

RATE, DURATION, EVERY, SEED = 200, 9, 3, 11
INCIDENT = re.compile(r"incident started: (\S+) .*\((\w+)\)")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    process = server_process.ServerProcess(tmp_path / "data", "--http", "off").start()
    yield process.address
    assert process.stop() == 0


def _stored(address: str) -> list[Event]:
    with Client(address) as client:
        return sorted(client.query(page_size=1000), key=lambda e: e.position)


def _demo(cli: CLI, address: str, *args: str) -> Run:
    run = cli("demo", "--live", "--server", address, *args, timeout=180)
    assert run.status == 0, run
    assert "Traceback" not in run.stderr
    return run


def test_demo_live_appends_rate_times_duration_events_with_incidents(cli: CLI, server: str) -> None:
    run = _demo(
        cli, server, "--rate", str(RATE), "--duration", str(DURATION), "--incident-every", str(EVERY),
        "--seed", str(SEED),
    )  # fmt: skip
    events = _stored(server)
    # Exactly rate x duration are sent (a slow server makes the run longer, not smaller).
    assert 0.9 * RATE * DURATION <= len(events) <= 1.1 * RATE * DURATION
    assert len(events) == RATE * DURATION
    assert f"demo: live: {len(events)} events to {server}" in run.stdout

    started = dict(INCIDENT.findall(run.stderr))
    assert set(started) == {"buyer-outage", "slow-enhancement", "bad-source"}, run.stderr
    assert run.stderr.count("incident ended") == 3

    # The buyer outage: while it lasts, the buyer fails every delivery.
    buyer = started["buyer-outage"]
    hit = [e.position for e in events if e.details.get("incident") == "buyer-outage"]
    assert hit, "no delivery reached the failing buyer"
    during = [e for e in events if hit[0] <= e.position <= hit[-1] and e.entity_id == buyer]
    deliveries = [e for e in during if e.type.startswith("recipient.")]
    assert deliveries and {e.outcome for e in deliveries} <= {Outcome.FAILURE, Outcome.ERROR}
    assert all(e.price is None for e in deliveries)
    # Before it the same buyer took leads.
    assert any(e.entity_id == buyer and e.type == "recipient.delivered" for e in events[: hit[0]])

    service = started["slow-enhancement"]
    slowed = [e for e in events if e.details.get("incident") == "slow-enhancement"]
    assert slowed and {e.entity_id for e in slowed} == {service}

    source = started["bad-source"]
    rejected = [
        e for e in events if e.details.get("incident") == "bad-source" and e.type == "source.rejected"
    ]
    assert rejected and {e.entity_id for e in rejected} == {source}
    assert all(e.outcome == Outcome.FAILURE for e in rejected)


def test_demo_live_is_the_same_traffic_for_the_same_seed(cli: CLI, server: str) -> None:
    args = ("--rate", "100", "--duration", "3", "--incident-every", "2", "--seed", "5")
    _demo(cli, server, *args)
    _demo(cli, server, *args)
    events = _stored(server)
    assert len(events) == 600

    def shape(e: Event) -> tuple[object, ...]:
        return (e.type, e.lead_id, e.flow_id, e.entity_id, e.outcome, e.price, e.duration_ms, e.details)

    # The same events in the same order; only their times (and so their ids) differ.
    assert [shape(e) for e in events[:300]] == [shape(e) for e in events[300:]]
    assert {e.id for e in events[:300]}.isdisjoint(e.id for e in events[300:])
    # And what was sent is what the simulation makes of the seed.
    traffic = LiveTraffic(seed=5, rate=100, incident_every_s=2)
    expected = [item for item in traffic.take(300) if isinstance(item, dict)]
    assert [(e.type, e.lead_id, e.entity_id) for e in events[:300]] == [
        (x["type"], x["lead_id"], x["entity_id"]) for x in expected
    ]


def test_demo_live_flags_need_live(cli: CLI) -> None:
    run = cli("demo", "--rate", "10")
    assert run.status == 2 and "--rate: only with --live" in run.stderr


def test_demo_live_to_an_unreachable_server_is_one_line_and_exit_1(cli: CLI) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    line = cli("demo", "--live", "--duration", "1", "--server", address, timeout=60).error_line()
    assert address in line and "unavailable" in line
