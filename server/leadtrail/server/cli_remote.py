"""The commands that talk to a running server, all through the SDK (``leadtrail.client``).

Imported only when one of them runs, so the offline commands work on a host
that has the store but not the gRPC stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from types import FrameType
from typing import IO, Any

import grpc

from leadtrail.client import (
    AppendConflictWarning,
    CaughtUp,
    Client,
    Event,
    InvalidArgumentError,
    LeadTrailError,
    NotFoundError,
    PermissionDeniedError,
    ServiceError,
    SinkStatus,
    TLSError,
    UnavailableError,
    parse_rule,
    tls_credentials,
)

from .cli_errors import CommandError, UsageError
from .cli_input import read_events
from .cli_output import (
    dumps,
    erasure_line,
    event_json,
    events_table,
    iso_ms,
    print_stats,
    table,
    tail_line,
    timeline_json_chunks,
    timeline_lines,
)
from .term import ProgressLine, human_bytes

_EVENT_INDEX = re.compile(r"events\[(\d+)\]\.?")


def connect(args: argparse.Namespace) -> Client:
    credentials = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        try:
            credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except ValueError as e:
            raise UsageError(f"--tls-cert/--tls-key: {e}") from None
    return Client(args.server, api_key=args.api_key or None, credentials=credentials)


_TLS_ADVICE = {
    "tls_required": "requires TLS: pass --tls-ca FILE, the CA that signed its certificate",
    "client_certificate_required": "requires a client certificate (mutual TLS): pass --tls-cert FILE "
    "and --tls-key FILE (with --tls-ca FILE)",
    "tls_or_client_certificate_required": "requires TLS (--tls-ca FILE) or a client certificate "
    "(--tls-cert FILE --tls-key FILE)",
    "server_not_tls": "does not speak TLS: leave out --tls-ca, --tls-cert and --tls-key",
    "certificate_untrusted": "has a certificate that the CA given with --tls-ca did not sign",
}


def problem(error: BaseException, server: str) -> str | None:
    """The one line to print for an error of the SDK or gRPC; ``None`` for anything else."""
    if isinstance(error, TLSError) and error.problem in _TLS_ADVICE:
        return f"server {server} {_TLS_ADVICE[error.problem]}"
    if isinstance(error, UnavailableError):
        return f"server {server} unavailable: {_first_line(error.details or str(error))}"
    if isinstance(error, LeadTrailError):
        return _first_line(error)
    if isinstance(error, grpc.RpcError):
        code = error.code() if isinstance(error, grpc.Call) else None
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        name = code.name if code is not None else "RPC error"
        return f"{name}: {_first_line(details or '')}"
    return None


def _first_line(error: BaseException | str) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------- filters


def filter_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The EventFilter flags shared by query, tail, export, aggregate, report, sinks and export
    jobs, as SDK keyword arguments (times and outcomes were parsed by the command line's parser;
    a ``--where`` rule that does not parse is a usage error naming it)."""
    start = getattr(args, "since", None)
    end = args.until
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--until {iso_ms(end)} is not after --since {iso_ms(start)}")
    try:
        where = tuple(parse_rule(text) for text in getattr(args, "where", None) or ())
    except ValueError as e:
        raise UsageError(f"--where: {e}") from None
    return {
        "types": tuple(args.type or ()),
        "lead_id": args.lead or "",
        "flow_id": args.flow or "",
        "entity_id": args.entity or "",
        "outcomes": tuple(args.outcome or ()),
        "start": start,
        "end": end,
        "where": where,
    }


# --------------------------------------------------------------------------- append


def _batches(events: Iterator[tuple[int, Event]], size: int) -> Iterator[list[tuple[int, Event]]]:
    while batch := list(islice(events, size)):
        yield batch


