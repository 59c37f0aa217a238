"""The running sinks of the writer process: one durable consumer per sink.

A sink set is started (or restarted, replaced), a deleted one stopped and its position
removed; targets are built by kind (``nats``, ``webhook``, ``files``). The NATS and
files targets are imported by name when first built, so that a server without one of
them still runs every other sink (the sink reports the missing kind as its error).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from leadtrail.server.consumers import ConsumerPosition, DurableConsumer
from leadtrail.server.served_store import ServedStore

from .book import SinkBook
from .model import FilesSpec, NatsSpec, SinkSpec, WebhookSpec
from .sink import STOPPED, SinkPolicy, SinkRun
from .target import Target, TargetError
from .webhook import WebhookTarget

log = logging.getLogger("leadtrail.server")

FILES_DIRECTORY = "sink-files"
"""``<data>/sink-files/<account>/``: the root of an account's files targets."""
STOP_GRACE_S = 5.0


def files_root(data_dir: str, account_id: str) -> str:
    return os.path.join(data_dir, FILES_DIRECTORY, account_id)


def make_target(spec: SinkSpec, data_dir: str, policy: SinkPolicy) -> Target:
    """The target of ``spec``; TargetError when its kind is not in this build."""
    target = spec.target
    if isinstance(target, WebhookSpec):
        return WebhookTarget(replace(target, timeout_s=policy.timeout_s), spec.name)
    if isinstance(target, NatsSpec):
        cls = _target_class("nats", "NatsTarget")
        built: Target = cls(target, spec.account_id)
        return built
    if isinstance(target, FilesSpec):
        cls = _target_class("files", "FilesTarget")
        # An absolute directory was checked to lie under a root the operator allows (rules.py).
        built = cls(target, os.path.join(files_root(data_dir, spec.account_id), target.directory))
        return built
    raise TargetError(f"unknown target {target!r}")


def _target_class(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(f"leadtrail.server.sinks.{module}"), name)
    except (ImportError, AttributeError) as e:
        raise TargetError(f"{module} targets are not available in this server ({e})") from None


@dataclass
class Running:
    spec: SinkSpec
    run: SinkRun
    consumer: DurableConsumer


@dataclass(frozen=True, slots=True)
class SinkState:
    """Where a sink is (``GetSinkStatus``, ``/metrics``, ``stats``)."""

    name: str
    kind: str
    delivered_position: int
    lag_events: int
    delivered_total: int
    state: str
    last_error: str
    last_error_at_ms: int


class Sinks:
    """Every account's sinks at work (the process that owns the writer only)."""

    def __init__(
        self,
        store: ServedStore,
        book: SinkBook,
        data_dir: str,
        policy: SinkPolicy,
        files_roots: Sequence[str] = (),
    ) -> None:
        self._store = store
        self.book = book
        self.files_roots = tuple(os.path.abspath(root) for root in files_roots)
        """Where files targets may be written besides the accounts' own roots (absolute paths)."""
        self._data_dir = data_dir
        self._policy = policy
        self._running: dict[tuple[str, str], Running] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            for spec in self.book.sinks():
                await self._start(spec)

    async def stop(self) -> None:
        async with self._lock:
            for key in list(self._running):
                await self._stop(key)

    async def replace(self, spec: SinkSpec, restart: bool) -> None:
        """Run ``spec`` in place of the sink of its name (if any): from its stored position,
        or from ``spec.start_after`` when ``restart`` (the request chose where it starts)."""
        async with self._lock:
            await self._stop(spec.key)
            if restart:
                await self._store.run(self._position(spec).remove)
            await self._start(spec)

    async def remove(self, account_id: str, name: str, consumer_name: str) -> None:
        async with self._lock:
            await self._stop((account_id, name))
            await self._store.run(ConsumerPosition(self._store.log.path, consumer_name).remove)

    def status(self, account_id: str, name: str) -> SinkState | None:
        running = self._running.get((account_id, name))
        if running is None:
            return None
        run, consumer = running.run, running.consumer
        delivered = consumer.settled_position
        return SinkState(
            name=name,
            kind=running.spec.target.kind.value,
            delivered_position=delivered,
            lag_events=max(0, self._store.log.last_position - delivered),
            delivered_total=run.delivered_total,
            state=run.state_name if consumer.running else STOPPED,
            last_error=run.last_error,
            last_error_at_ms=run.last_error_at_ms,
        )

    def statuses(self, account_id: str) -> list[SinkState]:
        found = (self.status(*key) for key in sorted(self._running) if key[0] == account_id)
        return [s for s in found if s is not None]

    def _position(self, spec: SinkSpec) -> ConsumerPosition:
        return ConsumerPosition(self._store.log.path, spec.consumer_name)

    async def _start(self, spec: SinkSpec) -> None:
        data_dir, policy = self._data_dir, self._policy
        run = SinkRun(spec, lambda: make_target(spec, data_dir, policy), policy)
        store = self._store
        consumer = DurableConsumer(
            self._position(spec),
            run,
            log=store.log,
            feed=store.feed,
            reads=store.reads,
            new_start=spec.start_after,
            holding=run.pending_from,
        )
        await consumer.start()
        self._running[spec.key] = Running(spec, run, consumer)

    async def _stop(self, key: tuple[str, str]) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        await running.run.stop()
        await running.consumer.stop(STOP_GRACE_S)
        try:
            await running.run.close()
        except Exception as e:  # a target that fails to let go must not keep the others running
            log.warning("sink %s: closing its target: %s", running.spec.name, e)
