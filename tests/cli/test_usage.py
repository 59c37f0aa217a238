"""Usage errors exit 2 with argparse's message; an unreachable server is one line and exit 1."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import CLI


def _closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_names_every_command_of_the_contract(cli: CLI) -> None:
    run = cli("--help")
    assert run.status == 0
    for name in (
        "serve", "append", "get", "timeline", "query", "tail", "export", "stats",
        "verify", "reindex", "compact", "retention", "dump", "demo",
    ):  # fmt: skip
        assert name in run.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["no-such-command"],
        ["get"],
        ["append", "--batch", "1001"],
        ["append", "--batch", "0"],
        ["query", "--format", "xml"],
        ["query", "--limit", "-1"],
        ["tail", "--from-start", "--after", "3"],
        ["export", "--format", "csv"],
        ["retention", "set", "--account", "acme"],
        ["dump", "--from", "zero"],
    ],
)
def test_malformed_command_lines_exit_2(cli: CLI, args: list[str]) -> None:
    run = cli(*args)
    assert run.status == 2, run
    assert "usage:" in run.stderr


def test_a_bad_time_in_a_filter_is_a_usage_error(cli: CLI) -> None:
    run = cli("query", "--since", "yesterday-ish", "--server", f"127.0.0.1:{_closed_port()}")
    assert run.status == 2, run
    assert "yesterday-ish" in run.stderr


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["query", "--since", "yesterday-ish"], "query"),
        (["query", "--since", "2024-02-01", "--until", "2024-01-01"], "query"),
        (["tail", "--outcome", "MAYBE"], "tail"),
        (["retention", "apply", "--now", "soon"], "retention apply"),
        (["export", "--output", "-", "--until", "later"], "export"),
    ],
)
def test_an_error_in_a_commands_arguments_prints_that_commands_usage(
    cli: CLI, args: list[str], command: str
) -> None:
    run = cli(*args, "--server", f"127.0.0.1:{_closed_port()}")
    assert run.status == 2, run
    assert run.stderr.startswith(f"usage: leadtrail {command} "), run.stderr
    assert f"leadtrail {command}: error: " in run.stderr


def test_a_bad_listen_address_is_a_usage_error(cli: CLI, tmp_path: Path) -> None:
    run = cli("serve", "--data", str(tmp_path), "--listen", "localhost")
    assert run.status == 2, run
    assert "HOST:PORT" in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["get", "evt_01HMZ0000000000000000000AA"],
        ["timeline", "lead_1"],
        ["query"],
        ["stats"],
        ["retention", "apply"],
        ["export", "--output", "-"],
        ["tail", "--from-start"],
        ["demo", "--leads", "1"],
    ],
)
def test_an_unreachable_server_is_one_line_and_exit_1(cli: CLI, args: list[str]) -> None:
    server = f"127.0.0.1:{_closed_port()}"
    line = cli(*args, "--server", server, timeout=30).error_line()
    assert server in line


def test_appending_to_an_unreachable_server_is_one_line_and_exit_1(cli: CLI) -> None:
    event = '{"type": "source.submitted", "lead_id": "lead_1", "flow_id": "flow_1"}\n'
    line = cli("append", "--server", f"127.0.0.1:{_closed_port()}", input=event).error_line()
    assert "unavailable" in line


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "line 2: not valid JSON"),
        ('{"type": "source.submitted", "flow_id": "f"}', "line 2: lead_id: required"),
        ('{"type": "x.y", "lead_id": "l", "flow_id": "f", "price": 25.5}', "line 2: price 25.5"),
        ('{"type": "x.y", "lead_id": "l", "flow_id": "f", "outcome": "MAYBE"}', "line 2: outcome 'MAYBE'"),
        (
            '{"type": "x.y", "lead_id": "l", "flow_id": "f", "colour": "red"}',
            "line 2: unknown field 'colour'",
        ),
        ('{"type": "x.y", "lead_id": "l", "flow_id": "f", "timestamp": "soon"}', "line 2: timestamp 'soon'"),
        ("[1, 2]", "line 2: expected a JSON object"),
    ],
)
def test_a_bad_line_in_a_file_is_named_and_nothing_is_sent(
    cli: CLI, tmp_path: Path, line: str, problem: str
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "source.submitted", "lead_id": "lead_1", "flow_id": "flow_1"}\n' + line + "\n"
    )
    # The server is unreachable: the file is refused before any connection is tried.
    error = cli("append", str(events), "--server", f"127.0.0.1:{_closed_port()}").error_line()
    assert problem in error
    assert "nothing appended" in error
