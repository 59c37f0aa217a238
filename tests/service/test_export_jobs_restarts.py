"""Export jobs across restarts: a missed run runs once at start, files expire after
``keep_days``, and a run cut short by kill -9 leaves no partial file listed and is redone.

Times are moved the way an operator's downtime moves them: the server is stopped and
the job book (``<data>/exports/jobs.json``) is given older times, as if the server had
been down that long; no clock of the server is faked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from leadtrail.server.crashpoints import ENVIRONMENT
from leadtrail.v1 import event_pb2, exports_pb2, exports_pb2_grpc, query_pb2, submission_pb2

WAIT_S = 30.0
MINUTE_MS = 60_000


class Served:
    """A server of the test's own data directory, with its stubs."""

    def __init__(self, spawn: Callable[..., Any], data: Path) -> None:
        self.process = spawn(data, "--http", "off")
        self.channel = grpc.insecure_channel(self.process.address)
        self.exports = exports_pb2_grpc.ExportServiceStub(self.channel)
        self.submission = self.channel.unary_unary(
            "/leadtrail.v1.SubmissionService/Append",
            request_serializer=submission_pb2.AppendRequest.SerializeToString,
            response_deserializer=submission_pb2.AppendResponse.FromString,
        )
        self.query = self.channel.unary_unary(
            "/leadtrail.v1.QueryService/QueryEvents",
            request_serializer=query_pb2.QueryEventsRequest.SerializeToString,
            response_deserializer=query_pb2.QueryEventsResponse.FromString,
        )

    def files(self, name: str) -> list[exports_pb2.ExportFile]:
        return list(
            self.exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job=name), timeout=10).files
        )

    def events(self, type: str, lead_id: str) -> list[event_pb2.Event]:
        f = event_pb2.EventFilter(types=[type], lead_id=lead_id)
        return list(self.query(query_pb2.QueryEventsRequest(filter=f), timeout=10).events)

    def stop(self) -> int:
        self.channel.close()
        code: int = self.process.stop()
        return code


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        time.sleep(0.05)


def edit_book(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the stopped server's job book (``jobs.json``, or a job's ``files.json``) as
    downtime would have aged it."""
    book = orjson.loads(path.read_bytes())
    change(book)
    path.write_bytes(orjson.dumps(book))


def set_job(served: Served, name: str, **fields: Any) -> None:
    served.exports.SetExportJob(
        exports_pb2.ExportJob(
            name=name,
            format=query_pb2.EXPORT_FORMAT_JSONL,
            every_s=60,
            keep_days=1,
            filter=event_pb2.EventFilter(types=["restart.row"]),
            **fields,
        ),
        timeout=10,
    )


def append_rows(served: Served, count: int) -> list[str]:
    events = [
        event_pb2.Event(type="restart.row", lead_id=f"lead-{i}", flow_id="flow-restart") for i in range(count)
    ]
    return [r.id for r in served.submission(submission_pb2.AppendRequest(events=events), timeout=10).results]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_run_missed_while_the_server_was_down_runs_once_at_start(
    spawn: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    served = Served(spawn, data)
    set_job(served, "missed")
    append_rows(served, 3)
    assert served.files("missed") == []  # first due a minute after it was set
    assert served.stop() == 0

    def down_for_ten_minutes(book: dict[str, Any]) -> None:
        (entry,) = book["jobs"]
        entry["set_at_ms"] = now_ms() - 10 * MINUTE_MS  # ten runs missed

    edit_book(data / "exports" / "jobs.json", down_for_ten_minutes)
    served = Served(spawn, data)
    wait_until(lambda: len(served.files("missed")) == 1, "the missed run")
    (made,) = served.files("missed")
    assert made.rows == 3
    (completed,) = served.events("export.completed", "export:missed")
    assert completed.reason == "scheduled"
    (entry,) = served.exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs
    assert entry.last_run_at.ToMilliseconds() == made.created_at.ToMilliseconds()
    assert entry.next_run_at.ToMilliseconds() == made.created_at.ToMilliseconds() + MINUTE_MS
    assert len(served.files("missed")) == 1  # once, not once per missed run
    assert served.stop() == 0


def test_a_file_is_removed_after_keep_days_with_export_expired(
    spawn: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    served = Served(spawn, data)
    set_job(served, "aging")
    append_rows(served, 2)
    kept = served.exports.RunExportJob(exports_pb2.RunExportJobRequest(name="aging"), timeout=30).file
    old = served.exports.RunExportJob(exports_pb2.RunExportJobRequest(name="aging"), timeout=30).file
    directory = data / "exports" / "default" / "aging"
    assert sorted(p.name for p in directory.iterdir()) == sorted([kept.name, old.name, "files.json"])
    assert served.stop() == 0

    def two_days_later_for_one(listed: dict[str, Any]) -> None:
        for made in listed["files"]:
            if made["name"] == old.name:
                made["created_at_ms"] -= 2 * 86_400_000
                made["expires_at_ms"] = made["created_at_ms"] + 86_400_000

    edit_book(directory / "files.json", two_days_later_for_one)
    served = Served(spawn, data)
    wait_until(lambda: [f.name for f in served.files("aging")] == [kept.name], "the expiry")
    assert sorted(p.name for p in directory.iterdir()) == sorted([kept.name, "files.json"])
    wait_until(lambda: len(served.events("export.expired", "export:aging")) == 1, "export.expired")
    (expired,) = served.events("export.expired", "export:aging")
    assert MessageToDict(expired.details)["file"] == old.name
    assert served.stop() == 0


def test_a_run_cut_short_by_kill_9_leaves_no_partial_file_listed_and_is_redone_at_start(
    spawn: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv(ENVIRONMENT, "export.writing")
    served = Served(spawn, data)
    monkeypatch.delenv(ENVIRONMENT)
    set_job(served, "crashing")
    ids = append_rows(served, 5)
    with pytest.raises(grpc.RpcError) as info:
        served.exports.RunExportJob(exports_pb2.RunExportJobRequest(name="crashing"), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert served.stop() == -9  # killed itself while writing
    directory = data / "exports" / "default" / "crashing"
    left = [p.name for p in directory.iterdir()]
    assert len(left) == 1 and left[0].endswith(".partial")  # it died mid-file

    served = Served(spawn, data)
    wait_until(lambda: len(served.files("crashing")) == 1, "the run redone")
    (made,) = served.files("crashing")
    assert made.rows == 5
    assert sorted(p.name for p in directory.iterdir()) == sorted([made.name, "files.json"])  # no partial file
    lines = [orjson.loads(line) for line in (directory / made.name).read_bytes().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(ids)
    (completed,) = served.events("export.completed", "export:crashing")
    assert completed.reason == "redone"
    assert served.stop() == 0
