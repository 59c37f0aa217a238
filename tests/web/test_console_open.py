"""The console of a server without API keys (open mode: no login, the ``default`` account's
admin) and of a server with keys under TLS (HTTPS, and a session cookie marked Secure)."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import orjson
import pytest
from leadtrail.server.keys import KeyStore
from leadtrail.v1 import event_pb2, submission_pb2, submission_pb2_grpc
from server_process import ServerProcess


def _get(
    address: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, http.client.HTTPMessage, str]:
    host, _, port = address.rpartition(":")
    connection = (
        http.client.HTTPSConnection(host, int(port), timeout=30, context=context)
        if context is not None
        else http.client.HTTPConnection(host, int(port), timeout=30)
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    try:
        connection.request(
            "POST" if form is not None else "GET",
            path,
            body=urlencode(form) if form is not None else None,
            headers=headers,
        )
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read().decode()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("open") / "data").start()
    event = event_pb2.Event(type="source.submitted", lead_id="lead-open", flow_id="flow-open")
    event.lead_json = orjson.dumps({"email": "open@example.com"})
    with grpc.insecure_channel(server.address) as channel:
        stub = submission_pb2_grpc.SubmissionServiceStub(channel)
        stub.Append(submission_pb2.AppendRequest(events=[event]), timeout=30)
    yield server
    assert server.stop() == 0, server.output


def test_open_mode_serves_every_page_without_a_login(open_server: ServerProcess) -> None:
    address = open_server.http_address
    for path in ("/", "/leads/lead-open", "/live", "/reports", "/alerts"):
        status, _, body = _get(address, path)
        assert status == 200, (path, body)
        assert 'data-testid="who">open mode<' in body
    _, _, lead = _get(address, "/leads/lead-open")
    assert "open@example.com" in lead  # the default account's admin sees personal values
    status, headers, _ = _get(address, "/", form={"q": "lead-open"})  # no session, no token to carry
    assert status == 303 and headers["Location"] == "/leads/lead-open"
    status, headers, body = _get(address, "/login")
    assert status == 200 and 'data-testid="open-mode"' in body and not headers.get_all("Set-Cookie")


def test_under_tls_the_console_is_https_and_its_session_cookie_is_secure(
    tmp_path: Path, certificates: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secret, _ = KeyStore(str(data)).create("acme", "reader", 1)
    tls = ("--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key))
    server = ServerProcess(data, *tls).start()
    try:
        context = ssl.create_default_context(cafile=str(certificates.ca))
        status, headers, _ = _get(server.http_address, "/login", form={"key": secret}, context=context)
        assert status == 303
        (cookie,) = headers.get_all("Set-Cookie") or []
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"secure", "httponly", "samesite"} <= attributes and "SameSite=Strict" in cookie
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            _get(server.http_address, "/login")  # no plain HTTP beside HTTPS
        status, headers, _ = _get(server.http_address, "/", context=context)
        assert status == 303 and headers["Location"].startswith("/login")  # no cookie sent
        assert 'data-testid="login-form"' in _get(server.http_address, "/login", context=context)[2]
    finally:
        assert server.stop() == 0, server.output
