"""Real ``nats-server -js`` processes for the sink tests: one server, or a 3-node JetStream
cluster, on loopback ports found free (bound to port 0 and let go, since a restarted server
must come back on the port its clients know), with their stores under a directory the test
owns. Each server is started, stopped (SIGTERM), killed (SIGKILL) and restarted by its pid;
``start`` returns once the server answers a client connection, and ``wait_jetstream`` once
JetStream answers its API (a cluster first elects a meta leader).

``read_stream`` is the downstream consumer the tests compare with the store: a pull
consumer on the stream reading every message in stream order.

Loaded once by ``tests/conftest.py`` as the module ``nats_servers``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it; it may be taken again later,
    which on a test machine it practically never is)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsServer:
    """One ``nats-server`` child with JetStream, its config and store under ``directory``."""

    def __init__(
        self,
        directory: Path,
        name: str = "n1",
        cluster_port: int = 0,
        routes: tuple[int, ...] = (),
        port: int = 0,
    ) -> None:
        self.directory = directory
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "nats.conf"
        self.log = directory / "nats.log"
        self.config.write_text(self._config_text())

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _config_text(self) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f'jetstream {{ store_dir: "{self.directory / "store"}" }}',
        ]
        if self.cluster_port:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            listen = f"127.0.0.1:{self.cluster_port}"
            lines.append(f"cluster {{ name: leadtrail-test, listen: {listen}, routes: [{routes}] }}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30.0) -> NatsServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server {self.name} exited {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"nats-server {self.name} not ready in {timeout} s:\n{self.output}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """The server greets a client connection with its INFO line."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as connection:
                return connection.recv(5) == b"INFO "
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the server's pid and wait for it to exit (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> NatsServer:
        self.stop(sig)
        return self.start()


class NatsCluster:
    """Three JetStream servers routed to each other (cluster ``leadtrail-test``)."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(
                directory / f"n{i + 1}",
                name=f"n{i + 1}",
                cluster_port=cluster_ports[i],
                routes=tuple(port for j, port in enumerate(cluster_ports) if j != i),
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for server in self.servers:
            server.start()
        wait_jetstream(self.urls, timeout, replicas=len(self.servers))
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    @property
    def output(self) -> str:
        return "\n".join(f"--- {server.name}\n{server.output}" for server in self.servers)


def wait_jetstream(urls: list[str], timeout: float = 60.0, replicas: int = 1) -> None:
    """Return once JetStream answers its API through ``urls`` and, for a cluster, places a
    stream of ``replicas`` (a meta leader is elected and knows every peer)."""
    asyncio.run(_wait_jetstream(urls, timeout, replicas))


async def _wait_jetstream(urls: list[str], timeout: float, replicas: int) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            connection = await connect(urls)
            try:
                js = connection.jetstream(timeout=2)
                await js.account_info()
                if replicas > 1:
                    await js.add_stream(
                        name="PLACEMENT_PROBE", subjects=["placement.probe"], num_replicas=replicas
                    )
                    await js.delete_stream("PLACEMENT_PROBE")
                return
            finally:
                await connection.close()
        except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as error:
            last = error
        await asyncio.sleep(0.2)
    raise AssertionError(f"JetStream did not answer within {timeout} s: {last!r}")


async def connect(urls: list[str]) -> nats.NATS:
    """A connection to one of ``urls`` that answers, each tried once (nats-py tries each
    server 60 times by default, even with reconnection off)."""

    async def quiet(error: Exception) -> None:
        return None

    return await nats.connect(
        servers=urls,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
        error_cb=quiet,
    )


# -- the downstream consumer -----------------------------------------------------------------


@dataclass(frozen=True)
class StreamMessage:
    sequence: int
    subject: str
    msg_id: str
    data: bytes


def read_stream(urls: list[str], stream: str, timeout: float = 30.0) -> list[StreamMessage]:
    """Every message of ``stream``, in stream order, as a pull consumer receives them."""
    return asyncio.run(_read_stream(urls, stream, timeout))


async def _read_stream(urls: list[str], stream: str, timeout: float) -> list[StreamMessage]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await _read_stream_once(urls, stream)
        except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError):
            # a cluster electing a stream leader does not answer for a moment
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def _read_stream_once(urls: list[str], stream: str) -> list[StreamMessage]:
    connection = await connect(urls)
    try:
        js = connection.jetstream(timeout=5)
        last = (await js.stream_info(stream)).state.last_seq
        subscription = await js.pull_subscribe("", stream=stream)
        messages: list[StreamMessage] = []
        while len(messages) < last:
            for message in await subscription.fetch(min(500, last - len(messages)), timeout=5):
                metadata = message.metadata
                headers = message.headers or {}
                messages.append(
                    StreamMessage(
                        metadata.sequence.stream,
                        message.subject,
                        headers.get("Nats-Msg-Id", ""),
                        message.data,
                    )
                )
                await message.ack()
        await subscription.unsubscribe()
        return messages
    finally:
        await connection.close()


def stream_leader(urls: list[str], stream: str, timeout: float = 30.0) -> str:
    """The name of the server leading ``stream`` (a cluster's replicated stream)."""

    async def ask() -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = await connect(urls)
                try:
                    info = await connection.jetstream(timeout=5).stream_info(stream)
                finally:
                    await connection.close()
                if info.cluster is not None and info.cluster.leader:
                    return str(info.cluster.leader)
            except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError):
                pass  # no leader for a moment
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {stream} has no leader after {timeout} s")
            await asyncio.sleep(0.2)

    return asyncio.run(ask())
