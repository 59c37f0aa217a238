"""``leadtrail.v1.Sink`` to ``SinkSpec`` and back, checking every field on the way in.

A bad field is refused with INVALID_ARGUMENT naming it (``webhook.batch_size``,
``nats.servers[1]``, ``files.directory``), the problem and the limit; nothing is stored.
An unreachable NATS server or webhook receiver is no error here: the sink retries and
reports it in its status.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from urllib.parse import urlsplit

from leadtrail.server.config_filters import filter_message
from leadtrail.server.config_names import NAME as NAME
from leadtrail.server.config_names import check_name as check_name
from leadtrail.server.convert import ms_to_timestamp
from leadtrail.server.export import ExportShape
from leadtrail.server.parquet_columns import LeadColumnError, lead_columns
from leadtrail.server.status import ServiceError, invalid
from leadtrail.storage import EventFilter, ValidationError
from leadtrail.v1 import event_pb2, query_pb2, sinks_pb2

from .model import (
    FILES_DEFAULT_ROTATE_EVENTS,
    FILES_DEFAULT_ROTATE_SECONDS,
    FILES_MAX_ROTATE_EVENTS,
    FILES_MAX_ROTATE_SECONDS,
    NATS_DEFAULT_DUPLICATE_WINDOW_S,
    NATS_DEFAULT_PREFIX,
    NATS_DEFAULT_REPLICAS,
    NATS_MAX_REPLICAS,
    NATS_MAX_SERVERS,
    WEBHOOK_DEFAULT_BATCH,
    WEBHOOK_DEFAULT_MAX_WAIT_MS,
    WEBHOOK_MAX_BATCH,
    WEBHOOK_MAX_WAIT_MS,
    FileFormat,
    FilesSpec,
    NatsSpec,
    SinkSpec,
    TargetSpec,
    WebhookSpec,
)

MAX_URL_CHARS = 2048
MAX_SECRET_CHARS = 256
MAX_DIRECTORY_CHARS = 1024
MAX_FIELDS = 200
NATS_MAX_DUPLICATE_WINDOW_S = 7 * 24 * 3600
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
SUBJECT_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")
DIRECTORY_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


def sink_from_message(
    msg: sinks_pb2.Sink,
    sink_filter: EventFilter,
    now_ms: int,
    last_position: int,
    files_roots: Sequence[str] = (),
) -> tuple[SinkSpec, bool]:
    """The sink ``msg`` describes, its events chosen by ``sink_filter`` (the caller's
    ``msg.filter``, see ``translated_filter``), set now on a log whose last position is
    ``last_position``; and whether ``msg`` chose where it starts. A files target's absolute
    directory must lie under one of ``files_roots``. Raises ``invalid``."""
    name = check_name(msg.name)
    start = msg.WhichOneof("start")
    start_after = last_position
    if start == "from_start":
        start_after = 0
    elif start == "after_position":
        if msg.after_position > last_position:
            raise invalid(
                "after_position",
                f"{msg.after_position} is past the log's last position ({last_position})",
            )
        start_after = msg.after_position
    target = _target(msg, files_roots)
    return (
        SinkSpec(
            account_id=sink_filter.account_id,
            name=name,
            filter=sink_filter,
            target=target,
            masked=msg.masked,
            start_after=start_after,
            set_at_ms=now_ms,
        ),
        start is not None,
    )


def translated_filter(
    convert: Callable[[event_pb2.EventFilter], EventFilter], message: event_pb2.EventFilter
) -> EventFilter:
    """``convert(message)`` (the caller's filter conversion) with its errors as INVALID_ARGUMENT."""
    try:
        return convert(message)
    except ValidationError as e:
        raise invalid(e.field, e.rule) from None


def keeping_secret(sink: SinkSpec, previous: SinkSpec | None) -> SinkSpec:
    """Set again without a secret for the same webhook URL, a sink keeps its stored secret
    (the secret is write-only: a client changing the batch size cannot send it back)."""
    target, held = sink.target, previous.target if previous is not None else None
    if (
        isinstance(target, WebhookSpec)
        and isinstance(held, WebhookSpec)
        and not target.secret
        and target.url == held.url
    ):
        return replace(sink, target=replace(target, secret=held.secret))
    return sink


def _target(msg: sinks_pb2.Sink, files_roots: Sequence[str]) -> TargetSpec:
    kind = msg.WhichOneof("target")
    if kind == "nats":
        return _nats(msg.nats)
    if kind == "webhook":
        return _webhook(msg.webhook)
    if kind == "files":
        return _files(msg.files, files_roots)
    raise invalid("target", "required: one of nats, webhook or files")


def _nats(t: sinks_pb2.NatsTarget) -> NatsSpec:
    if not t.servers:
        raise invalid("nats.servers", "required: at least one nats://host:port URL")
    if len(t.servers) > NATS_MAX_SERVERS:
        raise invalid("nats.servers", f"{len(t.servers)} servers, over the limit of {NATS_MAX_SERVERS}")
    for i, url in enumerate(t.servers):
        _url(f"nats.servers[{i}]", url, ("nats",), "a nats://host:port URL")
    if not t.stream:
        raise invalid("nats.stream", "required: the JetStream stream's name")
    if STREAM_NAME.fullmatch(t.stream) is None:
        raise invalid("nats.stream", f"{t.stream[:80]!r} must match [A-Za-z0-9_-]{{1,64}}")
    prefix = t.subject_prefix or NATS_DEFAULT_PREFIX
    if SUBJECT_PREFIX.fullmatch(prefix) is None:
        raise invalid(
            "nats.subject_prefix",
            f"{prefix[:80]!r} must be 1 to 8 dot-separated tokens of [A-Za-z0-9_-] (no wildcards)",
        )
    replicas = t.replicas or NATS_DEFAULT_REPLICAS
    if not 1 <= replicas <= NATS_MAX_REPLICAS:
        raise invalid("nats.replicas", f"{replicas} is out of range 1..{NATS_MAX_REPLICAS}")
    window = t.duplicate_window_s or NATS_DEFAULT_DUPLICATE_WINDOW_S
    if window > NATS_MAX_DUPLICATE_WINDOW_S:
        raise invalid(
            "nats.duplicate_window_s", f"{window} is over the limit of {NATS_MAX_DUPLICATE_WINDOW_S} (7 days)"
        )
    return NatsSpec(
        servers=tuple(t.servers),
        stream=t.stream,
        subject_prefix=prefix,
        replicas=replicas,
        duplicate_window_s=window,
    )


def _webhook(t: sinks_pb2.WebhookTarget) -> WebhookSpec:
    if not t.url:
        raise invalid("webhook.url", "required: an http:// or https:// URL")
    _url("webhook.url", t.url, ("http", "https"), "an http:// or https:// URL with a host")
    if len(t.secret) > MAX_SECRET_CHARS:
        raise invalid("webhook.secret", f"{len(t.secret)} characters, over the limit of {MAX_SECRET_CHARS}")
    batch = t.batch_size or WEBHOOK_DEFAULT_BATCH
    if batch > WEBHOOK_MAX_BATCH:
        raise invalid("webhook.batch_size", f"{batch} is over the limit of {WEBHOOK_MAX_BATCH:,}")
    wait = t.max_wait_ms or WEBHOOK_DEFAULT_MAX_WAIT_MS
    if wait > WEBHOOK_MAX_WAIT_MS:
        raise invalid("webhook.max_wait_ms", f"{wait} is over the limit of {WEBHOOK_MAX_WAIT_MS:,}")
    return WebhookSpec(url=t.url, secret=t.secret, batch_size=batch, max_wait_ms=wait)


def _files(t: sinks_pb2.FilesTarget, files_roots: Sequence[str]) -> FilesSpec:
    directory = check_directory(t.directory, files_roots)
    if t.format == query_pb2.EXPORT_FORMAT_UNSPECIFIED:
        file_format = FileFormat.JSONL
    elif t.format in tuple(int(f) for f in FileFormat):
        file_format = FileFormat(t.format)
    else:
        raise invalid(
            "files.format",
            f"{t.format} is not EXPORT_FORMAT_JSONL, EXPORT_FORMAT_CSV or EXPORT_FORMAT_PARQUET",
        )
    rotate_events = t.rotate_events or FILES_DEFAULT_ROTATE_EVENTS
    if rotate_events > FILES_MAX_ROTATE_EVENTS:
        raise invalid(
            "files.rotate_events", f"{rotate_events} is over the limit of {FILES_MAX_ROTATE_EVENTS:,}"
        )
    rotate_seconds = t.rotate_seconds or FILES_DEFAULT_ROTATE_SECONDS
    if rotate_seconds > FILES_MAX_ROTATE_SECONDS:
        raise invalid(
            "files.rotate_seconds", f"{rotate_seconds} is over the limit of {FILES_MAX_ROTATE_SECONDS:,}"
        )
    fields = tuple(t.fields)
    if len(fields) > MAX_FIELDS:
        raise invalid("files.fields", f"{len(fields)} fields, over the limit of {MAX_FIELDS}")
    if file_format is FileFormat.CSV:
        try:
            ExportShape.of(query_pb2.ExportRequest(format=query_pb2.EXPORT_FORMAT_CSV, fields=fields))
        except ServiceError as e:
            raise invalid("files." + str(e).partition(": ")[0], str(e).partition(": ")[2]) from None
    elif file_format is FileFormat.PARQUET:
        try:
            lead_columns(fields)
        except LeadColumnError as e:
            where = "files.fields" if e.index is None else f"files.fields[{e.index}]"
            raise invalid(where, str(e)) from None
    elif fields:
        raise invalid("files.fields", "chooses CSV or Parquet columns; JSONL files hold whole events")
    return FilesSpec(
        directory=directory,
        format=file_format,
        rotate_events=rotate_events,
        rotate_seconds=rotate_seconds,
        fields=fields,
    )


def check_directory(directory: str, files_roots: Sequence[str] = ()) -> str:
    """A files target's directory: relative to the account's sink file root, each part a
    plain name (no ``..``, no ``.``, no empty part); or, when the server was given roots
    (``serve --sink-files-root``), an absolute path under one of them, by the same rules."""
    if not directory:
        raise invalid("files.directory", "required: a path relative to the account's sink file root")
    if len(directory) > MAX_DIRECTORY_CHARS:
        raise invalid(
            "files.directory", f"{len(directory)} characters, over the limit of {MAX_DIRECTORY_CHARS}"
        )
    absolute = directory.startswith("/")
    if absolute and not files_roots:
        raise invalid(
            "files.directory",
            f"{directory[:80]!r} is absolute; give a path relative to the account's sink file root",
        )
    parts = directory.strip("/").split("/")
    for part in parts:
        if part in ("..", "."):
            raise invalid("files.directory", f"{directory[:80]!r} leaves its root or names it by {part!r}")
        if DIRECTORY_PART.fullmatch(part) is None:
            raise invalid(
                "files.directory",
                f"{directory[:80]!r}: each part must match [A-Za-z0-9_][A-Za-z0-9._-]* (no empty part)",
            )
    shown = "/".join(parts)
    if not absolute:
        return shown
    shown = "/" + shown
    for root in files_roots:
        root = root.rstrip("/") or "/"
        if shown != root and shown.startswith(root.rstrip("/") + "/"):
            return shown
    raise invalid(
        "files.directory",
        f"{directory[:80]!r} is not under a directory the server allows (serve --sink-files-root): "
        "give a path under one, or relative to the account's sink file root",
    )


def _url(field: str, url: str, schemes: tuple[str, ...], what: str) -> None:
    if len(url) > MAX_URL_CHARS:
        raise invalid(field, f"{len(url)} characters, over the limit of {MAX_URL_CHARS}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise invalid(field, f"{url[:80]!r} holds spaces or control characters")
    problem = f"{url[:80]!r} is not {what}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise invalid(field, problem) from None
    if parts.scheme not in schemes or not parts.hostname:
        raise invalid(field, problem)


# --------------------------------------------------------------------------- spec -> wire


def message_from_sink(sink: SinkSpec) -> sinks_pb2.Sink:
    """The sink as answers show it: never a webhook secret, only whether one is held."""
    message = sinks_pb2.Sink(name=sink.name, filter=filter_message(sink.filter), masked=sink.masked)
    target = sink.target
    match target:
        case NatsSpec():
            message.nats.CopyFrom(
                sinks_pb2.NatsTarget(
                    servers=target.servers,
                    stream=target.stream,
                    subject_prefix=target.subject_prefix,
                    replicas=target.replicas,
                    duplicate_window_s=target.duplicate_window_s,
                )
            )
        case WebhookSpec():
            message.webhook.CopyFrom(
                sinks_pb2.WebhookTarget(
                    url=target.url,
                    batch_size=target.batch_size,
                    max_wait_ms=target.max_wait_ms,
                    secret_set=bool(target.secret),
                )
            )
        case FilesSpec():
            message.files.CopyFrom(
                sinks_pb2.FilesTarget(
                    directory=target.directory,
                    format=int(target.format),  # type: ignore[arg-type]
                    rotate_events=target.rotate_events,
                    rotate_seconds=target.rotate_seconds,
                    fields=target.fields,
                )
            )
    ms_to_timestamp(sink.set_at_ms, message.set_at)
    return message
