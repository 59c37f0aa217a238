"""The sinks of every account: ``<data>/sinks/sinks.json``.

One file for all accounts, replaced atomically on every change (sinks change rarely;
the running sinks are made from memory). It holds webhook secrets, so it is created
readable by the server's user alone (0600). Listeners hear of every change on the
thread that made it (the event loop), in order. A crash or a failed change leaves the
old file or the new one (``configbook``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from leadtrail.server.config_filters import filter_from_json, filter_json
from leadtrail.server.configbook import FORMAT as FORMAT
from leadtrail.server.configbook import TMP_SUFFIX as TMP_SUFFIX
from leadtrail.server.configbook import BookForm, ConfigFile, ConfigFileError, NamedBook
from leadtrail.storage import Files

from .model import FileFormat, FilesSpec, NatsSpec, SinkSpec, TargetSpec, WebhookSpec

DIRECTORY = "sinks"
FILE = "sinks.json"
MAX_SINKS_PER_ACCOUNT = 50
"""Each sink is a consumer reading the whole log: the bound of the reading the server does."""


class SinkBookError(ConfigFileError):
    """The sinks file cannot be read; the message names the file and the problem."""


class TooManySinksError(Exception):
    """An account already holds ``MAX_SINKS_PER_ACCOUNT`` sinks and a new one was set."""


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
        "filter": filter_json(sink.filter),
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
        filter=filter_from_json(account, raw["filter"]),
        target=_target_from(raw["target"]),
        masked=bool(raw.get("masked", False)),
        start_after=raw.get("start_after", 0),
        set_at_ms=raw.get("set_at_ms", 0),
        revision=raw.get("revision", 0),
    )


Listener = Callable[[list[SinkSpec]], None]


_FORM: BookForm[SinkSpec] = BookForm(
    "sinks", sink_json, sink_from, MAX_SINKS_PER_ACCOUNT, TooManySinksError, "sinks"
).numbered()


class SinkBook(NamedBook[SinkSpec]):
    """Every account's sinks, kept in memory and in one file. A change is made on a thread;
    ``notify`` tells the listeners on the event loop afterwards."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, FILE)
        # The file holds webhook secrets: written 0600 from its first byte.
        super().__init__(ConfigFile(self.path, files or Files(), mode=0o600, error=SinkBookError), _FORM)

    def sinks(self, account_id: str | None = None) -> list[SinkSpec]:
        """The sinks of ``account_id`` (of every account when None), by account and name."""
        return self.entries(account_id)
