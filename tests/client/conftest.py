"""Servers for the client tests.

``leadtrail_server`` is the real thing: ``leadtrail serve`` as a child process
on a loopback port chosen by the OS (``tests/server_process.py``). ``FakeSubmissionServer`` is a real gRPC
server in this process with an in-memory, idempotent SubmissionService whose
failures the tests choose; its store outlives a restart on the same port.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from leadtrail.v1 import submission_pb2, submission_pb2_grpc

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
ServerProcess = server_process.ServerProcess


@pytest.fixture(scope="module")
def leadtrail_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = ServerProcess(tmp_path_factory.mktemp("leadtrail-data")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Any]:
    """A server of its own, for tests that restart it."""
    server = ServerProcess(tmp_path / "data").start()
    yield server
    server.stop()


# -- the in-process fake ---------------------------------------------------------------------------

_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class FakeSubmissionService(submission_pb2_grpc.SubmissionServiceServicer):
    """An in-memory idempotent SubmissionService; ``fail`` injects a status per request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[str, int] = {}  # id -> position
        self.order: list[str] = []  # ids in position order
        self.duplicates = 0
        self.stream_calls = 0
        self.unary_calls = 0
        self.request_sizes: list[int] = []
        self.metadata: list[dict[str, str]] = []
        self.gate = threading.Event()  # cleared: requests wait until it is set
        self.gate.set()
        # Called with (request number, stored) after storing; returns a status code to
        # end the call with instead of answering (the events stay stored).
        self.fail_after_store: Callable[[int, int], grpc.StatusCode | None] = lambda n, stored: None
        self.requests_seen = 0

    def _append(
        self, request: submission_pb2.AppendRequest, context: grpc.ServicerContext
    ) -> submission_pb2.AppendResponse:
        self.gate.wait()
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        for index, event in enumerate(request.events):
            if not _TYPE.match(event.type):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"events[{index}].type: {event.type!r}")
            if not event.id:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"events[{index}].id: required here")
        results = []
        with self.lock:
            self.requests_seen += 1
            number = self.requests_seen
            self.request_sizes.append(len(request.events))
            for event in request.events:
                duplicate = event.id in self.stored
                if duplicate:
                    self.duplicates += 1
                else:
                    self.order.append(event.id)
                    self.stored[event.id] = len(self.order)
                results.append(
                    submission_pb2.AppendResult(
                        id=event.id,
                        position=self.stored[event.id],
                        recorded_at=timestamp_pb2.Timestamp(seconds=int(time.time())),
                        duplicate=duplicate,
                    )
                )
            stored = len(self.order)
        code = self.fail_after_store(number, stored)
        if code is not None:
            context.abort(code, "injected failure after the events were stored")
        return submission_pb2.AppendResponse(results=results)

    def Append(
        self, request: submission_pb2.AppendRequest, context: grpc.ServicerContext
    ) -> submission_pb2.AppendResponse:
        with self.lock:
            self.unary_calls += 1
        return self._append(request, context)

    def AppendStream(
        self, request_iterator: Iterator[submission_pb2.AppendRequest], context: grpc.ServicerContext
    ) -> Iterator[submission_pb2.AppendResponse]:
        with self.lock:
            self.stream_calls += 1
        for request in request_iterator:
            yield self._append(request, context)


class FakeSubmissionServer:
    """A real gRPC server on a loopback port serving ``FakeSubmissionService``."""

    def __init__(self) -> None:
        self.service = FakeSubmissionService()
        self.port = 0
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeSubmissionServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        submission_pb2_grpc.add_SubmissionServiceServicer_to_server(self.service, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert self.port, "could not bind"
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.service.gate.set()
            self._server.stop(0).wait()
            self._server = None


@pytest.fixture
def fake_server() -> Iterator[FakeSubmissionServer]:
    server = FakeSubmissionServer().start()
    yield server
    server.stop()
