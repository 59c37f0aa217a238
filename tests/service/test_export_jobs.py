"""Scheduled export jobs over a real server: set, list, delete, run, list and download files.

Each run writes the events of the job's window into one complete file under the data
directory, records ``export.completed``, and every download is recorded as
``audit.export_downloaded``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import orjson
import pytest
from leadtrail.v1 import event_pb2, exports_pb2, exports_pb2_grpc, query_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
Server = Any  # conftest.ServerProcess
WAIT_S = 30.0
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def exports(stubs: Stubs) -> exports_pb2_grpc.ExportServiceStub:
    return exports_pb2_grpc.ExportServiceStub(stubs.channel)


def job(name: str, **fields: Any) -> exports_pb2.ExportJob:
    fields.setdefault("format", query_pb2.EXPORT_FORMAT_JSONL)
    fields.setdefault("every_s", 3600)
    fields.setdefault("keep_days", 7)
    return exports_pb2.ExportJob(name=name, **fields)


def append(stubs: Stubs, make_event: Callable[..., event_pb2.Event], *events: event_pb2.Event) -> list[str]:
    answer = stubs.submission.Append(submission_pb2.AppendRequest(events=list(events)), timeout=10)
    return [r.id for r in answer.results]


def download(exports: Any, job_name: str, file_name: str) -> bytes:
    chunks = exports.DownloadExportFile(
        exports_pb2.DownloadExportFileRequest(job=job_name, file=file_name), timeout=10
    )
    return b"".join(c.data for c in chunks)


def events_of(stubs: Stubs, type: str, lead_id: str) -> list[event_pb2.Event]:
    f = event_pb2.EventFilter(types=[type], lead_id=lead_id)  # lead_id "": any lead
    return list(stubs.query.QueryEvents(query_pb2.QueryEventsRequest(filter=f), timeout=10).events)


def wait_for_events(stubs: Stubs, type: str, lead_id: str, count: int) -> list[event_pb2.Event]:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = events_of(stubs, type, lead_id)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def details(e: event_pb2.Event) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(e.details)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- set, list, delete ----------------------------------------------------------------------------


def test_a_job_is_set_listed_and_deleted(exports: Any) -> None:
    answer = exports.SetExportJob(job("daily-set", every_s=86_400, keep_days=30), timeout=10)
    assert answer.name == "daily-set"
    assert answer.lookback_s == 86_400  # the default: every_s
    assert answer.keep_days == 30
    assert answer.set_at.ToMilliseconds() > 0
    assert answer.next_run_at.ToMilliseconds() == answer.set_at.ToMilliseconds() + 86_400_000
    assert not answer.HasField("last_run_at")
    listed = exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs
    assert "daily-set" in [j.name for j in listed]

    replaced = exports.SetExportJob(job("daily-set", every_s=3600, lookback_s=7200, keep_days=2), timeout=10)
    assert (replaced.every_s, replaced.lookback_s, replaced.keep_days) == (3600, 7200, 2)

    exports.DeleteExportJob(exports_pb2.DeleteExportJobRequest(name="daily-set"), timeout=10)
    listed = exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs
    assert "daily-set" not in [j.name for j in listed]
    with pytest.raises(grpc.RpcError) as info:
        exports.DeleteExportJob(exports_pb2.DeleteExportJobRequest(name="daily-set"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


BAD_JOBS = [
    (job(""), "name", "required"),
    (job("Bad Name"), "name", "job name"),
    (job("ok", every_s=59), "every_s", "60"),
    (job("ok", keep_days=0), "keep_days", "1"),
    (job("ok", lookback_s=400 * 86_400), "lookback_s", "limit"),
    (job("ok", every_s=60, keep_days=7), "keep_days", "10080 files, over the limit of 10000"),
    (job("ok", format=query_pb2.EXPORT_FORMAT_UNSPECIFIED), "format", "required"),
    (job("ok", fields=["id"]), "fields", "JSONL"),
    (job("ok", format=query_pb2.EXPORT_FORMAT_CSV, fields=["id", "nope"]), "fields[1]", "nope"),
    (job("ok", filter=event_pb2.EventFilter(types=["Not A Type"])), "filter.types[0]", "prefix pattern"),
]


@pytest.mark.parametrize(("message", "field", "problem"), BAD_JOBS)
def test_a_bad_job_is_refused_naming_the_field_and_nothing_is_stored(
    exports: Any, message: exports_pb2.ExportJob, field: str, problem: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        exports.SetExportJob(message, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field + ":"), info.value.details()
    assert problem in info.value.details()
    listed = exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs
    assert "ok" not in [j.name for j in listed]


def test_unknown_jobs_and_files_are_not_found(exports: Any) -> None:
    for call in (
        lambda: exports.RunExportJob(exports_pb2.RunExportJobRequest(name="none"), timeout=10),
        lambda: exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="none"), timeout=10),
        lambda: download(exports, "none", "x.jsonl"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    exports.SetExportJob(job("no-files"), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        download(exports, "no-files", "../../keys.json")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- runs and downloads ---------------------------------------------------------------------------


def test_a_run_writes_the_windows_events_into_a_complete_file_and_records_it(
    server: Server, stubs: Stubs, exports: Any, make_event: Callable[..., event_pb2.Event]
) -> None:
    now = now_ms()
    inside = append(
        stubs,
        make_event,
        *(make_event(type="run.inside", timestamp_ms=now - 1000 * i) for i in range(1, 6)),
    )
    append(stubs, make_event, make_event(type="run.inside", timestamp_ms=now - 2 * HOUR_MS))  # too old
    append(stubs, make_event, make_event(type="run.other", timestamp_ms=now - 1000))  # not matching
    exports.SetExportJob(job("run-jsonl", filter=event_pb2.EventFilter(types=["run.inside"])), timeout=10)

    made = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="run-jsonl"), timeout=30).file
    assert made.rows == 5
    assert made.name.startswith("run-jsonl-") and made.name.endswith(".jsonl")
    assert made.expires_at.ToMilliseconds() == made.created_at.ToMilliseconds() + 7 * 86_400_000

    on_disk = server.data / "exports" / "default" / "run-jsonl"
    assert sorted(p.name for p in on_disk.iterdir()) == sorted([made.name, "files.json"])  # and their list
    data = download(exports, "run-jsonl", made.name)
    assert data == (on_disk / made.name).read_bytes()
    assert len(data) == made.bytes and hashlib.sha256(data).hexdigest() == made.sha256
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(inside)
    assert {line["type"] for line in lines} == {"run.inside"}

    listed = exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="run-jsonl"), timeout=10).files
    assert listed == [made]
    job_listed = next(
        j
        for j in exports.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs
        if j.name == "run-jsonl"
    )
    assert job_listed.last_run_at.ToMilliseconds() == made.created_at.ToMilliseconds()

    (completed,) = events_of(stubs, "export.completed", "export:run-jsonl")
    assert completed.flow_id == "exports" and completed.entity_id == "run-jsonl"
    d = details(completed)
    assert (d["job"], d["file"], d["rows"], d["bytes"], d["sha256"]) == (
        "run-jsonl",
        made.name,
        5,
        made.bytes,
        made.sha256,
    )
    assert d["to_ms"] - d["from_ms"] == 3600 * 1000

    (downloaded,) = wait_for_events(stubs, "audit.export_downloaded", "export:run-jsonl", 1)
    assert details(downloaded)["file"] == made.name and details(downloaded)["complete"] is True


def test_each_run_makes_a_new_file_newest_first(stubs: Stubs, exports: Any) -> None:
    exports.SetExportJob(job("twice", filter=event_pb2.EventFilter(types=["twice.none"])), timeout=10)
    first = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="twice"), timeout=30).file
    second = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="twice"), timeout=30).file
    assert first.name != second.name and first.rows == second.rows == 0
    listed = exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="twice"), timeout=10).files
    assert [f.name for f in listed] == [second.name, first.name]


def test_a_csv_job_writes_the_chosen_columns(
    stubs: Stubs, exports: Any, make_event: Callable[..., event_pb2.Event]
) -> None:
    ids = append(
        stubs, make_event, make_event(type="csv.row", lead={"email": "a@example.com", "state": "NY"})
    )
    exports.SetExportJob(
        job(
            "csv-job",
            format=query_pb2.EXPORT_FORMAT_CSV,
            fields=["id", "type", "lead.state"],
            filter=event_pb2.EventFilter(types=["csv.row"]),
        ),
        timeout=10,
    )
    made = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="csv-job"), timeout=30).file
    assert made.name.endswith(".csv")
    rows = list(csv.reader(io.StringIO(download(exports, "csv-job", made.name).decode())))
    assert rows == [["id", "type", "lead.state"], [ids[0], "csv.row", "NY"]]


def test_a_masked_job_delivers_what_an_analyst_sees(
    stubs: Stubs, exports: Any, make_event: Callable[..., event_pb2.Event]
) -> None:
    append(
        stubs, make_event, make_event(type="masked.row", lead={"email": "dana@example.com", "state": "CA"})
    )
    for name, masked in (("masked-job", True), ("plain-job", False)):
        exports.SetExportJob(
            job(name, masked=masked, filter=event_pb2.EventFilter(types=["masked.row"])), timeout=10
        )
    masked_file = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="masked-job"), timeout=30).file
    plain_file = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="plain-job"), timeout=30).file
    (masked_line,) = download(exports, "masked-job", masked_file.name).splitlines()
    (plain_line,) = download(exports, "plain-job", plain_file.name).splitlines()
    assert orjson.loads(plain_line)["lead"]["email"] == "dana@example.com"
    masked_email = orjson.loads(masked_line)["lead"]["email"]
    assert masked_email != "dana@example.com" and "dana" not in masked_email
    assert orjson.loads(masked_line)["lead"]["state"] == "CA"


def test_deleting_a_job_removes_its_files(server: Server, exports: Any) -> None:
    exports.SetExportJob(job("gone"), timeout=10)
    exports.RunExportJob(exports_pb2.RunExportJobRequest(name="gone"), timeout=30)
    directory = server.data / "exports" / "default" / "gone"
    assert len(list(directory.iterdir())) == 2  # the file and the list of files
    exports.DeleteExportJob(exports_pb2.DeleteExportJobRequest(name="gone"), timeout=10)
    assert not directory.exists()


def test_a_parquet_job_writes_typed_columns_that_read_back_equal_to_the_store(
    stubs: Stubs, exports: Any, make_event: Callable[..., event_pb2.Event]
) -> None:
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    prices = ["25.00", "-3.5", ""]
    ids = append(
        stubs,
        make_event,
        *(
            make_event(type="pq.row", price=price, lead={"state": state, "email": "p@example.com"})
            for price, state in zip(prices, ["CA", "NY", "TX"], strict=True)
        ),
    )
    exports.SetExportJob(
        job(
            "pq-job",
            format=query_pb2.EXPORT_FORMAT_PARQUET,
            fields=["lead.state"],
            filter=event_pb2.EventFilter(types=["pq.row"]),
        ),
        timeout=10,
    )
    made = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="pq-job"), timeout=30).file
    assert made.name.endswith(".parquet") and made.rows == 3
    data = download(exports, "pq-job", made.name)
    assert hashlib.sha256(data).hexdigest() == made.sha256
    table = pq.read_table(pa.BufferReader(data))
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert pa.types.is_decimal(table.schema.field("price").type)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert sorted(rows) == sorted(ids)
    for stored in events_of(stubs, "pq.row", ""):
        row = rows[stored.id]
        assert row["position"] == stored.position
        assert int(row["timestamp"].timestamp() * 1000) == stored.timestamp.ToMilliseconds()
        assert int(row["recorded_at"].timestamp() * 1000) == stored.recorded_at.ToMilliseconds()
        assert row["price"] == (Decimal(stored.price) if stored.price else None)
        assert row["lead.state"] == orjson.loads(row["lead"])["state"]
    assert sorted(r["lead.state"] for r in rows.values()) == ["CA", "NY", "TX"]


def test_a_parquet_job_takes_lead_columns_only(exports: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        exports.SetExportJob(job("pq-bad", format=query_pb2.EXPORT_FORMAT_PARQUET, fields=["id"]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("fields[0]:")


def test_a_run_that_cannot_write_is_unavailable_naming_why_and_the_next_one_works(
    server: Server, exports: Any
) -> None:
    exports.SetExportJob(job("blocked"), timeout=10)
    directory = server.data / "exports" / "default" / "blocked"
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.write_bytes(b"not a directory")  # where the job's files go
    try:
        with pytest.raises(grpc.RpcError) as info:
            exports.RunExportJob(exports_pb2.RunExportJobRequest(name="blocked"), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "blocked" in info.value.details() and "run failed" in info.value.details()
        assert (
            exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="blocked"), timeout=10).files == []
        )
    finally:
        directory.unlink()
    made = exports.RunExportJob(exports_pb2.RunExportJobRequest(name="blocked"), timeout=30).file
    assert [
        f.name for f in exports.ListExportFiles(exports_pb2.ListExportFilesRequest(job="blocked")).files
    ] == [made.name]
