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
from leadtrail.client import Client, Event

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
    for args in (
        ("sinks", "set", "x"),
        ("sinks", "set", "x", "--webhook", "http://h/", "--files", "d"),
        ("sinks", "set", "x", "--webhook", "http://h/", "--stream", "S"),
        ("sinks", "set", "x", "--nats", "nats://h:4222"),
    ):
        done = cli(*args, *remote(keyed))
        assert done.status == 2, (args, done)
        assert "Traceback" not in done.stderr
    assert cli("sinks", "set", "x", "--webhook", "http://h/", "--from-start", "--after", "3").status == 2
    assert cli("sinks", "list", "--format", "json", *remote(keyed)).stdout.strip() == "[]"
