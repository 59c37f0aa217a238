"""The HTTP listener (scaffold: replaced by the aiohttp application)."""

from __future__ import annotations

from leadtrail.server.alerts import Alerting
from leadtrail.server.served_store import ServedStore


class HttpListener:
    def __init__(self, address: str, store: ServedStore, alerting: Alerting | None) -> None:
        self.address = address
        self.port = 0
        self._store = store
        self._alerting = alerting

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