def _refusal(error: InvalidArgumentError, batch: list[tuple[int, Event]]) -> str:
    """The server's refusal told by input line: it names the event by its index in the
    request (``events[3].type: ...``), the operator knows their file by line."""
    text = _first_line(error.details or str(error))
    match = _EVENT_INDEX.match(text)
    if match and int(match.group(1)) < len(batch):
        return f"line {batch[int(match.group(1))][0]}: {text[match.end() :]}"
    return f"lines {batch[0][0]}-{batch[-1][0]}: {text}"


def cmd_append(args: argparse.Namespace) -> int:
    source: IO[bytes]
    if args.file in (None, "-"):
        source = sys.stdin.buffer
    else:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below, stdin must not be
        # A file can be read twice: check every line first so that a bad line
        # at the end does not leave the lines before it half appended.
        try:
            for _ in read_events(source):
                pass
        except ValueError as e:
            source.close()
            raise CommandError(f"{args.file}: {e}; nothing appended") from None
        source.seek(0)
    appended = duplicates = last_position = 0
    try:
        with connect(args) as client, ProgressLine() as progress, warnings.catch_warnings():
            # Said once per id below, in the CLI's words, instead of the SDK's warning.
            warnings.simplefilter("ignore", AppendConflictWarning)
            try:
                for batch in _batches(read_events(source), args.batch):
                    try:
                        results = client.append([event for _, event in batch])
                    except InvalidArgumentError as e:
                        raise CommandError(
                            f"{_refusal(e, batch)} (nothing from line {batch[0][0]} on was appended; "
                            f"{appended + duplicates} events before it were)"
                        ) from None
                    for result in results:
                        duplicates += result.duplicate
                        appended += not result.duplicate
                        last_position = max(last_position, result.position)
                        if result.conflict:
                            progress.note(
                                f"leadtrail: warning: {result.id} is already stored with another type, "
                                "lead, flow or timestamp: the stored event was kept, this one not stored"
                            )
                    progress.update(f"appended {appended + duplicates} events")
            except ValueError as e:
                raise CommandError(f"{e} ({appended + duplicates} events before it were appended)") from None
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    print(f"appended {appended}, duplicates {duplicates}, last position {last_position}")
    return 0


# --------------------------------------------------------------------------- reading


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            event = client.get(args.id)
        except NotFoundError:
            raise CommandError(f"event {args.id} not found") from None
    sys.stdout.buffer.write(dumps(event_json(event), indent=True) + b"\n")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    with connect(args) as client:
        pages = client.timeline_pages(args.lead_id, as_of=getattr(args, "as_of", None))
        try:
            first = next(pages)
        except NotFoundError as e:
            # With --as-of the server says when the journey begins, which the user needs.
            said = e.details if getattr(args, "as_of", None) is not None and e.details else None
            raise CommandError(said or f"lead {args.lead_id} not found") from None
        # Printed page by page: a long journey starts showing at once and never sits in memory.
        journey = itertools.chain([first], pages)
        if args.format == "json":
            out = sys.stdout.buffer
            for chunk in timeline_json_chunks(journey):
                out.write(chunk)
        else:
            for line in timeline_lines(journey, all_changes=args.all_changes):
                print(line)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    limit = args.limit or None
    with connect(args) as client:
        found = client.query(
            **filter_kwargs(args),
            descending=args.desc,
            include_lead=args.include_lead,
            page_size=min(limit or 1000, 1000),
        )
        out = sys.stdout.buffer
        if args.format == "jsonl":
            # Streamed: a large result starts flowing at once and never sits in memory.
            for event in islice(found, limit):
                out.write(dumps(event_json(event, include_lead=args.include_lead)) + b"\n")
            return 0
        events = list(islice(found, limit))
        if args.format == "json":
            records = [event_json(e, include_lead=args.include_lead) for e in events]
            out.write(dumps(records, indent=True) + b"\n")
        else:
            if not events:
                print("no events match", file=sys.stderr)
                return 0
            print("\n".join(events_table(events)))
            if limit is not None and len(events) == limit:
                print(f"(first {limit} events; --limit 0 shows all)", file=sys.stderr)
    return 0


