"""The ``leadtrail`` command line: its parser and ``main``.

Offline commands (``verify``, ``reindex``, ``compact``, ``dump``, ``stats --data``,
``erase --data``: ``cli_offline``; ``keys``: ``cli_keys``) open the store
directory themselves; remote ones talk to a running server through the SDK and
are imported only when used (``cli_remote``, ``demo``).

Exit status: 0 on success, 1 on a reported error (one line on stderr, no
traceback), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from leadtrail.storage import FsyncPolicy, StorageError
from leadtrail.storage.options import DEFAULT_MAX_OPEN_SEGMENTS, MAX_MAX_OPEN_SEGMENTS, MIN_MAX_OPEN_SEGMENTS

from . import cli_keys, cli_offline
from .cli_errors import CommandError, UsageError

DEFAULT_DATA = "./leadtrail-data"
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_HTTP = "127.0.0.1:8080"
MAX_BATCH = 1000
"""The server's limit of events per Append request."""
DEFAULT_WORKERS = 1
"""One process unless told otherwise (``--workers N``)."""
MAX_WORKERS = 64

Command = Callable[[argparse.Namespace], int]


def _parse_listen(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT")


def cmd_serve(args: argparse.Namespace) -> int:
    _parse_listen(args.listen)
    if args.http != "off":
        host, _, port = args.http.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UsageError(f"--http {args.http!r}: expected HOST:PORT or off")
    try:
        FsyncPolicy.parse(args.fsync)
    except (StorageError, ValueError) as e:
        raise UsageError(f"--fsync {args.fsync!r}: {e}") from None
    # Imported here: the offline commands must not need the gRPC stack.
    from leadtrail.server import app

    if args.workers > 1:
        from leadtrail.server import workers

        config = app.ServerConfig(
            data=args.data,
            listen=args.listen,
            fsync=args.fsync,
            quarantine=args.quarantine,
            insecure=args.insecure,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            http=args.http,
            sink_files_roots=tuple(args.sink_files_root),
            operator_account=args.operator_account,
            checkpoint_interval_s=args.checkpoint_interval,
            max_open_segments=args.max_open_segments,
        )
        return workers.supervise(config, args.workers)
    return app.serve(
        data=args.data,
        listen=args.listen,
        fsync=args.fsync,
        quarantine=args.quarantine,
        insecure=args.insecure,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        http=args.http,
        sink_files_roots=tuple(args.sink_files_root),
        operator_account=args.operator_account,
        checkpoint_interval_s=args.checkpoint_interval,
        max_open_segments=args.max_open_segments,
    )


def _remote(module: str, name: str) -> Command:
    """A remote command, imported when it runs: the offline commands never load the SDK."""

    def run(args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(f"leadtrail.server.{module}"), name)
        return command(args)

    return run


def _offline_unless(remote: Callable[[argparse.Namespace], bool], offline: Command) -> Command:
    """A command that works on ``--data`` offline, or when ``remote(args)`` on a server
    (``cli_remote``'s command of the same name)."""

    def run(args: argparse.Namespace) -> int:
        return _remote("cli_remote", offline.__name__)(args) if remote(args) else offline(args)

    return run


def _verify(args: argparse.Namespace) -> int:
    """``verify``: records (and with --chain the hash chain), offline or on a server."""
    if args.chain:
        name = "cmd_verify_chain_remote" if args.server else "cmd_verify_chain"
        return _remote("cli_chain", name)(args)
    if args.checkpoint:
        args.parser.error("--checkpoint needs --chain")
    return _offline_unless(_server_given, cli_offline.cmd_verify)(args)


def _no_data(args: argparse.Namespace) -> bool:
    return args.data is None


def _server_given(args: argparse.Namespace) -> bool:
    return bool(args.server)


# --------------------------------------------------------------------------- the parser


def _positive(limit: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < 1 or (limit is not None and value > limit):
            bound = f"1..{limit}" if limit is not None else "at least 1"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({bound})")
        return value

    return parse


def _open_segments(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not MIN_MAX_OPEN_SEGMENTS <= value <= MAX_MAX_OPEN_SEGMENTS:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range ({MIN_MAX_OPEN_SEGMENTS}..{MAX_MAX_OPEN_SEGMENTS})"
        )
    return value


def _not_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range (0.05..3600 seconds)")
    return value


def _data_arg(p: argparse.ArgumentParser, default: str | None = DEFAULT_DATA) -> None:
    shown = f" (default {default})" if default else ""
    p.add_argument("--data", default=default, metavar="DIR", help=f"data directory{shown}")


def _server_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_SERVER) -> None:
    shown = f" (default {default})" if default else ""
    p.add_argument("--server", default=default, metavar="HOST:PORT", help=f"server address{shown}")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LEADTRAIL_API_KEY"),
        metavar="KEY",
        help="API key (default: the LEADTRAIL_API_KEY environment variable)",
    )
    p.add_argument("--tls-ca", metavar="FILE", help="connect over TLS, trusting this CA (PEM)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for mutual TLS (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the client certificate's key (PEM)")


