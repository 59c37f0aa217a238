"""The code base stays lint-clean and type-checked: ruff and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["storage/leadtrail", "server/leadtrail", "client/leadtrail", "benchmarks"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_reports_nothing() -> None:
    result = _run("ruff", "check", *SOURCES, "tests", "proto/generate.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_reports_nothing() -> None:
    packages = ["storage/leadtrail/storage", "server/leadtrail/server", "client/leadtrail/client"]
    result = _run("mypy", *packages)
    assert result.returncode == 0, result.stdout + result.stderr
