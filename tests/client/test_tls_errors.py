"""A client and a server that disagree about TLS are told what to pass, not "Socket closed"."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from leadtrail.client import (
    AsyncClient,
    Client,
    TLSError,
    UnavailableError,
    handle_rpc_error,
    tls_credentials,
)


def _refusal(address: str, credentials: grpc.ChannelCredentials | None) -> TLSError:
    with Client(address, credentials=credentials, timeout=10) as client, pytest.raises(TLSError) as raised:
        client.stats()
    return raised.value


def test_plaintext_to_a_tls_server_says_the_server_requires_tls(tls_server: Any) -> None:
    error = _refusal(tls_server.address, None)
    assert error.problem == "tls_required"
    assert isinstance(error, UnavailableError)  # still what it was: safe to retry once fixed
    assert "requires TLS" in str(error) and "tls_credentials(ca_file)" in str(error)


def test_no_client_certificate_for_a_mutual_tls_server_says_one_is_required(
    mutual_tls_server: Any, certificates: Any
) -> None:
    error = _refusal(mutual_tls_server.address, tls_credentials(str(certificates.ca)))
    assert error.problem == "client_certificate_required"
    assert "requires a client certificate" in str(error)
    assert "tls_credentials(ca_file, cert_file, key_file)" in str(error)


def test_tls_to_a_plaintext_server_says_it_does_not_speak_tls(
    leadtrail_server: Any, certificates: Any
) -> None:
    error = _refusal(leadtrail_server.address, tls_credentials(str(certificates.ca)))
    assert error.problem == "server_not_tls"


def test_a_certificate_from_another_ca_is_named(tls_server: Any, certificates: Any) -> None:
    error = _refusal(tls_server.address, tls_credentials(str(certificates.client_cert)))
    assert error.problem == "certificate_untrusted"


def test_the_async_client_and_a_subscription_say_the_same(tls_server: Any) -> None:
    async def stats() -> None:
        async with AsyncClient(tls_server.address, timeout=10) as client:
            await client.stats()

    with pytest.raises(TLSError) as raised:
        asyncio.run(stats())
    assert raised.value.problem == "tls_required"
    with Client(tls_server.address, timeout=10) as client, pytest.raises(TLSError) as raised:
        next(client.subscribe(from_start=True, reconnect=False))
    assert raised.value.problem == "tls_required"


class ClosedSocket(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:9: Socket closed"


def test_without_knowing_the_channel_both_remedies_are_named() -> None:
    error = handle_rpc_error(ClosedSocket())
    assert isinstance(error, TLSError) and error.problem == "tls_or_client_certificate_required"
    assert "Socket closed" in error.details  # gRPC's own words stay for whoever debugs it
