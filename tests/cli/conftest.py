"""Runs the ``leadtrail`` command as a user does: a subprocess, its output and exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

COMMAND = [sys.executable, "-m", "leadtrail.server.cli"]


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


@pytest.fixture(scope="session")
def cli() -> CLI:
    return CLI()
