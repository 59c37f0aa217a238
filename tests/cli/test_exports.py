"""``leadtrail exports set|list|rm|run|files|download`` against a spawned server with API keys,
as an operator runs them: a job set, run, its file listed and downloaded (by an analyst when
masked), refusals as one line (status 1) and usage errors (status 2)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from leadtrail.client import Client, Event

server_process = sys.modules["server_process"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data: Path = tmp_path_factory.mktemp("exports-cli") / "data"
    admin = server_process.create_key(data, "acme", "admin")
    analyst = server_process.create_key(data, "acme", "analyst")
    process = server_process.ServerProcess(data, "--http", "off").start()
    yield {"address": process.address, "admin": admin, "analyst": analyst, "data": data}
    assert process.stop() == 0


def remote(keyed: dict[str, Any], role: str = "admin") -> list[str]:
    return ["--server", keyed["address"], "--api-key", keyed[role]]


def test_the_help_names_the_actions_and_flags(cli: Any) -> None:
    done = cli("exports", "--help")
    assert done.status == 0
    for action in ("set", "list", "rm", "run", "files", "download"):
        assert action in done.stdout
    done = cli("exports", "set", "--help")
    for flag in (
        "--format",
        "--every",
        "--lookback",
        "--keep-days",
        "--fields",
        "--masked",
        "--type",
        "--server",
    ):
        assert flag in done.stdout, flag


def test_a_job_is_set_run_listed_downloaded_and_removed(
    cli: Any, keyed: dict[str, Any], tmp_path: Path
) -> None:
    with Client(keyed["address"], api_key=keyed["admin"], timeout=10) as client:
        ids = [
            r.id
            for r in client.append(
                [
                    Event("cli.row", lead_id=f"l{i}", flow_id="f", lead={"email": "dana@example.com"})
                    for i in range(4)
                ]
            )
        ]
    done = cli(
        "exports",
        "set",
        "nightly",
        "--every",
        "1d",
        "--keep-days",
        "30",
        "--type",
        "cli.row",
        "--masked",
        *remote(keyed),
    )
    assert done.status == 0, done.stderr
    assert done.stdout.startswith(
        "export job nightly set: jsonl of cli.row in the last 86400 s, every 86400 s"
    )
    assert "kept 30 days, masked" in done.stdout

    listed = cli("exports", "list", "--format", "json", *remote(keyed))
    assert listed.status == 0, listed.stderr
    (job,) = json.loads(listed.stdout)
    assert (job["name"], job["every_s"], job["keep_days"], job["masked"], job["filter"]["types"]) == (
        "nightly",
        86400,
        30,
        True,
        ["cli.row"],
    )
    table = cli("exports", "list", *remote(keyed))
    assert table.stdout.splitlines()[0].split() == ["NAME", "JOB", "LAST", "RUN", "NEXT", "RUN"]

    ran = cli("exports", "run", "nightly", *remote(keyed))
    assert ran.status == 0, ran.stderr
    assert ran.stdout.startswith("export job nightly wrote nightly-") and ": 4 events" in ran.stdout

    files = cli("exports", "files", "nightly", "--format", "json", *remote(keyed, "analyst"))
    assert files.status == 0, files.stderr
    (made,) = json.loads(files.stdout)
    assert made["rows"] == 4

    target = tmp_path / "nightly.jsonl"
    got = cli("exports", "download", "nightly", made["name"], "-o", str(target), *remote(keyed, "analyst"))
    assert got.status == 0, got.stderr
    data = target.read_bytes()
    assert hashlib.sha256(data).hexdigest() == made["sha256"] and len(data) == made["bytes"]
    assert sorted(orjson.loads(line)["id"] for line in data.splitlines()) == sorted(ids)
    assert b"dana@example.com" not in data  # masked: what the analyst key may see
    assert not list(tmp_path.glob("*.partial"))

    assert cli("exports", "rm", "nightly", *remote(keyed)).status == 0
    missing = cli("exports", "files", "nightly", *remote(keyed))
    assert "not found" in missing.error_line()


def test_refusals_are_one_line_and_usage_errors_status_2(cli: Any, keyed: dict[str, Any]) -> None:
    too_often = cli("exports", "set", "hourly", "--every", "30s", *remote(keyed))
    assert "every_s" in too_often.error_line()
    assert cli("exports", "set", "hourly", "--every", "soon", *remote(keyed)).status == 2
    assert cli("exports", "set", "hourly", *remote(keyed)).status == 2  # --every is required
    denied = cli("exports", "set", "hourly", "--every", "1h", *remote(keyed, "analyst"))
    assert "SetExportJob" in denied.error_line()
