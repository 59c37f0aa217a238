"""The SDK's export job calls against a real server, the blocking and the asyncio client alike:
jobs set, read back and deleted, run now, their files listed and downloaded; refusals as the
SDK's errors; the value types' checks."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from leadtrail.client import (
    AsyncClient,
    Client,
    Event,
    EventFilter,
    ExportJob,
    InvalidArgumentError,
    NotFoundError,
)

server_process = sys.modules["server_process"]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("sdk-exports") / "data"
    process = server_process.ServerProcess(data, "--http", "off").start()
    yield process.address
    assert process.stop() == 0


def test_a_job_is_set_run_downloaded_and_deleted(address: str, tmp_path: Path) -> None:
    with Client(address, timeout=10) as client:
        ids = [
            r.id for r in client.append([Event("sdk.row", lead_id=f"l{i}", flow_id="f") for i in range(3)])
        ]
        stored = client.set_export_job(
            "sdk-daily", format="jsonl", every_s=3600, keep_days=3, filter=EventFilter(types="sdk.row")
        )
        assert stored == ExportJob(
            "sdk-daily",
            format="jsonl",
            every_s=3600,
            keep_days=3,
            lookback_s=3600,
            filter=EventFilter(types="sdk.row"),
            set_at=stored.set_at,
            next_run_at=stored.next_run_at,
        )
        assert stored.set_at is not None and stored.next_run_at is not None
        assert [j.name for j in client.list_export_jobs()] == ["sdk-daily"]

        made = client.run_export_job("sdk-daily")
        assert made.rows == 3 and made.name.endswith(".jsonl")
        assert client.list_export_files("sdk-daily") == [made]
        data = client.download_export_file("sdk-daily", made.name)
        assert len(data) == made.size and hashlib.sha256(data).hexdigest() == made.sha256
        assert sorted(orjson.loads(line)["id"] for line in data.splitlines()) == sorted(ids)
        target = tmp_path / "copy.jsonl"
        assert client.download_export_file_to("sdk-daily", made.name, target) == made.size
        assert target.read_bytes() == data

        with pytest.raises(NotFoundError):
            client.download_export_file("sdk-daily", "other.jsonl")
        client.delete_export_job("sdk-daily")
        with pytest.raises(NotFoundError):
            client.delete_export_job("sdk-daily")


def test_the_asyncio_client_does_the_same(address: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(address, timeout=10) as client:
            await client.set_export_job(
                ExportJob("sdk-async", format="csv", fields=("id", "type"), every_s=60, keep_days=1)
            )
            made = await client.run_export_job("sdk-async")
            assert made.name.endswith(".csv")
            assert await client.list_export_files("sdk-async") == [made]
            data = await client.download_export_file("sdk-async", made.name)
            assert data.splitlines()[0] == b"id,type" and len(data) == made.size
            assert [j.name for j in await client.list_export_jobs()] == ["sdk-async"]
            await client.delete_export_job("sdk-async")

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_bad_job_is_an_invalid_argument_naming_the_field(address: str) -> None:
    with Client(address, timeout=10) as client, pytest.raises(InvalidArgumentError) as info:
        client.set_export_job("sdk-bad", every_s=10)
    assert "every_s" in str(info.value)


def test_an_export_job_checks_its_format() -> None:
    with pytest.raises(ValueError, match="format"):
        ExportJob("x", format="xml")
