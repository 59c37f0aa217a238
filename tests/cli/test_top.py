"""`leadtrail top` against a real server: what `--once --json` reports is exactly what was appended."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from leadtrail.client import Client, Event, Outcome, new_event_id

if TYPE_CHECKING:
    from conftest import CLI

server_process = sys.modules["server_process"]  # loaded by conftest.py from tests/server_process.py

S, F, E = Outcome.SUCCESS, Outcome.FAILURE, Outcome.ERROR
# (type, entity, outcome, duration_ms, price)
KNOWN: list[tuple[str, str, Outcome, int, str | None]] = [
    ("recipient.delivered", "rcp_a", S, 100, "10.50"),
    ("recipient.delivered", "rcp_a", S, 200, "10.50"),
    ("recipient.delivered", "rcp_a", S, 300, "10.50"),
    ("recipient.failed", "rcp_a", F, 50, None),
    ("recipient.error", "rcp_b", E, 10_000, None),
    ("recipient.delivered", "rcp_b", S, 400, "20.00"),
    ("source.accepted", "src_x", S, 0, "-3.25"),
    ("source.accepted", "src_x", S, 0, "-3.25"),
    *[("enhancement.success", "svc_y", S, ms, None) for ms in range(1, 21)],
    # The verdict lasts the whole journey: not a step, never among the slowest.
    ("flow.completed", "flow_1", S, 99_999, None),
]


def _events() -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(
            type=kind,
            lead_id=f"lead_top_{i // 4}",
            flow_id="flow_1",
            id=new_event_id(),
            timestamp=now,
            entity_id=entity,
            outcome=outcome,
            duration_ms=ms,
            price=Decimal(price) if price else None,
        )
        for i, (kind, entity, outcome, ms, price) in enumerate(KNOWN)
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    process = server_process.ServerProcess(tmp_path / "data", "--http", "off").start()
    yield process.address
    assert process.stop() == 0


def _snapshot(cli: CLI, address: str, *args: str) -> dict[str, Any]:
    run = cli("top", "--once", "--json", "--server", address, *args)
    assert run.status == 0, run
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    snapshot: dict[str, Any] = json.loads(lines[0])
    return snapshot


def test_top_once_json_reflects_the_appended_events_exactly(cli: CLI, server: str) -> None:
    with Client(server) as client:
        results = client.append(_events())
    snap = _snapshot(cli, server, "--window", "300")

    assert snap["server"] == server
    assert snap["window_s"] == 300
    assert snap["position"] == max(r.position for r in results)
    events = snap["events"]
    assert events["total"] == len(KNOWN)
    counts = {(row["type"], row["outcome"]): row["count"] for row in events["by_type_outcome"]}
    assert counts == {
        ("recipient.delivered", "SUCCESS"): 4,
        ("recipient.failed", "FAILURE"): 1,
        ("recipient.error", "ERROR"): 1,
        ("source.accepted", "SUCCESS"): 2,
        ("enhancement.success", "SUCCESS"): 20,
        ("flow.completed", "SUCCESS"): 1,
    }
    rates = {(row["type"], row["outcome"]): row["per_second"] for row in events["by_type_outcome"]}
    assert rates[("enhancement.success", "SUCCESS")] == pytest.approx(20 / 300, abs=0.001)
    assert events["per_second"] == pytest.approx(len(KNOWN) / 300, abs=0.001)

    assert snap["recipients"] == [
        {"entity_id": "rcp_b", "failed": 1, "total": 2, "failure_share": 0.5},
        {"entity_id": "rcp_a", "failed": 1, "total": 4, "failure_share": 0.25},
    ]
    assert snap["money"] == {
        "window_s": 60,
        "revenue_per_minute": "51.50",
        "cost_per_minute": "6.50",
        "margin_per_minute": "45.00",
    }
    # Nearest-rank p95: rcp_b of (400, 10000) is 10000; rcp_a of (50, 100, 200, 300) is 300;
    # svc_y of 1..20 is the 19th value.
    assert snap["slowest"] == [
        {"entity_id": "rcp_b", "p95_ms": 10_000, "count": 2},
        {"entity_id": "rcp_a", "p95_ms": 300, "count": 4},
        {"entity_id": "svc_y", "p95_ms": 19, "count": 20},
        {"entity_id": "src_x", "p95_ms": 0, "count": 2},
    ]
    assert snap["alerts"] == []


def test_top_counts_only_the_window_of_recorded_time(cli: CLI, server: str) -> None:
    with Client(server) as client:
        client.append(_events()[:4])
        time.sleep(2.2)
        client.append(_events()[4:6])
    snap = _snapshot(cli, server, "--window", "1")
    # Only the last two events (recorded a moment ago) are in a one-second window, unless the
    # machine is so slow that even they fell out of it: never the first four.
    assert snap["events"]["total"] in (0, 2)
    assert snap["position"] in (0, 6)


def test_top_once_renders_the_view(cli: CLI, server: str) -> None:
    with Client(server) as client:
        client.append(_events())
    run = cli("top", "--once", "--server", server)
    assert run.status == 0, run
    for title in (
        "events per second by type and outcome",
        "failure share per recipient",
        "money over the last 60 s",
        "slowest steps (p95 duration_ms)",
        "alerts firing now",
    ):
        assert title in run.stdout, run.stdout
    assert "rcp_b" in run.stdout and "51.50" in run.stdout and "10,000" in run.stdout
    assert "Traceback" not in run.stderr


def test_top_on_an_empty_server_shows_nothing_counted(cli: CLI, server: str) -> None:
    snap = _snapshot(cli, server)
    assert snap["events"] == {"total": 0, "per_second": 0.0, "by_type_outcome": []}
    assert snap["recipients"] == [] and snap["slowest"] == []
    assert snap["money"]["revenue_per_minute"] == "0" and snap["money"]["cost_per_minute"] == "0"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("args", [("--once", "--json"), ("--once",), ()])
def test_top_exits_1_with_one_line_when_the_server_is_unreachable(cli: CLI, args: tuple[str, ...]) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    run = cli("top", "--server", address, *args, timeout=60)
    line = run.error_line()
    assert address in line and "unavailable" in line
    assert run.stdout == ""


def test_top_rejects_a_window_of_zero(cli: CLI) -> None:
    run = cli("top", "--window", "0")
    assert run.status == 2 and "--window" in run.stderr


def test_top_shows_the_alerts_firing_now(cli: CLI, server: str) -> None:
    rule = cli(
        "alerts", "set", "buyer-errors", "--kind", "count", "--type", "recipient.error",
        "--threshold", "2", "--window", "600", "--group-by", "entity", "--server", server,
    )  # fmt: skip
    assert rule.status == 0, rule
    with Client(server) as client:
        now = datetime.now(UTC)
        client.append(
            [
                Event("recipient.error", lead_id=f"lead_alert_{i}", flow_id="flow_1", id=new_event_id(),
                      timestamp=now, entity_id="rcp_down", outcome=E)
                for i in range(2)
            ]
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        snap = _snapshot(cli, server)
        if snap["alerts"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert snap["alerts_error"] is None
    assert [(a["rule"], a["group"], Decimal(a["value"])) for a in snap["alerts"]] == [
        ("buyer-errors", "rcp_down", Decimal(2))
    ]
    assert snap["alerts"][0]["fired_at"] and snap["alerts"][0]["event_id"].startswith("evt_")


def test_top_follows_live_events_and_resumes_after_a_server_restart(cli: CLI, tmp_path: Path) -> None:
    process = server_process.ServerProcess(tmp_path / "data", "--http", "off").start()
    top = cli.start("top", "--json", "--interval", "0.2", "--window", "600", "--server", process.address)
    try:

        def wait_for_position(position: int) -> dict[str, Any]:
            deadline = time.monotonic() + 60
            while True:
                snap: dict[str, Any] = json.loads(top.stdout.next(max(0.1, deadline - time.monotonic())))
                if snap["position"] >= position:
                    return snap

        assert json.loads(top.stdout.next())["position"] == 0
        with Client(process.address) as client:
            client.append(_events()[:6])
        assert wait_for_position(6)["events"]["total"] == 6
        process.restart()
        with Client(process.address) as client:
            client.append(_events()[6:])
        snap = wait_for_position(len(KNOWN))
        # Resumed after what it had counted: every event once.
        assert snap["events"]["total"] == len(KNOWN)
        assert snap["money"]["revenue_per_minute"] == "51.50"
        top.signal(signal.SIGINT)
        assert top.wait() == 0
    finally:
        top.close()
        process.stop()
