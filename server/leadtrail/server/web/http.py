"""The HTTP listener: an aiohttp application served on the gRPC server's own event loop
(no second process, no thread), with ``GET /metrics`` and the console's pages (``console``).

``address`` is ``HOST:PORT`` (port 0: the OS picks, ``port`` is then the bound one).
Under TLS (``--tls-cert``/``--tls-key``) it serves HTTPS with the same certificate. A port
that cannot be bound fails start-up with ``HttpListenerError``, one line naming the
address and why. The exposure rule of a non-loopback address is the server's
(``app.check_listen``), applied before the listener is made.

The listener also counts committed events for ``/metrics``: a commit listener on the
writer's log, installed at ``start`` and removed at ``stop``.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from leadtrail.server.auth import Gate
from leadtrail.server.served_store import ServedStore

from .auth import Refusal, metrics_caller
from .console import Console, ConsoleServices
from .meters import meters_of
from .metrics import CONTENT_TYPE, AccountMetrics, AlertsFiring, exposition


class HttpListenerError(Exception):
    """The listener cannot start; the message is the one line the operator sees."""


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HttpListenerError(f"--http {address!r}: expected HOST:PORT or off, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """HTTPS with the server's certificate chain and key (PEM files)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise HttpListenerError(f"--http: cannot use --tls-cert {cert} / --tls-key {key} ({e})") from None
    return context


class HttpListener:
    def __init__(
        self,
        address: str,
        store: ServedStore,
        alerting: AlertsFiring | None,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        services: ConsoleServices | None = None,
    ) -> None:
        self.address = address
        self.port = 0
        self.store = store
        self.alerting = alerting
        self.tls = tls_cert is not None and tls_key is not None
        self._tls_files = (tls_cert, tls_key)
        self.meters = meters_of(store.log)
        self.gate = store.gate if store.gate is not None else Gate(store.keys)
        self._runner: web.AppRunner | None = None
        self._counting = False
        self.console = (
            Console(self.gate, store.keys, services, tls=self.tls) if services is not None else None
        )
        """The web console's pages, when the server hands over the servicers they call."""

    async def start(self) -> None:
        host, port = parse_address(self.address)
        cert, key = self._tls_files
        context = tls_context(cert, key) if cert is not None and key is not None else None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        if self.console is not None:
            self.console.add_routes(app)
        # A scrape in flight at shutdown gets a moment to finish; idle keep-alive connections close at once.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=context)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise HttpListenerError(f"--http {self.address}: cannot bind ({e.strerror or e})") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self.store.log.writable:
            self.store.log.add_commit_listener(self.meters.appended.committed)
            self._counting = True

    async def stop(self) -> None:
        if self._counting:
            self.store.log.remove_commit_listener(self.meters.appended.committed)
            self._counting = False
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            caller = metrics_caller(self.gate, request.headers.get("Authorization"))
        except Refusal as refused:
            return web.Response(status=refused.status, text=refused.reason + "\n", headers=refused.headers)
        metrics = AccountMetrics(
            caller.account,
            self.meters,
            self.store.log,
            self.alerting,
            self.store.rules,
            sees_audit=caller.sees_audit,
            sinks=self.store.sinks,
        )
        return web.Response(body=exposition(metrics), headers={"Content-Type": CONTENT_TYPE})
