"""``leadtrail serve --workers 2``: export jobs live with the writer, and a follower forwards
every ExportService call to it, downloads included."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from leadtrail.v1 import event_pb2, exports_pb2, exports_pb2_grpc, query_pb2, submission_pb2

CONNECTIONS = 16
"""New connections, each given by the kernel to either worker: all on one worker 1 time in 2**15."""


def test_every_worker_serves_the_same_jobs_and_files(spawn: Callable[..., Any], tmp_path: Path) -> None:
    server = spawn(tmp_path / "data", "--workers", "2", "--http", "off")
    channels = [
        grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    try:
        first = exports_pb2_grpc.ExportServiceStub(channels[0])
        append = channels[0].unary_unary(
            "/leadtrail.v1.SubmissionService/Append",
            request_serializer=submission_pb2.AppendRequest.SerializeToString,
            response_deserializer=submission_pb2.AppendResponse.FromString,
        )
        events = [event_pb2.Event(type="workers.row", lead_id=f"l{i}", flow_id="f") for i in range(3)]
        append(submission_pb2.AppendRequest(events=events), timeout=10)
        first.SetExportJob(
            exports_pb2.ExportJob(
                name="both",
                format=query_pb2.EXPORT_FORMAT_JSONL,
                every_s=3600,
                keep_days=1,
                filter=event_pb2.EventFilter(types=["workers.row"]),
            ),
            timeout=10,
        )
        made = first.RunExportJob(exports_pb2.RunExportJobRequest(name="both"), timeout=30).file
        assert made.rows == 3
        for channel in channels:
            stub = exports_pb2_grpc.ExportServiceStub(channel)
            jobs = stub.ListExportJobs(exports_pb2.ListExportJobsRequest(), timeout=10).jobs
            assert [j.name for j in jobs] == ["both"]
            files = stub.ListExportFiles(exports_pb2.ListExportFilesRequest(job="both"), timeout=10).files
            assert list(files) == [made]
            chunks = stub.DownloadExportFile(
                exports_pb2.DownloadExportFileRequest(job="both", file=made.name), timeout=10
            )
            assert hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest() == made.sha256
    finally:
        for channel in channels:
            channel.close()
    assert server.stop() == 0, "".join(server.stderr_lines)
