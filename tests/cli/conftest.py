"""Runs the ``leadtrail`` command as a user does: a subprocess, its output and exit status."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

COMMAND = [sys.executable, "-m", "leadtrail.server.cli"]


server_process = sys.modules["server_process"]  # loaded by tests/conftest.py


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
