"""Alert evaluation as a durable consumer of the log (scaffold: replaced by the evaluator)."""

from __future__ import annotations

from leadtrail.server.served_store import ServedStore

from .model import FiringAlert
from .rulebook import RuleBook


class Alerting:
    def __init__(self, store: ServedStore, rules: RuleBook) -> None:
        self._store = store
        self._rules = rules

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def firing(self, account_id: str | None = None) -> list[FiringAlert]:
        """The alerts firing now, of ``account_id`` (of every account when None)."""
        return []
