"""The harness of ``python -m benchmarks compare``, run as its users run it.

``benchmarks/`` is not an installed package: it runs from the repository root.
The tests load it by its path (the repository root never goes on sys.path,
which would let it shadow the installed packages) and run the command itself
in a child process from the root.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_benchmarks() -> ModuleType:
    """The ``benchmarks`` package from the repository, importable as ``benchmarks.*`` afterwards."""
    loaded = sys.modules.get("benchmarks")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(
        "benchmarks",
        ROOT / "benchmarks" / "__init__.py",
        submodule_search_locations=[str(ROOT / "benchmarks")],
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = module
    spec.loader.exec_module(module)
    return module


def run_benchmarks(
    args: Sequence[str], timeout_s: float = 240.0, script: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks ARGS`` (or ``python SCRIPT ARGS``) from the repository root;
    SIGTERM at the deadline, so that the harness stops the servers it started before it exits."""
    command = [sys.executable, script] if script else [sys.executable, "-m", "benchmarks"]
    process = subprocess.Popen(
        [*command, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
        message = f"{' '.join(map(str, process.args))} took over {timeout_s} s:\n{stdout}\n{stderr}"
        raise AssertionError(message) from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


RunBenchmarks = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def benchmarks_package() -> ModuleType:
    return load_benchmarks()


@pytest.fixture(scope="session")
def benchmarks_command() -> RunBenchmarks:
    """``run_benchmarks``, for the test modules (helpers here are not importable from them)."""
    return run_benchmarks
