"""A files sink writing Parquet through a real ``leadtrail serve``, killed with SIGKILL while
events stream in and started again: the directory read back with pyarrow holds every
matching event of the store exactly once, in position order, equal to the Parquet export of
the same filter, and no temporary file is left among the files."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from leadtrail.server.sinks.sink import POLICY_ENV
from leadtrail.v1 import (
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    sinks_pb2,
    sinks_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

from .conftest import ServerProcess, lead_event

FAST = "first=0.05,max=0.3,timeout=0.5"
MATCHING = event_pb2.EventFilter(types=["source.*"])
COLUMNS = ["lead.state", "lead.email"]


class Calls:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.sinks = sinks_pb2_grpc.SinkServiceStub(self.channel)
        self.submission = submission_pb2_grpc.SubmissionServiceStub(self.channel)
        self.query = query_pb2_grpc.QueryServiceStub(self.channel)

    def append(self, count: int, start: int) -> int:
        """Append ``count`` events, two in three matching; the number matching."""
        events = [
            lead_event(
                f"lead-{start + i}",
                type="source.submitted" if i % 3 else "buyer.accepted",
                price=f"{start + i}.25",
                lead={"email": f"p{start + i}@example.com", "state": "CA" if i % 2 else "NY"},
            )
            for i in range(count)
        ]
        self.submission.Append(submission_pb2.AppendRequest(events=events), timeout=30)
        return sum(e.type.startswith("source.") for e in events)

    def matching(self) -> list[event_pb2.Event]:
        request = query_pb2.QueryEventsRequest(filter=MATCHING, page_size=1000, include_lead=True)
        return list(self.query.QueryEvents(request, timeout=30).events)

    def exported(self) -> pa.Table:
        request = query_pb2.ExportRequest(
            filter=MATCHING, format=query_pb2.EXPORT_FORMAT_PARQUET, fields=COLUMNS
        )
        return pq.read_table(io.BytesIO(b"".join(c.data for c in self.query.Export(request, timeout=30))))

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[], ServerProcess]]:
    started: list[ServerProcess] = []

    def start_server() -> ServerProcess:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(POLICY_ENV, FAST)
            process = ServerProcess(tmp_path / "data", "--http", "off").start()
        started.append(process)
        return process

    yield start_server
    for process in started:
        process.kill()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return value


def listed(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.parquet")) if directory.is_dir() else []


def rows_in(directory: Path) -> int:
    return sum(pq.read_metadata(path).num_rows for path in listed(directory))


def test_a_parquet_files_sink_survives_kill_9_with_every_matching_event_once(
    start: Callable[[], ServerProcess], tmp_path: Path
) -> None:
    server = start()
    calls = Calls(server.address)
    target = sinks_pb2.FilesTarget(
        directory="lake/events", format=query_pb2.EXPORT_FORMAT_PARQUET, fields=COLUMNS
    )
    target.rotate_events, target.rotate_seconds = 40, 2
    sink = sinks_pb2.Sink(name="warehouse", filter=MATCHING, from_start=True, files=target)
    calls.sinks.SetSink(sink, timeout=30)
    masked_target = sinks_pb2.FilesTarget()
    masked_target.CopyFrom(target)
    masked_target.directory = "lake/masked"
    masked = sinks_pb2.Sink(name="shared", filter=MATCHING, from_start=True, masked=True, files=masked_target)
    calls.sinks.SetSink(masked, timeout=30)
    root = tmp_path / "data" / "sink-files" / "default" / "lake"
    directory = root / "events"

    sent = matching = 0
    while len(listed(directory)) < 3:  # streaming, until files are being completed
        matching += calls.append(30, sent)
        sent += 30
        assert sent < 3000, "the sink completed no files"
    # More on the way as it dies: 20 per 30 sent so far, 10 more now, never a whole file of 40.
    matching += calls.append(15, sent)
    sent += 15
    server.kill()
    calls.close()
    assert rows_in(directory) < matching  # it died with events still to write

    server = start()
    calls = Calls(server.address)
    matching += calls.append(50, sent)
    store = calls.matching()
    assert len(store) == matching
    for each in (directory, root / "masked"):
        wait_for(f"{each} holds every matching event", lambda: rows_in(each) >= len(store))  # noqa: B023

    def status() -> sinks_pb2.SinkStatus:
        return calls.sinks.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name="warehouse"), timeout=30)

    # The sink's position is past the last event: nothing pending, nothing more to come.
    done = wait_for(
        "the sink's position reaches the end", lambda: status().delivered_position >= store[-1].position
    )
    assert done and status().state == "running"
    assert sorted(os.listdir(directory)) == [path.name for path in listed(directory)]  # no temporary file

    table = pq.read_table(directory)
    assert table.column("id").to_pylist() == [e.id for e in store]
    assert table.column("position").to_pylist() == [e.position for e in store]
    assert table.to_pylist() == calls.exported().to_pylist()
    spans = [tuple(int(part) for part in path.stem.split("-")[1:]) for path in listed(directory)]
    for (first, last), path in zip(spans, listed(directory), strict=True):
        positions = pq.read_table(path).column("position").to_pylist()
        assert (positions[0], positions[-1]) == (first, last)

    # The masked sink's files: what a reader key sees, personal fields masked, the rest equal.
    shown = pq.read_table(root / "masked")
    assert shown.column("position").to_pylist() == [e.position for e in store]
    emails = shown.column("lead.email").to_pylist()
    assert all(re.fullmatch(r"p\*\*\*@example\.com", email) for email in emails), emails[:3]
    assert shown.column("lead.state").to_pylist() == table.column("lead.state").to_pylist()
    assert shown.drop_columns(["lead", "lead.email"]) == table.drop_columns(["lead", "lead.email"])
    calls.close()
    assert server.stop() == 0, "".join(server.stderr_lines)