class _Stop(BaseException):
    """SIGTERM asks a tail to end the way Ctrl-C does. A BaseException, as KeyboardInterrupt
    is: the handler raises it wherever the main thread is, possibly inside gRPC's own code,
    whose ``except Exception`` clauses (callbacks, logged and swallowed) must let it through
    to ``cmd_tail``."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def cmd_tail(args: argparse.Namespace) -> int:
    start: dict[str, Any]
    if args.from_start:
        start = {"from_start": True}
    elif args.after is not None:
        start = {"after_position": args.after}
    elif args.recorded_since is not None:
        start = {"from_recorded_at": args.recorded_since}
    else:
        start = {"from_end": True}
    # SIGTERM ends a tail the way Ctrl-C does: at once, with status 0.
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    out = sys.stdout
    try:
        with connect(args) as client:
            for item in _follow(client, start, filter_kwargs(args)):
                if isinstance(item, CaughtUp):
                    # On stderr: stdout stays the events alone, for a pipe.
                    print(f"caught up at position {item.position}; following new events", file=sys.stderr)
                    continue
                if args.format == "jsonl":
                    out.write(dumps(event_json(item, include_lead=True)).decode() + "\n")
                else:
                    out.write(tail_line(item) + "\n")
                out.flush()
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _follow(client: Client, start: dict[str, Any], filters: dict[str, Any]) -> Iterator[Event | CaughtUp]:
    """The subscription's events, forever, and once the mark that history is replayed.

    A server that cannot be reached at the start is an error the operator must
    see at once; one that goes away later (a restart) is waited for, and the
    subscription resumes after the last position it saw, without gap or repeat.
    """
    first = client.subscribe(**start, **filters, include_checkpoints=True, reconnect=False)
    connected = False
    try:
        with first:
            for item in first:
                connected = True  # the caught-up mark arrives even when nothing matches
                if isinstance(item, Event | CaughtUp):
                    yield item
    except UnavailableError:
        if not connected:
            raise
    with client.subscribe(after_position=first.position, **filters, reconnect=True) as resumed:
        for item in resumed:
            if isinstance(item, Event):
                yield item


# --------------------------------------------------------------------------- export


@contextmanager
def _destination(path: str) -> Iterator[IO[bytes]]:
    """stdout for ``-``; otherwise a temporary file renamed into place only when the
    export completed, so an interrupted export never looks like a finished one."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as f:
            yield f
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def cmd_export(args: argparse.Namespace) -> int:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else ()
    written = lines = 0
    with connect(args) as client, ProgressLine() as progress, _destination(args.output) as out:
        for chunk in client.export(format=args.format, fields=fields, **filter_kwargs(args)):
            out.write(chunk)
            written += len(chunk)
            if args.format == "parquet":  # binary: its rows are counted from the footer at the end
                progress.update(f"exported {human_bytes(written)}")
                continue
            lines += chunk.count(b"\n")
            events = lines - 1 if args.format == "csv" and lines else lines
            progress.update(f"exported {events} events, {human_bytes(written)}")
    events = max(0, lines - 1) if args.format == "csv" else lines
    if args.format == "parquet" and args.output != "-":
        from .parquet import file_rows  # only here: pyarrow takes a while to import

        events = file_rows(args.output)
    if args.output != "-":
        print(f"exported {events} events ({human_bytes(written)}) to {args.output}")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.aggregate(args.by, **filter_kwargs(args))
    if args.format == "json":
        records = [
            {"keys": list(row.keys), "count": row.count, "price_sum": str(row.price_sum)} for row in rows
        ]
        sys.stdout.buffer.write(dumps(records, indent=True) + b"\n")
        return 0
    if not rows:
        print("no events match", file=sys.stderr)
        return 0
    header = [*(key.upper() for key in args.by), "EVENTS", "PRICE SUM"]
    lines = [[*row.keys, f"{row.count:,}", str(row.price_sum)] for row in rows]
    print("\n".join(table(header, lines, right=(len(args.by), len(args.by) + 1))))
    return 0


