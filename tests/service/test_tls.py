"""TLS and mutual TLS over a real server, with certificates made here for 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from leadtrail.client import Client, Event, UnavailableError, tls_credentials

Spawn = Callable[..., Any]
CLI = [sys.executable, "-m", "leadtrail.server.cli"]


@dataclass
class Pair:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pair(cert_path, key_path)


def make_ca(directory: Path, stem: str) -> tuple[Pair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(_name(stem))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, stem, cert, key), cert, key


def make_leaf(
    directory: Path, stem: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, server: bool
) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _write(directory, stem, builder.sign(ca_key, hashes.SHA256()), key)


@dataclass
class Certificates:
    ca: Pair
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate from a CA the server does not trust


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("certs")
    ca, ca_cert, ca_key = make_ca(directory, "leadtrail-test-ca")
    _, other_cert, other_key = make_ca(directory, "other-ca")
    return Certificates(
        ca=ca,
        server=make_leaf(directory, "server", ca_cert, ca_key, server=True),
        client=make_leaf(directory, "client", ca_cert, ca_key, server=False),
        stranger=make_leaf(directory, "stranger", other_cert, other_key, server=False),
    )


def appended_over(client: Client) -> str:
    result = client.append(Event("source.submitted", "lead-tls", "flow-tls"))
    return client.get(result.id).lead_id


def test_a_tls_server_answers_tls_clients_and_refuses_plaintext(
    spawn: Spawn, tmp_path: Path, certs: Certificates
) -> None:
    server = spawn(
        tmp_path / "data", "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)
    )
    with Client(server.address, credentials=tls_credentials(str(certs.ca.cert)), timeout=10) as client:
        assert appended_over(client) == "lead-tls"
    with Client(server.address, timeout=3) as plaintext, pytest.raises(UnavailableError):
        plaintext.stats()
    done = subprocess.run(
        [*CLI, "stats", "--server", server.address, "--tls-ca", str(certs.ca.cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert server.stop() == 0


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_trusted_ca(
    spawn: Spawn, tmp_path: Path, certs: Certificates
) -> None:
    server = spawn(
        tmp_path / "data",
        "--tls-cert",
        str(certs.server.cert),
        "--tls-key",
        str(certs.server.key),
        "--tls-client-ca",
        str(certs.ca.cert),
    )
    ca = str(certs.ca.cert)
    trusted = tls_credentials(ca, str(certs.client.cert), str(certs.client.key))
    with Client(server.address, credentials=trusted, timeout=10) as client:
        assert appended_over(client) == "lead-tls"
    for credentials in (
        tls_credentials(ca),
        tls_credentials(ca, str(certs.stranger.cert), str(certs.stranger.key)),
    ):
        with (
            Client(server.address, credentials=credentials, timeout=3) as refused,
            pytest.raises(UnavailableError),
        ):
            refused.stats()
    assert server.stop() == 0


GRPC_CORE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\]")
"""A line of gRPC core's own logger, e.g. ``I1203 00:35:47.003119 30621 ssl_transport_security.cc:2563]``."""


def test_refused_handshakes_leave_no_grpc_core_lines_in_the_server_log(
    spawn: Spawn, tmp_path: Path, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)  # the server's own default, not ours
    server = spawn(
        tmp_path / "data",
        "--tls-cert",
        str(certs.server.cert),
        "--tls-key",
        str(certs.server.key),
        "--tls-client-ca",
        str(certs.ca.cert),
    )
    with Client(server.address, timeout=3) as plaintext, pytest.raises(UnavailableError):
        plaintext.stats()
    without_certificate = tls_credentials(str(certs.ca.cert))
    with (
        Client(server.address, credentials=without_certificate, timeout=3) as refused,
        pytest.raises(UnavailableError),
    ):
        refused.stats()
    assert server.stop() == 0
    raw = [line for line in server.stderr_lines if GRPC_CORE_LINE.match(line) or ".cc:" in line]
    assert not raw, "".join(raw)


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    """A server that must refuse to start: its exit status and its one line."""
    return subprocess.run([*CLI, "serve", "--http", "off", *args], capture_output=True, text=True, timeout=60)


def test_a_non_loopback_address_needs_keys_and_tls(tmp_path: Path, certs: Certificates) -> None:
    data = str(tmp_path / "data")
    tls = ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)]
    without_keys = serve_once("--data", data, "--listen", "0.0.0.0:0", *tls)
    assert without_keys.returncode == 1 and "API keys" in without_keys.stderr
    (tmp_path / "data").mkdir(exist_ok=True)
    made = subprocess.run(
        [*CLI, "keys", "create", "--data", data, "--account", "acme", "--role", "admin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    without_tls = serve_once("--data", data, "--listen", "0.0.0.0:0")
    assert without_tls.returncode == 1 and "TLS (--tls-cert and --tls-key)" in without_tls.stderr


def test_tls_options_are_checked_before_anything_starts(tmp_path: Path, certs: Certificates) -> None:
    data = str(tmp_path / "data")
    lonely = serve_once("--data", data, "--tls-cert", str(certs.server.cert))
    assert lonely.returncode == 1 and "--tls-cert and --tls-key go together" in lonely.stderr
    missing = serve_once(
        "--data", data, "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(certs.server.key)
    )
    assert missing.returncode == 1 and "nope.pem" in missing.stderr
    not_pem = tmp_path / "garbage.pem"
    not_pem.write_text("hello")
    garbage = serve_once("--data", data, "--tls-cert", str(not_pem), "--tls-key", str(certs.server.key))
    assert garbage.returncode == 1 and "not a PEM file" in garbage.stderr
