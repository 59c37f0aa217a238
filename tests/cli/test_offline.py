"""The offline commands work on a store directory, with no server running."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from leadtrail.storage import Event, EventLog, Options, Outcome, RetentionPolicy

if TYPE_CHECKING:
    from conftest import CLI

DAY_MS = 86_400_000
NOW_MS = 1_705_294_800_000


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Ten events of two leads; the first five were recorded 40 days ago."""
    path = tmp_path / "data"
    clock = [NOW_MS - 40 * DAY_MS]
    with EventLog.open(path, Options(clock_ms=lambda: clock[0])) as log:
        events = [
            Event(
                type="source.submitted" if i % 5 == 0 else "recipient.delivered",
                lead_id=f"lead_{i // 5}",
                flow_id="flow_1",
                timestamp_ms=NOW_MS - (40 * DAY_MS if i < 5 else 0) + i,
                outcome=Outcome.UNSPECIFIED if i % 5 == 0 else Outcome.SUCCESS,
                price="" if i % 5 == 0 else "25.00",
                lead={"email": f"person{i // 5}@example.com", "score": i},
            )
            for i in range(10)
        ]
        log.append(events[:5])
        clock[0] = NOW_MS
        log.append(events[5:])
        log.set_retention_policy(RetentionPolicy(account_id="default", max_age_days=30))
    return path


def test_verify_counts_the_events_of_a_healthy_store(cli: CLI, store: Path) -> None:
    run = cli("verify", "--data", str(store))
    assert run.status == 0, run
    assert run.stdout.strip().endswith("10 events checked, 0 problems")
    assert run.stderr == ""  # no progress line: stderr is not a terminal


def test_verify_reports_a_damaged_log_and_exits_1(cli: CLI, store: Path) -> None:
    segment = next((store / "log").glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    run = cli("verify", "--data", str(store))
    assert run.status == 1
    assert "Traceback" not in run.stderr


def test_reindex_rebuilds_every_event(cli: CLI, store: Path) -> None:
    run = cli("reindex", "--data", str(store))
    assert (run.status, run.stdout.strip()) == (0, "reindexed 10 events")


def test_stats_with_data_reads_the_store_offline(cli: CLI, store: Path) -> None:
    run = cli("stats", "--data", str(store), "--json")
    assert run.status == 0, run
    stats = json.loads(run.stdout)
    assert stats["event_count"] == 10
    assert stats["last_position"] == 10


def test_stats_is_a_readable_table_with_the_events_of_each_account(cli: CLI, store: Path) -> None:
    with EventLog.open(store) as log:
        log.append([Event(type="source.submitted", lead_id="l", flow_id="f", account_id="acme")])
    run = cli("stats", "--data", str(store))
    assert run.status == 0, run
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines() if line.strip()}
    assert rows["events"][:3] == ["11", "last", "position"]
    assert rows["writable"] == ["yes"]
    assert rows["ACCOUNT"] == ["EVENTS"]
    assert rows["default"] == ["10"] and rows["acme"] == ["1"]
    assert json.loads(cli("stats", "--data", str(store), "--json").stdout)["account_events"] == {
        "default": 10,
        "acme": 1,
    }


def test_dump_prints_stored_records_from_a_position(cli: CLI, store: Path) -> None:
    run = cli("dump", "--data", str(store), "--from", "4", "--limit", "3")
    assert run.status == 0, run
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["position"] for r in records] == [4, 5, 6]
    assert records[2]["type"] == "source.submitted"
    assert records[2]["lead"]["email"] == "person1@example.com"
    assert records[0]["outcome"] == "SUCCESS"


def test_compact_removes_what_retention_expired(cli: CLI, store: Path) -> None:
    run = cli("compact", "--data", str(store), "--now", str(NOW_MS + DAY_MS))
    assert run.status == 0, run
    assert json.loads(run.stdout)["events_removed"] == 5
    left = cli("dump", "--data", str(store))
    assert [json.loads(line)["lead_id"] for line in left.stdout.splitlines()] == ["lead_1"] * 5


@pytest.mark.parametrize("command", ["verify", "reindex", "dump", "compact"])
def test_a_missing_store_is_one_line_and_exit_1(cli: CLI, tmp_path: Path, command: str) -> None:
    line = cli(command, "--data", str(tmp_path / "nowhere")).error_line()
    assert "no LeadTrail store" in line
    assert not (tmp_path / "nowhere").exists()


def test_erase_offline_erases_the_lead_and_records_who_did(cli: CLI, store: Path) -> None:
    run = cli("erase", "--data", str(store), "--lead", "lead_1", "--reason", "DSR-2024-17")
    assert run.status == 0, run
    assert run.stdout.startswith("erased lead lead_1: 5 events changed, ")
    run = cli("dump", "--data", str(store))
    records = [json.loads(line) for line in run.stdout.splitlines()]
    mine = [r for r in records if r["lead_id"] == "lead_1"]
    assert [r["lead"]["email"] for r in mine[:5]] == ["[erased]"] * 5
    assert [r["lead"]["score"] for r in mine[:5]] == [5, 6, 7, 8, 9]
    assert mine[5]["type"] == "audit.erased" and mine[5]["reason"] == "DSR-2024-17"
    assert mine[5]["entity_id"].startswith("cli:")
    assert "person1@example.com" not in run.stdout
    assert "person0@example.com" in run.stdout  # the other lead keeps its values


def test_erase_offline_of_an_unknown_lead_or_under_a_hold_is_one_line(cli: CLI, store: Path) -> None:
    assert (
        "lead 'lead_9' has no events" in cli("erase", "--data", str(store), "--lead", "lead_9").error_line()
    )
    with EventLog.open(store) as log:
        log.set_retention_policy(RetentionPolicy(account_id="default", legal_hold=True))
    line = cli("erase", "--data", str(store), "--lead", "lead_1").error_line()
    assert "legal hold" in line
    run = cli("dump", "--data", str(store))
    assert "person1@example.com" in run.stdout


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["verify"], "verifying"),
        (["reindex"], "reindexing"),
        (["compact", "--now", str(NOW_MS + DAY_MS)], "compacting"),
        (["erase", "--lead", "lead_1"], "erasing"),
    ],
)
def test_a_long_offline_command_shows_progress_on_a_terminal_and_nothing_in_a_pipe(
    cli: CLI, store: Path, command: list[str], shown: str
) -> None:
    on_terminal = cli.on_terminal(*command, "--data", str(store))
    assert on_terminal.status == 0, on_terminal
    assert shown in on_terminal.stderr and "segments" in on_terminal.stderr
    in_a_pipe = cli(*command, "--data", str(store))
    assert in_a_pipe.status == 0, in_a_pipe
    assert in_a_pipe.stderr == ""


@pytest.mark.parametrize(
    "command", [["verify"], ["stats"], ["dump"], ["compact"], ["erase", "--lead", "lead_0"]]
)
def test_offline_commands_never_load_the_sdk_or_grpc(store: Path, command: list[str]) -> None:
    """A host with the store but without a working gRPC stack can still check and read it."""
    script = (
        "import sys\n"
        "from leadtrail.server import cli\n"
        f"status = cli.main({[*command, '--data', str(store)]!r})\n"
        "loaded = sorted(m for m in sys.modules if m == 'grpc' or m.startswith('leadtrail.client'))\n"
        "print(status, loaded, file=sys.stderr)\n"
    )
    command_line = [sys.executable, "-c", script]
    done = subprocess.run(command_line, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    assert done.stderr.decode().strip() == "0 []", done.stderr.decode()
