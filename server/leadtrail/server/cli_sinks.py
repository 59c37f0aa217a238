"""``leadtrail sinks set|list|rm|status``: a running server's sinks, through the SDK.

Imported only when one of them runs (as ``cli_remote``, whose connection and error
lines it shares). A webhook secret is sent, never printed: sinks read back say only
whether one is held.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from leadtrail.client import EventFilter, FilesTarget, NatsTarget, Sink, SinkStatus, WebhookTarget

from .cli_errors import UsageError
from .cli_listing import filter_json, filter_text, print_listing
from .cli_output import dumps, iso_ms
from .cli_remote import connect, filter_kwargs

SECRET_VARIABLE = "LEADTRAIL_SINK_SECRET"
_NATS_FLAGS = ("stream", "subject_prefix", "replicas", "duplicate_window")
_WEBHOOK_FLAGS = ("secret", "batch_size", "max_wait")
_FILES_FLAGS = ("file_format", "rotate_events", "rotate_seconds", "field")


# --------------------------------------------------------------------------- set


def sink_of(args: argparse.Namespace) -> Sink:
    """The sink the ``sinks set`` flags describe."""
    chosen = [flag for flag in ("nats", "webhook", "files") if getattr(args, flag)]
    if len(chosen) != 1:
        raise UsageError("give one target: --nats URL (with --stream), --webhook URL or --files DIR")
    kind = chosen[0]
    for other, flags in (("nats", _NATS_FLAGS), ("webhook", _WEBHOOK_FLAGS), ("files", _FILES_FLAGS)):
        given = [_flag(name) for name in flags if getattr(args, name) not in (None, [])]
        if other != kind and given:
            raise UsageError(f"{', '.join(given)} belong to a --{other} target, not --{kind}")
    target: NatsTarget | WebhookTarget | FilesTarget
    if kind == "nats":
        if not args.stream:
            raise UsageError("--nats needs --stream NAME")
        target = NatsTarget(
            tuple(args.nats),
            args.stream,
            args.subject_prefix or "",
            args.replicas or 0,
            args.duplicate_window or 0,
        )
    elif kind == "webhook":
        target = WebhookTarget(
            args.webhook,
            secret=args.secret or os.environ.get(SECRET_VARIABLE, ""),
            batch_size=args.batch_size or 0,
            max_wait_ms=args.max_wait or 0,
        )
    else:
        target = FilesTarget(
            args.files,
            args.file_format or "jsonl",
            args.rotate_events or 0,
            args.rotate_seconds or 0,
            tuple(args.field or ()),
        )
    start: str | int | None = None
    if args.from_start:
        start = "start"
    elif args.from_end:
        start = "end"
    elif args.after is not None:
        start = args.after
    return Sink(args.name, target, EventFilter(**filter_kwargs(args)), start=start, masked=args.masked)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cmd_sinks_set(args: argparse.Namespace) -> int:
    sink = sink_of(args)
    with connect(args) as client:
        stored = client.set_sink(sink)
    print(f"sink {stored.name} set: {describe(stored)}")
    return 0


# --------------------------------------------------------------------------- list, rm


def describe(sink: Sink) -> str:
    """One line an operator reads: what goes where."""
    t = sink.target
    if isinstance(t, NatsTarget):
        prefix = t.subject_prefix or "leadtrail"
        where = f"NATS stream {t.stream} ({prefix}.<account>.<type>) at {', '.join(t.servers)}"
    elif isinstance(t, WebhookTarget):
        signed = "signed" if t.secret_set else "unsigned"
        where = f"webhook {_origin(t.url)} ({signed}, {t.batch_size} a POST)"
    else:
        where = f"{t.format} files in {t.directory} ({t.rotate_events} events or {t.rotate_seconds} s a file)"
    what = _filter_text(sink.filter)
    return f"{what}{' masked' if sink.masked else ''} to {where}"


def _origin(url: str) -> str:
    """The URL without its path, query or userinfo: those often hold a token."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def _filter_text(f: EventFilter) -> str:
    return filter_text(f, order=("flow", "entity", "lead"), joiner=" or ")


def sink_json(sink: Sink) -> dict[str, Any]:
    """A sink as JSON, API.md field names; never a webhook secret (the server sends none)."""
    t = sink.target
    target: dict[str, Any]
    if isinstance(t, NatsTarget):
        target = {
            "nats": {
                "servers": list(t.servers),
                "stream": t.stream,
                "subject_prefix": t.subject_prefix,
                "replicas": t.replicas,
                "duplicate_window_s": t.duplicate_window_s,
            }
        }
    elif isinstance(t, WebhookTarget):
        target = {
            "webhook": {
                "url": t.url,
                "batch_size": t.batch_size,
                "max_wait_ms": t.max_wait_ms,
                "secret_set": t.secret_set,
            }
        }
    else:
        target = {
            "files": {
                "directory": t.directory,
                "format": t.format,
                "rotate_events": t.rotate_events,
                "rotate_seconds": t.rotate_seconds,
                "fields": list(t.fields),
            }
        }
    return {
        "name": sink.name,
        "filter": filter_json(sink.filter),
        "masked": sink.masked,
        **target,
        "set_at": iso_ms(sink.set_at),
    }


def cmd_sinks_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        sinks = client.list_sinks()
    print_listing(args.format, sinks, sink_json, "no sinks", ("NAME", "SINK", "SET AT"), _sink_row)
    return 0


def _sink_row(x: Sink) -> tuple[str, ...]:
    return (x.name, describe(x), iso_ms(x.set_at))


def cmd_sinks_rm(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_sink(args.name)
    print(f"sink {args.name} deleted")
    return 0


# --------------------------------------------------------------------------- status


def status_json(status: SinkStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "state": status.state,
        "delivered_position": status.delivered_position,
        "lag_events": status.lag_events,
        "delivered_total": status.delivered_total,
        "last_error": status.last_error,
        "last_error_at": iso_ms(status.last_error_at),
    }


def cmd_sinks_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        names = [args.name] if args.name else [s.name for s in client.list_sinks()]
        statuses = [client.get_sink_status(name) for name in names]
    if args.format == "json" and args.name:
        sys.stdout.buffer.write(dumps(status_json(statuses[0]), indent=True) + b"\n")
        return 0
    header = ("NAME", "STATE", "DELIVERED TO", "LAG", "DELIVERED", "LAST ERROR")
    print_listing(args.format, statuses, status_json, "no sinks", header, _status_row, right=(2, 3, 4))
    return 0


def _status_row(s: SinkStatus) -> tuple[str, ...]:
    return (
        s.name,
        s.state,
        f"{s.delivered_position:,}",
        f"{s.lag_events:,}",
        f"{s.delivered_total:,}",
        f"{iso_ms(s.last_error_at)} {s.last_error}" if s.last_error else "-",
    )