# --------------------------------------------------------------------------- administration


def cmd_stats(args: argparse.Namespace) -> int:
    with connect(args) as client:
        stats = client.stats()
        sinks = _sink_statuses(client)
    # The same table, or JSON, as `stats --data` prints offline; then the sinks, if any.
    shown = dataclasses.asdict(stats)
    if sinks and args.json:
        shown["sinks"] = [dataclasses.asdict(s) for s in sinks]
    print_stats(shown, as_json=args.json)
    if sinks and not args.json:
        rows = [
            (s.name, s.state, f"{s.delivered_position:,}", f"{s.lag_events:,}", f"{s.delivered_total:,}")
            for s in sinks
        ]
        print(
            "\n"
            + "\n".join(table(("SINK", "STATE", "DELIVERED TO", "LAG", "DELIVERED"), rows, right=(2, 3, 4)))
        )
    return 0


def _sink_statuses(client: Client) -> list[SinkStatus]:
    """The account's sinks and where each is, for an admin key; none for other keys (listing
    sinks is an admin's) or an older server without them (UNIMPLEMENTED)."""
    try:
        return [client.get_sink_status(sink.name) for sink in client.list_sinks()]
    except (PermissionDeniedError, NotFoundError, ServiceError):
        return []


def cmd_verify(args: argparse.Namespace) -> int:
    with connect(args) as client:
        report = client.verify()
    for line in getattr(report, "quarantined", ()):
        print(f"quarantined: {line}")
    for line in report.problems:
        print(f"problem: {line}")
    print(f"{report.records_checked} events checked, {len(report.problems)} problems")
    return 1 if report.problems else 0


def cmd_retention_set(args: argparse.Namespace) -> int:
    with connect(args) as client:
        policy = client.set_retention_policy(
            args.account,
            max_age_days=args.max_age_days or 0,
            legal_hold=args.legal_hold,
            pii_max_age_days=args.pii_max_age_days,
            secret_max_age_days=args.secret_max_age_days,
            max_age_seconds=args.max_age_seconds or 0,
        )
    if policy.max_age_seconds:
        age = f"{policy.max_age_seconds} seconds"
    else:
        age = f"{policy.max_age_days} days" if policy.max_age_days else "forever"
    hold = ", legal hold (nothing is removed)" if policy.legal_hold else ""
    tiers = "".join(
        f", {name} values {days} days"
        for name, days in (("pii", policy.pii_max_age_days), ("secret", policy.secret_max_age_days))
        if days
    )
    print(f"retention for account {policy.account_id}: keep {age}{tiers}{hold}")
    return 0


def cmd_retention_apply(args: argparse.Namespace) -> int:
    with connect(args) as client:
        report = client.apply_retention(now=args.now)
    print(
        f"removed {report.events_removed} events: {report.segments_deleted} segments deleted, "
        f"{report.segments_rewritten} rewritten, {human_bytes(report.bytes_freed)} freed; "
        f"personal values erased from {report.events_scrubbed} events"
    )
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    with connect(args) as client:
        report = client.erase_lead(args.lead, reason=args.reason)
    print(erasure_line(args.lead, report))
    return 0


def _print_field_policy(policy: Any) -> None:
    for name in ("secret", "pii", "plain"):
        names = getattr(policy, name)
        print(f"{name}: {', '.join(names) if names else '(built-in rules only)'}")


def cmd_fields_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _print_field_policy(client.field_policy())
    return 0


def cmd_fields_set(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _print_field_policy(client.set_field_policy(secret=args.secret, pii=args.pii, plain=args.plain))
    return 0
