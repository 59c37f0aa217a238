"""The ``leadtrail`` command line.

Exit status: 0 on success, 1 on a reported error (one line on stderr, no
traceback), 2 on a usage error (argparse).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from leadtrail.storage import (
    EventLog,
    FsyncPolicy,
    Options,
    StorageError,
)

DEFAULT_DATA = "./leadtrail-data"
DEFAULT_LISTEN = "127.0.0.1:50051"


class UsageError(Exception):
    """A command-line value that parsed but makes no sense (exit status 2)."""


def _existing(args: argparse.Namespace) -> None:
    """Offline commands read a store; they never create an empty one by mistake."""
    import os

    if not os.path.isdir(os.path.join(args.data, "log")):
        raise StorageError(f"no LeadTrail store at {args.data} (no log/ directory)")


def _options(args: argparse.Namespace, **extra: Any) -> Options:
    fsync = FsyncPolicy.parse(getattr(args, "fsync", "always") or "always")
    return Options(fsync=fsync, quarantine=getattr(args, "quarantine", False), **extra)


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


def cmd_serve(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {args.listen!r}: expected HOST:PORT")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with EventLog.open(args.data, _options(args)) as log:
        report = log.verify() if args.quarantine else None
        if report and report.quarantined:
            for line in report.quarantined:
                print(f"leadtrail: quarantined: {line}", file=sys.stderr)
        print(
            f"leadtrail: store ready at {args.data} (last position {log.last_position}, "
            f"fsync {log.options.fsync}); the gRPC listener for {args.listen} is not part of "
            "this build yet",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log:
        report = log.verify()
    for line in report.quarantined:
        print(f"quarantined: {line}")
    for line in report.problems:
        print(f"problem: {line}")
    print(f"{report.records_checked} events checked, {len(report.problems)} problems")
    return 1 if report.problems else 0


def cmd_reindex(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log:
        count = log.reindex()
    print(f"reindexed {count} events")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log:
        _print_json(dataclasses.asdict(log.stats()))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log:
        report = log.apply_retention(args.now)
    _print_json(dataclasses.asdict(report))
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    _existing(args)
    out = sys.stdout.buffer
    with EventLog.open(args.data, _options(args, read_only=True)) as log:
        for event in log.read_from(args.from_position, limit=args.limit):
            record = dataclasses.asdict(event)
            record["outcome"] = event.outcome.name
            out.write(orjson.dumps(record) + b"\n")
    out.flush()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadtrail", description="LeadTrail audit-event store")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", default=DEFAULT_DATA, help=f"data directory (default {DEFAULT_DATA})")

    p = sub.add_parser("serve", help="open the store and serve it")
    data_arg(p)
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--fsync", default="always", help="'always' (default) or 'interval:MS'")
    p.add_argument("--quarantine", action="store_true", help="move damaged log ranges aside and start")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("verify", help="offline: re-read and check every record")
    data_arg(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("reindex", help="offline: rebuild the indexes from the log")
    data_arg(p)
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("stats", help="offline: counts and bytes on disk")
    data_arg(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("compact", help="offline: apply retention policies now")
    data_arg(p)
    p.add_argument("--now", type=int, default=None, help="UTC milliseconds to measure ages from")
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("dump", help="offline: stored events decoded, one JSON object per line")
    data_arg(p)
    p.add_argument("--from", dest="from_position", type=int, default=1, help="first position")
    p.add_argument("--limit", type=int, default=None, help="at most N events")
    p.set_defaults(func=cmd_dump)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        parser.error(str(e))
    except StorageError as e:
        print(f"leadtrail: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"leadtrail: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
