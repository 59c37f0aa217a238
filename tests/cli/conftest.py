"""Runs the ``leadtrail`` command as a user does: a subprocess, its output and exit status."""

from __future__ import annotations

import importlib.util
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COMMAND = [sys.executable, "-m", "leadtrail.server.cli"]


def _load_server_process() -> ModuleType:
    """``tests/server_process.py``, loaded once by path and shared with tests/client."""
    module = sys.modules.get("server_process")
    if module is None:
        path = Path(__file__).resolve().parents[1] / "server_process.py"
        spec = importlib.util.spec_from_file_location("server_process", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["server_process"] = module
        spec.loader.exec_module(module)
    return module


server_process = _load_server_process()


@dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """A reported error: status 1 and exactly one line on stderr, never a traceback."""
        assert self.status == 1, self
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("leadtrail: "), lines[0]
        return lines[0]


class CLI:
    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> Run:
        done = subprocess.run(
            [*COMMAND, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            # No key from the developer's environment leaks into the runs.
            env={k: v for k, v in os.environ.items() if k != "LEADTRAIL_API_KEY"},
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def on_terminal(self, *args: str, timeout: float = 60) -> Run:
        """The command with stderr on a pseudo-terminal, as an operator at a shell sees it;
        ``stderr`` is what the terminal showed."""
        main, terminal = pty.openpty()
        try:
            process = subprocess.Popen(
                [*COMMAND, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=terminal,
                env={k: v for k, v in os.environ.items() if k != "LEADTRAIL_API_KEY"},
            )
        finally:
            os.close(terminal)
        shown = bytearray()
        deadline = time.monotonic() + timeout
        with process:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([main], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    continue
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not data:
                    break
                shown += data
            else:
                process.kill()
            assert process.stdout is not None
            stdout = process.stdout.read()
            status = process.wait(timeout)
        os.close(main)
        return Run(status, stdout.decode(), shown.decode(errors="replace"))

    def start(self, *args: str) -> Any:
        """The command running in the background (a ``server_process.Child``), its output
        read line by line with deadlines."""
        return server_process.Child([*COMMAND, *args])


@pytest.fixture(scope="session")
def cli() -> CLI:
    return CLI()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a ``leadtrail serve`` of this test module, without keys or TLS."""
    process = server_process.ServerProcess(tmp_path_factory.mktemp("server") / "data").start()
    yield process.address
    assert process.stop() == 0


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    return server_process.make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certificates: Any) -> Iterator[Any]:
    """A server that speaks only TLS."""
    tls = ("--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key))
    server = server_process.ServerProcess(tmp_path_factory.mktemp("tls") / "data", *tls).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mutual_tls_server(tmp_path_factory: pytest.TempPathFactory, certificates: Any) -> Iterator[Any]:
    """A server that admits only clients with a certificate signed by the test CA."""
    tls = ("--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key))
    mutual = ("--tls-client-ca", str(certificates.ca))
    server = server_process.ServerProcess(tmp_path_factory.mktemp("mtls") / "data", *tls, *mutual).start()
    yield server
    server.stop()
