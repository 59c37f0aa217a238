"""Fixtures every test directory may use: real servers with TLS, and certificates.

``tests/server_process.py`` (a ``leadtrail serve`` child on a loopback port
chosen by the OS, read with deadlines) is loaded here once, by path, and
registered as the module ``server_process`` for the directories' conftests;
``tests/webhook_receiver.py`` (a real HTTP server receiving webhooks) and
``tests/alert_events.py`` (alert events read back over gRPC) likewise.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


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


server_process = _load("server_process")
webhook_receiver = _load("webhook_receiver")
alert_events = _load("alert_events")
nats_servers = _load("nats_servers")


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
