"""``leadtrail sinks set|list|rm|status`` against a spawned server with API keys and a real
HTTP receiver, as an operator runs them: a webhook sink delivering, its secret never shown,
status of one and of all, refusals as one line (status 1) and usage errors (status 2)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from leadtrail.client import Client, Event, EventFilter, FilesTarget, Sink
from leadtrail.server.cli import build_parser
from leadtrail.server.cli_errors import UsageError
from leadtrail.server.cli_sinks import sink_of

server_process = sys.modules["server_process"]
webhook_receiver = sys.modules["webhook_receiver"]
SECRET = "sink-hmac-key-never-printed"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data: Path = tmp_path_factory.mktemp("sinks-cli") / "data"
    admin = server_process.create_key(data, "acme", "admin")
    reader = server_process.create_key(data, "acme", "reader")
    process = server_process.ServerProcess(data, "--http", "off").start()
    yield {"address": process.address, "admin": admin, "reader": reader, "data": data}
    assert process.stop() == 0


def remote(keyed: dict[str, Any], role: str = "admin") -> list[str]:
    return ["--server", keyed["address"], "--api-key", keyed[role]]


def test_the_help_names_the_actions_and_the_flags_of_the_api(cli: Any) -> None:
    done = cli("sinks", "--help")
    assert done.status == 0
    for action in ("set", "list", "rm", "status"):
        assert action in done.stdout
    done = cli("sinks", "set", "--help")
    for flag in (
        "--nats",
        "--stream",
        "--subject-prefix",
        "--replicas",
        "--duplicate-window",
        "--webhook",
        "--secret",
        "--batch-size",
        "--max-wait",
        "--files",
        "--file-format",
        "--rotate-events",
        "--rotate-seconds",
        "--field",
        "--type",
        "--masked",
        "--from-start",
        "--after",
        "--server",
        "--api-key",
    ):
        assert flag in done.stdout, flag


def test_a_webhook_sink_set_delivers_and_shows_its_status(cli: Any, keyed: dict[str, Any]) -> None:
    with webhook_receiver.Receiver(lambda index, request: 200) as receiver:
        url = receiver.url("/crm/token-in-path")
        done = cli(
            "sinks", "set", "crm", "--webhook", url, "--secret", SECRET, "--batch-size", "5",
            "--max-wait", "100", "--type", "source.*", *remote(keyed),
        )  # fmt: skip
        assert done.status == 0, done.stderr
        assert done.stdout.startswith("sink crm set: source.* to webhook http://127.0.0.1:")
        assert "token-in-path" not in done.stdout and SECRET not in done.stdout
        with Client(keyed["address"], api_key=keyed["admin"]) as client:
            ids = [r.id for r in client.append([Event("source.submitted", f"l-{i}", "f") for i in range(6)])]
            client.append([Event("buyer.accepted", "l-x", "f")])
        seen = receiver.wait_for(lambda r: sum(len(orjson.loads(x.body)) for x in r) >= 6, timeout=20)
        assert [e["id"] for r in seen for e in orjson.loads(r.body)] == ids
        deadline = time.monotonic() + 20
        while True:
            done = cli("sinks", "status", "crm", "--format", "json", *remote(keyed, "reader"))
            assert done.status == 0, done.stderr
            status = json.loads(done.stdout)
            if status["delivered_total"] == 6 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status["state"] == "running" and status["delivered_total"] == 6 and status["last_error"] == ""
        done = cli("sinks", "status", *remote(keyed))
        assert done.status == 0 and done.stdout.splitlines()[0].split()[:3] == ["NAME", "STATE", "DELIVERED"]
        assert "crm" in done.stdout and "running" in done.stdout
        listed = cli("sinks", "list", "--format", "json", *remote(keyed))
        [sink] = json.loads(listed.stdout)
        assert sink["webhook"]["secret_set"] is True and SECRET not in listed.stdout
        assert sink["filter"]["types"] == ["source.*"]
        table = cli("sinks", "list", *remote(keyed))
        assert "crm" in table.stdout and "token-in-path" not in table.stdout
        assert cli("sinks", "rm", "crm", *remote(keyed)).stdout == "sink crm deleted\n"
        assert cli("sinks", "list", *remote(keyed)).stderr == "no sinks\n"


def test_refusals_are_one_line_and_usage_errors_status_2(cli: Any, keyed: dict[str, Any]) -> None:
    line = cli(
        "sinks", "set", "big", "--webhook", "http://127.0.0.1:9/", "--batch-size", "5000", *remote(keyed)
    )
    assert "webhook.batch_size: 5000 is over the limit of 1,000" in line.error_line()
    line = cli("sinks", "set", "up", "--files", "../x", *remote(keyed))
    assert "files.directory" in line.error_line()
    line = cli("sinks", "set", "n", "--nats", "http://127.0.0.1:4222", "--stream", "S", *remote(keyed))
    assert "nats.servers[0]" in line.error_line()
    line = cli("sinks", "rm", "none", *remote(keyed))
    assert "none" in line.error_line()
    line = cli("sinks", "list", *remote(keyed, "reader"))
    assert "ListSinks" in line.error_line()
    assert cli("sinks", "list", "--format", "json", *remote(keyed)).stdout.strip() == "[]"
    assert cli("sinks", "set", "x", "--webhook", "http://h/", "--from-start", "--after", "3").status == 2


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((), "give one target"),
        (("--webhook", "http://h/", "--files", "d"), "give one target"),
        (("--webhook", "http://h/", "--stream", "S"), "--stream belong to a --nats target, not --webhook"),
        (("--files", "d", "--secret", "s"), "--secret belong to a --webhook target, not --files"),
        (("--nats", "nats://h:4222"), "--nats needs --stream NAME"),
    ],
)
def test_flags_that_do_not_make_one_target_are_usage_errors(args: tuple[str, ...], problem: str) -> None:
    parsed = build_parser().parse_args(["sinks", "set", "x", *args])
    with pytest.raises(UsageError) as info:
        sink_of(parsed)
    assert problem in str(info.value)


def test_flags_make_the_sink_the_api_describes() -> None:
    parsed = build_parser().parse_args(
        ["sinks", "set", "lake", "--files", "lake/pq", "--file-format", "parquet", "--field", "lead.state",
         "--rotate-events", "500", "--type", "recipient.*", "--masked", "--after", "42"]
    )  # fmt: skip
    assert sink_of(parsed) == Sink(
        "lake",
        FilesTarget("lake/pq", "parquet", 500, 0, ("lead.state",)),
        EventFilter(types=("recipient.*",)),
        start=42,
        masked=True,
    )


def test_stats_shows_the_accounts_sinks_to_an_admin(cli: Any, keyed: dict[str, Any]) -> None:
    done = cli("sinks", "set", "stats-hook", "--webhook", "http://127.0.0.1:9/", *remote(keyed))
    assert done.status == 0, done.stderr
    table = cli("stats", *remote(keyed))
    assert table.status == 0, table.stderr
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines() if line.strip()}
    assert rows["SINK"] == ["STATE", "DELIVERED", "TO", "LAG", "DELIVERED"]
    assert rows["stats-hook"][0] in ("running", "retrying")
    shown = json.loads(cli("stats", "--json", *remote(keyed)).stdout)
    assert [s["name"] for s in shown["sinks"]] == ["stats-hook"] and shown["event_count"] >= 0
    assert cli("sinks", "rm", "stats-hook", *remote(keyed)).status == 0
    assert "sinks" not in json.loads(cli("stats", "--json", *remote(keyed)).stdout)
