"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1:0, run on a thread of
its own, that records every POST and answers what the test planned (a status, or a hang).
Loaded once by ``tests/conftest.py`` as the module ``webhook_receiver``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

HANG = -1
"""A planned answer: hold the request without answering."""


# -- the receiver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1:0 that records each POST and answers ``plan(index,
    request)`` (a status, or HANG): a thread runs its event loop."""

    def __init__(self, plan: Callable[[int, Received], int]) -> None:
        self.plan = plan
        self.requests: list[Received] = []
        self.most_at_once = 0
        """The most requests the receiver held at the same time."""
        self._at_once = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> Receiver:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        assert host == "127.0.0.1"
        return int(port)

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        received = Received(request.path, dict(request.headers), await request.read())
        with self._lock:
            index = len(self.requests)
            self.requests.append(received)
            self._at_once += 1
            self.most_at_once = max(self.most_at_once, self._at_once)
        try:
            status = self.plan(index, received)
            if status == HANG:
                await asyncio.sleep(3600)
            return web.Response(status=status)
        finally:
            with self._lock:
                self._at_once -= 1

    def seen(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, until: Callable[[list[Received]], bool], timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.seen()
            if until(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not see it within {timeout} s: {seen}")
            time.sleep(0.02)
