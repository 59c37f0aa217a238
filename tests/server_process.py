"""Child processes for the CLI and client tests: ``leadtrail serve`` on a loopback port
the OS picks, and any other command whose output a test reads line by line.

Every read has a deadline: a line is taken from a queue that a reader thread fills,
so a child that hangs or stays silent fails the test with what it printed so far
instead of blocking it. Certificates for TLS servers are made here too.

The conftests load this file by path (tests are imported with
``--import-mode=importlib``, so there is no package to import it from).
"""

from __future__ import annotations

import datetime
import ipaddress
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LEADTRAIL = [sys.executable, "-m", "leadtrail.server.cli"]
READY = re.compile(r"serving on (127\.0\.0\.1:\d+)")
HTTP_READY = re.compile(r"http on (127\.0\.0\.1:\d+)")
HTTP_ON_ANY_PORT = ("--http", "127.0.0.1:0")
QUIET_CHECKPOINTS = ("--checkpoint-interval", "3600")
"""The server's own checkpoint records take positions too: tests that count positions of one
account start servers that record none while they run (tests/service/test_checkpoint_records.py
runs them every 0.2 s against queries, subscriptions, alerts and sinks)."""
"""Every server a test starts serves HTTP on a port the OS picks, never the CLI's 8080."""


class Lines:
    """The lines of a child's output stream, read by a thread; ``next`` and ``wait_for``
    wait at most ``timeout`` seconds."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.seen.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def next(self, timeout: float = 30.0) -> str:
        """The next line; AssertionError when none comes in time or the stream ended."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; so far:\n{self.text}") from None
        if line is None:
            self._queue.put(None)  # stays at the end for every later reader
            raise AssertionError(f"the stream ended; it said:\n{self.text}")
        return line

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first new line matching ``pattern`` (lines before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.0, deadline - time.monotonic()))
            match = re.search(pattern, line)
            if match:
                return match

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        return "".join(self.seen)


class Child:
    """A command run as a child process with both output streams read by ``Lines``."""

    def __init__(self, args: Sequence[str], *, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen(
            list(args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = Lines(self.proc.stdout)
        self.stderr = Lines(self.proc.stderr)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status; a child still running after ``timeout`` is killed and fails the test."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running after {timeout} s; stderr:\n{self.stderr.text}") from None
        self.stdout.join()
        self.stderr.join()
        return status

    def close(self) -> None:
        """Kill a child the test left running (a failed test must not leak it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stdout.join(5)
        self.stderr.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class ServerProcess:
    """``leadtrail serve --data DATA *args`` as a child process; ``stop()`` returns its status."""

    def __init__(self, data: Path, *args: str) -> None:
        self.data = data
        self.args = args
        self.address = ""
        self.http_address = ""
        """HOST:PORT of its HTTP listener ('' with ``--http off``)."""
        self.child: Child | None = None

    def start(self, listen: str = "127.0.0.1:0", timeout: float = 60.0) -> ServerProcess:
        http = () if "--http" in self.args else HTTP_ON_ANY_PORT
        quiet = () if "--checkpoint-interval" in self.args else QUIET_CHECKPOINTS
        command = [
            *LEADTRAIL,
            "serve",
            "--data",
            str(self.data),
            "--listen",
            listen,
            *http,
            *quiet,
            *self.args,
        ]
        self.child = Child(command)
        try:
            ready = self.child.stdout.wait_for(READY, timeout)
        except AssertionError:
            self.child.close()
            raise AssertionError(f"server did not become ready:\n{self.output}") from None
        self.address = ready.group(1)
        http_ready = HTTP_READY.search(ready.string)
        self.http_address = http_ready.group(1) if http_ready else ""
        return self

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def output(self) -> str:
        """Everything the server printed so far, stdout then stderr."""
        if self.child is None:
            return ""
        return self.child.stdout.text + self.child.stderr.text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.child is not None
        self.child.signal(sig)
        try:
            return self.child.wait(timeout)
        finally:
            self.child.close()

    def restart(self, sig: int = signal.SIGTERM) -> ServerProcess:
        """Stop with ``sig``, then start again on the same data directory and port."""
        port = self.port
        self.stop(sig=sig)
        return self.start(f"127.0.0.1:{port}")


def create_key(data: Path, account: str, role: str) -> str:
    """A new API key in ``data`` (made offline, before the server starts)."""
    data.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*LEADTRAIL, "keys", "create", "--data", str(data), "--account", account, "--role", role],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files for a TLS server on 127.0.0.1 and a client of it, signed by one CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> CertificateFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        extension: x509.ExtensionType,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name, issuer_key = issuer if issuer is not None else (name, key)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
            .sign(issuer_key, hashes.SHA256())
        )
        return certificate, key

    def write(stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    ca, ca_key = issue("leadtrail-test-ca", None, x509.BasicConstraints(ca=True, path_length=None))
    loopback = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    server = issue("server", (ca.subject, ca_key), loopback)
    client = issue("client", (ca.subject, ca_key), x509.BasicConstraints(ca=False, path_length=None))
    ca_path, _ = write("ca", ca, ca_key)
    server_cert, server_key = write("server", *server)
    client_cert, client_key = write("client", *client)
    return CertificateFiles(ca_path, server_cert, server_key, client_cert, client_key)
