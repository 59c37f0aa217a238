"""Webhook deliveries of alert events (scaffold: replaced by the deliverer)."""

from __future__ import annotations

from leadtrail.server.served_store import ServedStore

from .rulebook import RuleBook


class Webhooks:
    def __init__(self, store: ServedStore, rules: RuleBook) -> None:
        self._store = store
        self._rules = rules

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
