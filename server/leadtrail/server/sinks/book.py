"""The sinks of every account: ``<data>/sinks/sinks.json``.

One file for all accounts, replaced atomically on every change (sinks change rarely;
the running sinks are made from memory). It holds webhook secrets, so it is created
readable by the server's user alone (0600). Listeners hear of every change on the
thread that made it (the event loop), in order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from leadtrail.storage import EventFilter, Files, Outcome

from .model import FileFormat, FilesSpec, NatsSpec, SinkSpec, TargetSpec, WebhookSpec

DIRECTORY = "sinks"
FILE = "sinks.json"
FORMAT = 1
MAX_SINKS_PER_ACCOUNT = 50
"""Each sink is a consumer reading the whole log: the bound of the reading the server does."""
TMP_SUFFIX = ".tmp"


class SinkBookError(Exception):
    """The sinks file cannot be read; the message names the file and the problem."""


class TooManySinksError(Exception):
    """An account already holds ``MAX_SINKS_PER_ACCOUNT`` sinks and a new one was set."""


def _filter_json(f: EventFilter) -> dict[str, Any]:
    return {
        "types": list(f.types),
        "lead_id": f.lead_id,
        "flow_id": f.flow_id,
        "entity_id": f.entity_id,
        "outcomes": [int(o) for o in f.outcomes],
        "start_ms": f.start_ms,
        "end_ms": f.end_ms,
        "entity_scope": list(f.entity_scope),
        "flow_scope": list(f.flow_scope),
        "hidden_types": list(f.hidden_types),
    }


def _filter_from(account_id: str, raw: dict[str, Any]) -> EventFilter:
    return EventFilter(
        account_id=account_id,
        types=tuple(raw.get("types", ())),
        lead_id=raw.get("lead_id", ""),
        flow_id=raw.get("flow_id", ""),
        entity_id=raw.get("entity_id", ""),
        outcomes=tuple(Outcome(o) for o in raw.get("outcomes", ())),
        start_ms=raw.get("start_ms"),
        end_ms=raw.get("end_ms"),
        entity_scope=tuple(raw.get("entity_scope", ())),
        flow_scope=tuple(raw.get("flow_scope", ())),
        hidden_types=tuple(raw.get("hidden_types", ())),
    )


def _target_json(target: TargetSpec) -> dict[str, Any]:
    match target:
        case NatsSpec():
            return {
                "kind": target.kind.value,
                "servers": list(target.servers),
                "stream": target.stream,
                "subject_prefix": target.subject_prefix,
                "replicas": target.replicas,
                "duplicate_window_s": target.duplicate_window_s,
            }
        case WebhookSpec():
            return {
                "kind": target.kind.value,
                "url": target.url,
                "secret": target.secret,
                "batch_size": target.batch_size,
                "max_wait_ms": target.max_wait_ms,
            }
        case FilesSpec():
            return {
                "kind": target.kind.value,
                "directory": target.directory,
                "format": target.format.suffix,
                "rotate_events": target.rotate_events,
                "rotate_seconds": target.rotate_seconds,
                "fields": list(target.fields),
            }


def _target_from(raw: dict[str, Any]) -> TargetSpec:
    kind = raw["kind"]
    if kind == "nats":
        return NatsSpec(
            servers=tuple(raw["servers"]),
            stream=raw["stream"],
            subject_prefix=raw["subject_prefix"],
            replicas=raw["replicas"],
            duplicate_window_s=raw["duplicate_window_s"],
        )
    if kind == "webhook":
        return WebhookSpec(
            url=raw["url"], secret=raw["secret"], batch_size=raw["batch_size"], max_wait_ms=raw["max_wait_ms"]
        )
    if kind == "files":
        return FilesSpec(
            directory=raw["directory"],
            format=FileFormat[raw["format"].upper()],
            rotate_events=raw["rotate_events"],
            rotate_seconds=raw["rotate_seconds"],
            fields=tuple(raw["fields"]),
        )
    raise ValueError(f"target kind {kind!r} is not nats, webhook or files")


def sink_json(sink: SinkSpec) -> dict[str, Any]:
    return {
        "account_id": sink.account_id,
        "name": sink.name,
        "filter": _filter_json(sink.filter),
        "target": _target_json(sink.target),
        "masked": sink.masked,
        "start_after": sink.start_after,
        "set_at_ms": sink.set_at_ms,
        "revision": sink.revision,
    }


def sink_from(raw: dict[str, Any]) -> SinkSpec:
    account = raw["account_id"]
    return SinkSpec(
        account_id=account,
        name=raw["name"],
        filter=_filter_from(account, raw["filter"]),
        target=_target_from(raw["target"]),
        masked=bool(raw.get("masked", False)),
        start_after=raw.get("start_after", 0),
        set_at_ms=raw.get("set_at_ms", 0),
        revision=raw.get("revision", 0),
    )


Listener = Callable[[list[SinkSpec]], None]


class SinkBook:
    """Every account's sinks, kept in memory and in one file."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, FILE)
        self._files = files or Files()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._revision = 0
        """The last revision given (kept in the file, so it never goes back)."""
        self._sinks: dict[tuple[str, str], SinkSpec] = self._load()

    def _load(self) -> dict[tuple[str, str], SinkSpec]:
        try:
            with open(self.path, "rb") as f:
                raw = orjson.loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SinkBookError(f"{self.path}: {e}") from None
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            sinks = [sink_from(s) for s in raw["sinks"]]
            revision = raw.get("revision", 0)
            if type(revision) is not int or revision < 0:
                raise ValueError(f"revision {revision!r} is not a revision")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SinkBookError(f"{self.path}: {e}") from None
        self._revision = max([revision, *(s.revision for s in sinks)])
        return {s.key: s for s in sinks}

    def sinks(self, account_id: str | None = None) -> list[SinkSpec]:
        """The sinks of ``account_id`` (of every account when None), by account and name."""
        chosen = (s for s in self._sinks.values() if account_id is None or s.account_id == account_id)
        return sorted(chosen, key=lambda s: s.key)

    def get(self, account_id: str, name: str) -> SinkSpec | None:
        return self._sinks.get((account_id, name))

    def set(self, sink: SinkSpec) -> SinkSpec:
        """Create or replace ``sink`` (by account and name), durably (on a thread: call
        ``notify`` on the event loop afterwards)."""
        with self._lock:
            if sink.key not in self._sinks:
                held = sum(1 for key in self._sinks if key[0] == sink.account_id)
                if held >= MAX_SINKS_PER_ACCOUNT:
                    raise TooManySinksError(
                        f"account {sink.account_id!r} holds {held} sinks, the most it may hold "
                        f"({MAX_SINKS_PER_ACCOUNT}); delete one first"
                    )
            sink = replace(sink, revision=self._revision + 1)
            sinks = dict(self._sinks)
            sinks[sink.key] = sink
            self._write(sinks, sink.revision)
        return sink

    def delete(self, account_id: str, name: str) -> bool:
        """False when the account has no sink of that name."""
        with self._lock:
            if (account_id, name) not in self._sinks:
                return False
            sinks = dict(self._sinks)
            del sinks[(account_id, name)]
            self._write(sinks, self._revision)
        return True

    def notify(self) -> None:
        """Tell the listeners the sinks as they are now."""
        sinks = self.sinks()
        for listener in self._listeners:
            listener(sinks)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _write(self, sinks: dict[tuple[str, str], SinkSpec], revision: int) -> None:
        os.makedirs(self.directory, exist_ok=True)
        ordered = sorted(sinks.values(), key=lambda s: s.key)
        data = orjson.dumps(
            {"format": FORMAT, "revision": revision, "sinks": [sink_json(s) for s in ordered]},
            option=orjson.OPT_INDENT_2,
        )
        # The file holds webhook secrets: written 0600 from its first byte.
        self._files.write_file_atomically(self.path, data, TMP_SUFFIX, mode=0o600)
        self._sinks = sinks
        self._revision = revision