def _time(text: str) -> Any:
    """A --since/--until/--now value; a bad one is reported with the command's own usage."""
    from .cli_input import parse_time  # loads the SDK: only remote commands take times

    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _outcome(text: str) -> Any:
    from .cli_input import parse_outcome

    try:
        return parse_outcome(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


GROUP_KEYS = ("type", "outcome", "flow", "entity", "hour", "day")


def _group_by(text: str) -> tuple[str, ...]:
    keys = tuple(key.strip().lower() for key in text.split(",") if key.strip())
    unknown = [key for key in keys if key not in GROUP_KEYS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"{text!r}: expected keys among {', '.join(GROUP_KEYS)}")
    return keys


_TIME_FORMS = "RFC 3339, UTC ms, or ago: 15m, 2h, 3d, today, yesterday"


def _filter_args(p: argparse.ArgumentParser, *, since: bool = True) -> None:
    g = p.add_argument_group("filter (all given parts must match)")
    g.add_argument(
        "--type", action="append", metavar="TYPE", help="event type or prefix 'recipient.*'; repeatable"
    )
    g.add_argument("--lead", metavar="LEAD_ID", help="one lead's events")
    g.add_argument("--flow", metavar="FLOW_ID", help="one flow's events")
    g.add_argument("--entity", metavar="ENTITY_ID", help="one source, buyer, service or filter")
    g.add_argument(
        "--outcome",
        action="append",
        type=_outcome,
        metavar="OUTCOME",
        help="SUCCESS, FAILURE, ERROR, SKIP or UNSPECIFIED; repeatable",
    )
    if since:
        g.add_argument(
            "--since", type=_time, metavar="TIME", help=f"from this event time, inclusive ({_TIME_FORMS})"
        )
    g.add_argument("--until", type=_time, metavar="TIME", help=f"before this event time ({_TIME_FORMS})")
    g.add_argument(
        "--where",
        action="append",
        metavar="RULE",
        help="a rule on a snapshot, details or event field: 'lead.state==TX', 'price>=20', "
        "'lead.state in TX,CA', 'reason contains cap', 'lead.phone exists' "
        "(==, !=, <, <=, >, >=, in, contains, exists, not exists); repeatable",
    )


UINT32_MAX = 2**32 - 1
ALERT_KINDS = ("match", "count", "rate", "absence", "drop", "lead_margin")
ALERT_PRESETS = ("delivery-failures", "service-down", "negative-margin", "source-quality")
"""As ``alerts.rules.PRESETS`` names them (checked by the tests)."""


def _uint32(text: str) -> int:
    value = _not_negative(text)
    if value > UINT32_MAX:
        raise argparse.ArgumentTypeError(f"{value} is over the limit of {UINT32_MAX}")
    return value


def _decimal(text: str) -> str:
    from decimal import Decimal, InvalidOperation

    try:
        finite = Decimal(text).is_finite()
    except InvalidOperation:
        finite = False
    if not finite:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number")
    return text


def _alerts_parser(sub: Any) -> None:
    p = sub.add_parser("alerts", help="alert rules of a running server, and the alerts they raise")
    alerts = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    a = alerts.add_parser(
        "set",
        help="create or replace an alert rule (admin keys)",
        description="Create or replace the rule NAME, or a preset (NAME defaults to the preset's). "
        "A webhook secret is stored write-only: setting the rule again with the same --webhook and no "
        "--webhook-secret keeps it.",
    )
    a.add_argument("name", nargs="?", metavar="NAME", help="^[a-z0-9][a-z0-9_-]{0,63}$")
    a.add_argument(
        "--preset",
        choices=ALERT_PRESETS,
        help="one of the four rules of the product description, with the thresholds the README documents",
    )
    a.add_argument("--kind", choices=ALERT_KINDS, help="what the rule watches for")
    a.add_argument(
        "--type",
        action="append",
        metavar="TYPE",
        help="counted event type or prefix 'recipient.*'; repeatable",
    )
    a.add_argument(
        "--base",
        action="append",
        metavar="TYPE",
        help="rate and drop: the events the share is of; repeatable",
    )
    a.add_argument(
        "--threshold", type=_decimal, metavar="X", help="a count, a share in (0, 1], or money (lead_margin)"
    )
    a.add_argument(
        "--window", type=_uint32, metavar="S", help="window in seconds (count, rate, absence, drop)"
    )
    a.add_argument("--min-events", type=_uint32, metavar="N", help="rate and drop: at least N base events")
    a.add_argument(
        "--baseline-windows", type=_uint32, metavar="N", help="drop: compare with the previous N windows"
    )
    a.add_argument("--group-by", choices=("entity", "flow"), help="one alert per entity or per flow")
    a.add_argument("--flow", metavar="FLOW_ID", help="count one flow's events only (base too)")
    a.add_argument("--entity", metavar="ENTITY_ID", help="count one entity's events only (base too)")
    a.add_argument(
        "--outcome",
        action="append",
        type=_outcome,
        metavar="OUTCOME",
        help="count events of this outcome only; repeatable",
    )
    a.add_argument("--webhook", metavar="URL", help="http(s):// URL notified of every firing and resolution")
    a.add_argument(
        "--webhook-secret",
        metavar="S",
        help="HMAC-SHA256 key of the webhook's signature (default with --webhook: the "
        "LEADTRAIL_WEBHOOK_SECRET environment variable); never shown again",
    )
    a.add_argument("--description", metavar="TEXT", help="shown with the rule")
    _server_args(a)
    a.set_defaults(func=_remote("cli_alerts", "cmd_alerts_set"), parser=a)
    a = alerts.add_parser("list", help="the account's alert rules (admin keys)")
    a.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(a)
    a.set_defaults(func=_remote("cli_alerts", "cmd_alerts_list"), parser=a)
    a = alerts.add_parser("rm", help="delete an alert rule (admin keys)")
    a.add_argument("name", metavar="NAME")
    _server_args(a)
    a.set_defaults(func=_remote("cli_alerts", "cmd_alerts_rm"), parser=a)
    a = alerts.add_parser("show", help="alerts firing now and recent ones, newest first (reader keys and up)")
    a.add_argument("--firing", action="store_true", help="only the alerts firing now")
    a.add_argument("--rule", metavar="NAME", help="only this rule's alerts")
    a.add_argument(
        "--limit", type=_positive(1000), default=1000, metavar="N", help="at most N alerts (default 1000)"
    )
    a.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(a)
    a.set_defaults(func=_remote("cli_alerts", "cmd_alerts_show"), parser=a)


def _sinks_parser(sub: Any) -> None:
    p = sub.add_parser("sinks", help="sinks of a running server: events handed on to NATS, webhooks, files")
    sinks = p.add_subparsers(dest="sinks_command", required=True, metavar="ACTION")
    a = sinks.add_parser(
        "set",
        help="create or replace a sink (admin keys)",
        description="Create or replace the sink NAME with one target: --nats (with --stream), --webhook or "
        "--files. A sink set again keeps its position unless --from-start, --from-end or --after is given; "
        "a new one starts from the end (what is committed from now on). A webhook secret is stored "
        "write-only: setting the sink again with the same --webhook and no secret keeps it.",
    )
    a.add_argument("name", metavar="NAME", help="^[a-z0-9][a-z0-9_-]{0,63}$")
    _filter_args(a)
    a.add_argument(
        "--masked", action="store_true", help="deliver what a reader key sees (personal data masked)"
    )
    start = a.add_mutually_exclusive_group()
    start.add_argument("--from-start", action="store_true", help="hand on the whole log first")
    start.add_argument("--from-end", action="store_true", help="hand on what is committed from now on")
    start.add_argument(
        "--after", type=_not_negative, metavar="POSITION", help="hand on the events after this"
    )
    n = a.add_argument_group("NATS JetStream target")
    n.add_argument("--nats", action="append", metavar="URL", help="nats://host:port of a server; repeatable")
    n.add_argument("--stream", metavar="NAME", help="the JetStream stream (created when missing)")
    n.add_argument("--subject-prefix", metavar="P", help="subjects <P>.<account>.<type> (default leadtrail)")
    n.add_argument("--replicas", type=_uint32, metavar="N", help="replicas of a stream it creates (1-5)")
    n.add_argument(
        "--duplicate-window", type=_uint32, metavar="S", help="the stream's duplicate window (default 7200 s)"
    )
    w = a.add_argument_group("webhook target")
    w.add_argument("--webhook", metavar="URL", help="http(s):// URL receiving POSTs of JSON arrays of events")
    w.add_argument(
        "--secret",
        metavar="S",
        help="HMAC-SHA256 key of the signature (default with --webhook: the LEADTRAIL_SINK_SECRET "
        "environment variable); never shown again",
    )
    w.add_argument("--batch-size", type=_uint32, metavar="N", help="events per POST, at most (default 100)")
    w.add_argument(
        "--max-wait", type=_uint32, metavar="MS", help="how long a batch may fill up (default 1000)"
    )
    f = a.add_argument_group("files target")
    f.add_argument("--files", metavar="DIR", help="directory under the account's sink file root")
    f.add_argument("--file-format", choices=("jsonl", "csv", "parquet"), help="default jsonl")
    f.add_argument("--rotate-events", type=_uint32, metavar="N", help="events per file (default 10000)")
    f.add_argument(
        "--rotate-seconds", type=_uint32, metavar="S", help="age of a file's first event (default 60)"
    )
    f.add_argument(
        "--field", action="append", metavar="NAME", help="CSV column or Parquet lead.<name>; repeatable"
    )
    _server_args(a)
    a.set_defaults(func=_remote("cli_sinks", "cmd_sinks_set"), parser=a)
    a = sinks.add_parser("list", help="the account's sinks (admin keys)")
    a.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(a)
    a.set_defaults(func=_remote("cli_sinks", "cmd_sinks_list"), parser=a)
    a = sinks.add_parser("rm", help="delete a sink and its position (admin keys)")
    a.add_argument("name", metavar="NAME")
    _server_args(a)
    a.set_defaults(func=_remote("cli_sinks", "cmd_sinks_rm"), parser=a)
    a = sinks.add_parser(
        "status",
        help="where a sink is: delivered position, lag, totals, state, last error (reader keys and up; "
        "every sink of the account without NAME: admin keys)",
    )
    a.add_argument("name", nargs="?", metavar="NAME")
    a.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(a)
    a.set_defaults(func=_remote("cli_sinks", "cmd_sinks_status"), parser=a)


def _duration(text: str) -> int:
    """Seconds: ``3600``, ``90s``, ``15m``, ``6h`` or ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        seconds = int(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 3600, 15m, 6h, 1d)") from None
    if not 0 <= seconds <= UINT32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0..{UINT32_MAX} seconds")
    return seconds


def _exports_parser(sub: Any) -> None:
    p = sub.add_parser("exports", help="scheduled exports of a running server: jobs and their files")
    exports = p.add_subparsers(dest="exports_command", required=True, metavar="ACTION")
    a = exports.add_parser(
        "set",
        help="create or replace an export job (admin keys)",
        description="Every --every, the server writes the matching events of the last --lookback (by "
        "event time) into a file under its data directory, kept --keep-days days.",
    )
    a.add_argument("name", metavar="NAME", help="^[a-z0-9][a-z0-9_-]{0,63}$")
    a.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl")
    a.add_argument(
        "--every", type=_duration, required=True, metavar="DURATION", help="60 s or more: 3600, 15m, 1d"
    )
    a.add_argument(
        "--lookback",
        type=_duration,
        default=0,
        metavar="DURATION",
        help="the window of each run (default --every)",
    )
    a.add_argument(
        "--keep-days", type=_uint32, default=7, metavar="N", help="days a file is kept (default 7)"
    )
    a.add_argument(
        "--fields", metavar="A,B,lead.email", help="CSV columns, or the Parquet lead.<name> columns added"
    )
    a.add_argument(
        "--masked", action="store_true", help="deliver what an analyst key sees (personal fields masked)"
    )
    _filter_args(a, since=False)
    _server_args(a)
    a.set_defaults(func=_remote("cli_exports", "cmd_exports_set"), parser=a)
    a = exports.add_parser("list", help="the account's export jobs (admin keys)")
    a.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(a)
    a.set_defaults(func=_remote("cli_exports", "cmd_exports_list"), parser=a)
    a = exports.add_parser("rm", help="delete an export job and its files (admin keys)")
    a.add_argument("name", metavar="NAME")
    _server_args(a)
    a.set_defaults(func=_remote("cli_exports", "cmd_exports_rm"), parser=a)
    a = exports.add_parser("run", help="run a job now, besides its schedule (admin keys)")
    a.add_argument("name", metavar="NAME")
    _server_args(a)
    a.set_defaults(func=_remote("cli_exports", "cmd_exports_run"), parser=a)
    a = exports.add_parser("files", help="a job's complete files, newest first (analyst keys and up)")
    a.add_argument("job", metavar="JOB")
    a.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(a)
    a.set_defaults(func=_remote("cli_exports", "cmd_exports_files"), parser=a)
    a = exports.add_parser("download", help="one file of a job (analyst keys and up); the server records it")
    a.add_argument("job", metavar="JOB")
    a.add_argument("file", metavar="FILE", help="a name that 'exports files JOB' lists")
    a.add_argument("--output", "-o", metavar="PATH", help="file to write, '-' for stdout (default: ./FILE)")
    _server_args(a)
    a.set_defaults(func=_remote("cli_exports", "cmd_exports_download"), parser=a)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadtrail", description="LeadTrail audit-event store")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="serve the store over gRPC in the foreground")
    _data_arg(p)
    p.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN}; port 0 picks one)"
    )
    p.add_argument("--fsync", default="always", help="'always' (default) or 'interval:MS'")
    p.add_argument(
        "--http",
        default=DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"serve /metrics and the console over HTTP here (default {DEFAULT_HTTP}; port 0 picks one; "
        "'off' disables)",
    )
    p.add_argument("--quarantine", action="store_true", help="move damaged log ranges aside and start")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --listen address without API keys and TLS",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument(
        "--tls-client-ca", metavar="FILE", help="require client certificates signed by this CA (mutual TLS)"
    )
    p.add_argument(
        "--workers",
        type=_positive(MAX_WORKERS),
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"serve with N processes on one port (default {DEFAULT_WORKERS}): each serves reads and "
        "subscriptions from the files; the first owns the writer and the others forward appends and "
        "administration to it; 1 is a single process",
    )
    p.add_argument(
        "--sink-files-root",
        action="append",
        default=[],
        metavar="DIR",
        help="an absolute directory under which files sinks may be given absolute paths (repeatable); "
        "without it a files sink writes under <data>/sink-files/<account>/ only",
    )
    p.add_argument(
        "--operator-account",
        default="default",
        metavar="NAME",
        help="the account whose admin keys may take a backup, which holds every account's events and "
        "the store's keys (default: default)",
    )
    p.add_argument(
        "--checkpoint-interval",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds between the signed checkpoints the server records while events arrive (default 10)",
    )
    p.add_argument(
        "--max-open-segments",
        type=_open_segments,
        default=DEFAULT_MAX_OPEN_SEGMENTS,
        metavar="N",
        help="segment files kept open for reads, per process; the least recently read are closed "
        f"beyond it (default {DEFAULT_MAX_OPEN_SEGMENTS})",
    )
    p.set_defaults(func=cmd_serve, parser=p)

    p = sub.add_parser(
        "append",
        help="append events from JSON lines",
        description="Append events read as JSON lines (one event object per line, API.md field names) "
        "from FILE or stdin. position, recorded_at and account_id are assigned by the server and "
        "ignored on input. A file is checked completely before anything is sent.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="JSON lines file (default or '-': stdin)")
    p.add_argument(
        "--batch",
        type=_positive(MAX_BATCH),
        default=500,
        metavar="N",
        help="events per request (default 500, max 1000)",
    )
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_append"), parser=p)

    p = sub.add_parser("get", help="one event as JSON")
    p.add_argument("id", metavar="ID", help="event id (evt_...)")
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_get"), parser=p)

    p = sub.add_parser("timeline", help="one lead's journey, step by step")
    p.add_argument("lead_id", metavar="LEAD_ID")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--all-changes", action="store_true", help="list every changed field of every step")
    p.add_argument(
        "--as-of", type=_time, metavar="TIME", help=f"the journey up to this event time ({_TIME_FORMS})"
    )
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_timeline"), parser=p)

    p = sub.add_parser("query", help="events matching a filter, by time")
    _filter_args(p)
    p.add_argument(
        "--limit", type=_not_negative, default=100, metavar="N", help="at most N events (default 100, 0: all)"
    )
    p.add_argument("--desc", action="store_true", help="newest first")
    p.add_argument("--include-lead", action="store_true", help="include each event's lead snapshot")
    p.add_argument("--format", choices=("table", "json", "jsonl"), default="table")
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_query"), parser=p)

    p = sub.add_parser(
        "tail",
        help="follow new events live until Ctrl-C",
        description="Replay the matching events from the start point (by default: none, only new "
        "events), say on stderr when caught up, then follow new events live until Ctrl-C or SIGTERM.",
    )
    _filter_args(p, since=False)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-start", action="store_true", help="replay every stored event first")
    start.add_argument(
        "--after", type=_not_negative, metavar="POS", help="replay events after this position first"
    )
    start.add_argument(
        "--since",
        dest="recorded_since",
        type=_time,
        metavar="TIME",
        help=f"replay events recorded from this time on first ({_TIME_FORMS})",
    )
    p.add_argument("--format", choices=("line", "jsonl"), default="line")
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_tail"), parser=p)

    p = sub.add_parser("export", help="events matching a filter as JSON lines, CSV or Parquet")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="file to write, '-' for stdout")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl")
    p.add_argument(
        "--fields",
        metavar="A,B,lead.email",
        help="columns (CSV); lead.<name> reads the snapshot (CSV, and Parquet's added columns)",
    )
    _filter_args(p)
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_export"), parser=p)

    p = sub.add_parser("aggregate", help="count and price sum of the matching events per group")
    p.add_argument(
        "--by",
        type=_group_by,
        default=("type",),
        metavar="KEY,KEY",
        help=f"group by these, in order: {', '.join(GROUP_KEYS)} (default type)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    _filter_args(p)
    _server_args(p)
    p.set_defaults(func=_remote("cli_remote", "cmd_aggregate"), parser=p)

    p = sub.add_parser(
        "report",
        help="counts, revenue, cost and profit of the matching events per group, as a table",
    )
    p.add_argument(
        "--by",
        type=_group_by,
        default=("entity", "type"),
        metavar="KEY,KEY",
        help=f"group by these, in order: {', '.join(GROUP_KEYS)} (default entity,type)",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    _filter_args(p)
    _server_args(p)
    p.set_defaults(func=_remote("cli_report", "cmd_report"), parser=p)

    p = sub.add_parser(
        "find",
        help="the leads whose snapshot ever held an email, a phone number or another personal value",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--email", metavar="ADDRESS", help="an email address (case-blind)")
    what.add_argument("--phone", metavar="NUMBER", help="a phone number (digits only are compared)")
    what.add_argument("--field", metavar="NAME", help="a field the account's policy classes personal")
    p.add_argument("--value", metavar="VALUE", help="with --field: the value to look for")
    p.add_argument("--format", choices=("table", "json"), default="table")
    _server_args(p)
    p.set_defaults(func=_remote("cli_find", "cmd_find"), parser=p)

    p = sub.add_parser("stats", help="counts and bytes on disk (of the server, or of --data offline)")
    _data_arg(p, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object, for programs")
    _server_args(p)
    p.set_defaults(func=_offline_unless(_no_data, cli_offline.cmd_stats), parser=p)

    p = sub.add_parser("verify", help="re-read and check every record (offline on --data, or --server)")
    _data_arg(p)
    _server_args(p, default=None)
    p.add_argument(
        "--chain",
        action="store_true",
        help="walk the hash chain: name the first position edited, inserted, reordered or removed",
    )
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="with --chain: and check against this signed checkpoint (what `leadtrail checkpoint` prints)",
    )
    p.set_defaults(func=_verify, parser=p)

    p = sub.add_parser("checkpoint", help="the chain hash at a position, signed by the server (JSON)")
    p.add_argument(
        "--position", type=_not_negative, default=0, metavar="N", help="default 0: the latest event"
    )
    _server_args(p)
    p.set_defaults(func=_remote("cli_checkpoint", "cmd_checkpoint"), parser=p)

    p = sub.add_parser(
        "backup", help="an online backup of a running server into DIR (only what changed since the last)"
    )
    p.add_argument("--to", required=True, metavar="DIR", help="backup directory (made if missing)")
    _server_args(p)
    p.set_defaults(func=_remote("cli_backup", "cmd_backup"), parser=p)

    p = sub.add_parser("restore", help="offline: make a data directory from a backup, and verify it")
    p.add_argument("--from", dest="source", required=True, metavar="DIR", help="backup directory")
    p.add_argument("--data", required=True, metavar="DIR", help="the new data directory (empty or absent)")
    p.set_defaults(func=_remote("cli_backup", "cmd_restore"), parser=p)

    p = sub.add_parser("reindex", help="offline: rebuild the indexes from the log")
    _data_arg(p)
    p.set_defaults(func=cli_offline.cmd_reindex, parser=p)

    p = sub.add_parser("compact", help="offline: apply retention policies now")
    _data_arg(p)
    p.add_argument("--now", type=int, default=None, help="UTC milliseconds to measure ages from")
    p.set_defaults(func=cli_offline.cmd_compact, parser=p)

    p = sub.add_parser("retention", help="retention policies of a running server")
    retention = p.add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    r = retention.add_parser("set", help="set one account's policy")
    r.add_argument("--account", required=True, metavar="ACCOUNT")
    age = r.add_mutually_exclusive_group(required=True)
    age.add_argument("--max-age-days", type=_not_negative, metavar="N", help="0 keeps events forever")
    age.add_argument(
        "--max-age-seconds",
        type=_not_negative,
        metavar="N",
        help="remove events older than N seconds, for ages below a day (e.g. test traffic)",
    )
    r.add_argument(
        "--legal-hold", action="store_true", help="keep everything of the account, whatever its age"
    )
    r.add_argument(
        "--pii-max-age-days",
        type=_not_negative,
        default=0,
        metavar="N",
        help="erase personal values from events older than N days (0: keep them with the event)",
    )
    r.add_argument(
        "--secret-max-age-days",
        type=_not_negative,
        default=0,
        metavar="N",
        help="erase secret fingerprints from events older than N days",
    )
    _server_args(r)
    r.set_defaults(func=_remote("cli_remote", "cmd_retention_set"), parser=r)
    r = retention.add_parser("apply", help="remove expired events now")
    r.add_argument("--now", type=_time, metavar="TIME", help=f"measure ages from this time ({_TIME_FORMS})")
    _server_args(r)
    r.set_defaults(func=_remote("cli_remote", "cmd_retention_apply"), parser=r)

    p = sub.add_parser(
        "erase",
        help="erase a lead's personal data from every event so far (of the server, or of --data offline)",
    )
    p.add_argument("--lead", required=True, metavar="LEAD_ID")
    p.add_argument("--reason", default="", metavar="TEXT", help="why, e.g. the request's number (audited)")
    p.add_argument("--account", default="default", help="offline only: the lead's account (default: default)")
    _data_arg(p, default=None)
    _server_args(p)
    p.set_defaults(func=_offline_unless(_no_data, cli_offline.cmd_erase), parser=p)

    p = sub.add_parser("fields", help="the field policy (secret / pii / plain names) of a server's account")
    fields = p.add_subparsers(dest="fields_command", required=True, metavar="ACTION")
    r = fields.add_parser("show", help="the account's field policy")
    _server_args(r)
    r.set_defaults(func=_remote("cli_remote", "cmd_fields_show"), parser=r)
    r = fields.add_parser("set", help="replace the account's field policy")
    r.add_argument("--secret", action="append", default=[], metavar="NAME", help="class as secret (repeat)")
    r.add_argument("--pii", action="append", default=[], metavar="NAME", help="class as pii (repeat)")
    r.add_argument("--plain", action="append", default=[], metavar="NAME", help="not personal here (repeat)")
    _server_args(r)
    r.set_defaults(func=_remote("cli_remote", "cmd_fields_set"), parser=r)

    _alerts_parser(sub)
    _sinks_parser(sub)
    _exports_parser(sub)

    p = sub.add_parser("dump", help="offline: stored events decoded, one JSON object per line")
    _data_arg(p)
    p.add_argument(
        "--from", dest="from_position", type=_positive(), default=1, metavar="POS", help="first position"
    )
    p.add_argument("--limit", type=_not_negative, default=None, metavar="N", help="at most N events")
    p.set_defaults(func=cli_offline.cmd_dump, parser=p)

    p = sub.add_parser("keys", help="offline: API keys of a data directory (create, list, revoke)")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys.add_parser("create", help="a new key, printed alone on stdout (shown once)")
    _data_arg(k)
    k.add_argument("--account", required=True, metavar="NAME")
    k.add_argument("--role", required=True, choices=("writer", "reader", "analyst", "admin"))
    k.add_argument(
        "--entity", action="append", metavar="ID", help="restrict to this entity's events; repeatable"
    )
    k.add_argument("--flow", action="append", metavar="ID", help="restrict to this flow's events; repeatable")
    k.add_argument(
        "--rate-limit",
        type=_not_negative,
        default=0,
        metavar="N",
        help="calls a second, in bursts of as many (default 0: no limit)",
    )
    k.set_defaults(func=cli_keys.cmd_keys_create, parser=k)
    k = keys.add_parser("list", help="the keys (never their secrets)")
    _data_arg(k)
    k.add_argument("--account", metavar="NAME", help="only this account's keys")
    k.set_defaults(func=cli_keys.cmd_keys_list, parser=k)
    k = keys.add_parser("revoke", help="revoke a key by its id; calls with it fail from then on")
    _data_arg(k)
    k.add_argument("key_id", metavar="KEY_ID")
    k.set_defaults(func=cli_keys.cmd_keys_revoke, parser=k)
    k = keys.add_parser("public", help="the store's Ed25519 public key (base64): checkpoints verify with it")
    _data_arg(k)
    k.set_defaults(func=_remote("cli_checkpoint", "cmd_keys_public"), parser=k)

    p = sub.add_parser("demo", help="append simulated lead flows to a running server")
    p.add_argument(
        "--leads", type=_positive(), default=200, metavar="N", help="leads to simulate (default 200)"
    )
    p.add_argument("--seed", type=int, default=1, help="the same seed gives the same leads and event ids")
    live = p.add_argument_group("live traffic (--live)")
    live.add_argument(
        "--live",
        action="store_true",
        help="keep flows running at --rate with occasional incidents (a buyer outage, a slow "
        "enhancement service, a bad source), timestamped now, until --duration or Ctrl-C",
    )
    live.add_argument(
        "--rate", type=_positive(), default=None, metavar="N", help="events a second (default 50)"
    )
    live.add_argument(
        "--duration",
        type=_not_negative,
        default=None,
        metavar="S",
        help="seconds to run (default 0: until Ctrl-C)",
    )
    live.add_argument(
        "--incident-every",
        type=_not_negative,
        default=None,
        metavar="S",
        help="an incident every S seconds, in the second half of each period (default 720: 6-minute "
        "incidents, long enough for 5-minute alert windows; 0: none)",
    )
    _server_args(p)
    p.set_defaults(func=_remote("demo", "cmd_demo"), parser=p)

    p = sub.add_parser(
        "top",
        help="a live view of a server: events/s, failing buyers, money, slow steps, alerts",
        description="Replay the events recorded in the last --window seconds, then follow live "
        "events and refresh the view every --interval seconds until Ctrl-C.",
    )
    p.add_argument(
        "--window",
        type=_positive(86_400),
        default=60,
        metavar="S",
        help="seconds of recorded time counted (default 60; money is always per last minute)",
    )
    p.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="seconds between refreshes (default 1)"
    )
    p.add_argument("--once", action="store_true", help="show one view when caught up and exit")
    p.add_argument(
        "--json", action="store_true", help="JSON snapshots, one a line (with --once: one, then exit)"
    )
    _server_args(p)
    p.set_defaults(func=_remote("cli_top", "cmd_top"), parser=p)
    return parser


def _remote_problem(error: BaseException, args: argparse.Namespace) -> str | None:
    """The SDK's (or gRPC's) error as one line, if the SDK was loaded at all."""
    remote = sys.modules.get("leadtrail.server.cli_remote")
    if remote is None:
        return None
    line: str | None = remote.problem(error, getattr(args, "server", None) or DEFAULT_SERVER)
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        # The command's own usage, not the list of every command.
        command_parser: argparse.ArgumentParser = getattr(args, "parser", parser)
        command_parser.error(str(e))
    except (CommandError, StorageError) as e:
        print(f"leadtrail: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`leadtrail query ... | head`): not our failure.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        print(f"leadtrail: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        line = _remote_problem(e, args)
        if line is None:
            raise
        print(f"leadtrail: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
