"""A real ``leadtrail serve`` process on a loopback port chosen by the OS."""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from leadtrail.v1 import (
    admin_pb2_grpc,
    event_pb2,
    query_pb2_grpc,
    stream_pb2_grpc,
    submission_pb2_grpc,
)

READY = re.compile(r"serving on (127\.0\.0\.1:\d+)")
HTTP_READY = re.compile(r"http on (127\.0\.0\.1:\d+)")
HTTP_ON_ANY_PORT = ("--http", "127.0.0.1:0")
QUIET_CHECKPOINTS = ("--checkpoint-interval", "3600")
"""The server's own checkpoint records take positions too: tests that count positions of one
account start servers that record none while they run (test_checkpoint_records.py runs them
every 0.2 s against queries, subscriptions, alerts and sinks)."""
"""Every server a test starts serves HTTP on a port the OS picks, never the CLI's 8080."""


class ServerProcess:
    """``leadtrail serve`` as a child process; ``stop()`` checks it exits 0."""

    def __init__(self, data: Path, *args: str) -> None:
        self.data = data
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.http_address = ""
        """HOST:PORT of its HTTP listener ('' with ``--http off``)."""
        self.stderr_lines: list[str] = []
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._stderr_grew = threading.Condition()

    def start(self, listen: str = "127.0.0.1:0", timeout: float = 30.0) -> ServerProcess:
        command = [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", str(self.data)]
        self.proc = subprocess.Popen(
            [
                *command,
                "--listen",
                listen,
                *(() if "--http" in self.args else HTTP_ON_ANY_PORT),
                *(() if "--checkpoint-interval" in self.args else QUIET_CHECKPOINTS),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._drain = threading.Thread(target=self._drain_stderr, args=(self.proc.stderr,), daemon=True)
        self._drain.start()
        # stdout is read on a thread too: a server that hangs before its ready line fails the
        # test at the deadline instead of blocking a readline() for ever.
        self._reader = threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._stdout.get(timeout=left)
            except queue.Empty:
                break
            if line is None:  # stdout closed: the server exited
                break
            match = READY.search(line)
            if match:
                self.address = match.group(1)
                http = HTTP_READY.search(line)
                self.http_address = http.group(1) if http else ""
                return self
        self.proc.kill()
        raise AssertionError(f"server did not become ready: {''.join(self.stderr_lines)}")

    def _read_stdout(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._stdout.put(line)
        self._stdout.put(None)

    def _drain_stderr(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._stderr_grew:
                self.stderr_lines.append(line)
                self._stderr_grew.notify_all()

    def wait_for_stderr(self, text: str, timeout: float = 30.0) -> str:
        """The first stderr line containing ``text``, waiting for it until ``timeout``: stderr
        is drained on a thread, so a line written before the ready line may still be on its way."""
        deadline = time.monotonic() + timeout
        with self._stderr_grew:
            while True:
                for line in self.stderr_lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no stderr line with {text!r}: {''.join(self.stderr_lines)}")
                self._stderr_grew.wait(left)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_anon_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no RssAnon in /proc status")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._drain.join(10)
        self._reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._close_pipes()


class Stubs:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.submission = submission_pb2_grpc.SubmissionServiceStub(self.channel)
        self.query = query_pb2_grpc.QueryServiceStub(self.channel)
        self.stream = stream_pb2_grpc.StreamServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("store") / "data").start()
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[Stubs]:
    s = Stubs(server.address)
    yield s
    s.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., ServerProcess]]:
    """Start more servers in a test; any still running at the end are killed."""
    started: list[ServerProcess] = []

    def start(data: Path, *args: str, listen: str = "127.0.0.1:0") -> ServerProcess:
        process = ServerProcess(data, *args).start(listen)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()


_counter = itertools.count()


def lead_event(
    lead_id: str = "",
    *,
    type: str = "source.submitted",
    flow_id: str = "flow-solar",
    timestamp_ms: int | None = None,
    lead: dict[str, Any] | None = None,
    **fields: Any,
) -> event_pb2.Event:
    """An event as a flow engine sends it (fields by API.md name)."""
    event = event_pb2.Event(type=type, lead_id=lead_id or f"lead-{next(_counter)}", flow_id=flow_id, **fields)
    if timestamp_ms is not None:
        event.timestamp.FromMilliseconds(timestamp_ms)
    event.lead.update(lead if lead is not None else {"email": "dana@example.com", "state": "CA"})
    return event


@pytest.fixture
def make_event() -> Callable[..., event_pb2.Event]:
    return lead_event
