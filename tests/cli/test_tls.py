"""The CLI tells an operator which TLS flags a server needs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import CLI


def test_plaintext_to_a_tls_server_names_the_tls_ca_flag(cli: CLI, tls_server: Any) -> None:
    line = cli("stats", "--server", tls_server.address).error_line()
    assert f"server {tls_server.address} requires TLS" in line
    assert "--tls-ca FILE" in line
    assert "Socket closed" not in line


def test_a_missing_client_certificate_names_the_cert_and_key_flags(
    cli: CLI, mutual_tls_server: Any, certificates: Any
) -> None:
    address = mutual_tls_server.address
    line = cli("query", "--server", address, "--tls-ca", str(certificates.ca)).error_line()
    assert f"server {address} requires a client certificate" in line
    assert "--tls-cert FILE" in line and "--tls-key FILE" in line
    with_certificate = cli(
        "query", "--server", address, "--tls-ca", str(certificates.ca),
        "--tls-cert", str(certificates.client_cert), "--tls-key", str(certificates.client_key),
    )  # fmt: skip
    assert with_certificate.status == 0, with_certificate
