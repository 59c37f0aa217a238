"""Fixtures of the console's browser tests: a server with data and a Chromium per module,
the browser checked after every test, the screenshot directory. The machinery is in
``console_harness.py`` (loaded here by path: tests are imported with
``--import-mode=importlib``, so there is no package to import it from)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py


def _load(name: str) -> ModuleType:
    module = sys.modules.get(name)
    if module is None:
        path = Path(__file__).resolve().parent / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


harness = _load("console_harness")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("console") / "data"
    keys = {role: server_process.create_key(data, "acme", role) for role in harness.ROLES}
    keys["other"] = server_process.create_key(data, "globex", "admin")
    server = server_process.ServerProcess(data).start()
    try:
        assert server.http_address, server.output
        running = harness.Console(server, f"http://{server.http_address}", server.address, keys)
        harness.fill(running)
        yield running
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    chromium = harness.start_chromium()
    chromium.set_page_load_timeout(30)
    try:
        yield chromium
    finally:
        chromium.quit()


@pytest.fixture
def browser(driver: Any, console: Any) -> Iterator[Any]:
    """The module's browser, checked after each test: no console error, no foreign request."""
    shared = harness.Browser(driver, console)
    shared.problems()  # what earlier tests left in the logs is theirs
    shared.requests_seen = 0
    yield shared
    problems = shared.problems()
    assert not problems, "\n".join(problems)
    assert shared.requests_seen, "no request in the browser's performance log: the check sees nothing"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests keep their pictures: $LEADTRAIL_SCREENSHOTS, or a temporary directory."""
    chosen = os.environ.get(harness.SCREENSHOTS_ENV)
    if chosen:
        directory = Path(chosen)
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    return tmp_path_factory.mktemp("screenshots")
