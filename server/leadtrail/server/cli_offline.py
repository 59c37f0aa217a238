"""The commands that open a store directory themselves, with no server: ``verify``,
``reindex``, ``compact``, ``dump``, and ``stats`` and ``erase`` given ``--data``.

They need neither gRPC nor the SDK. The long ones draw the engine's
``progress(done, total)`` as a bar when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
from typing import Any

import orjson

from leadtrail.storage import EventLog, FsyncPolicy, Options, StorageError

from .cli_errors import CommandError
from .cli_output import erasure_line, print_stats
from .term import ProgressBar


def _existing(args: argparse.Namespace) -> None:
    """Offline commands read a store; they never create an empty one by mistake."""
    if not os.path.isdir(os.path.join(args.data, "log")):
        raise StorageError(f"no LeadTrail store at {args.data} (no log/ directory)")


def _options(args: argparse.Namespace, **extra: Any) -> Options:
    fsync = FsyncPolicy.parse(getattr(args, "fsync", "always") or "always")
    return Options(fsync=fsync, quarantine=getattr(args, "quarantine", False), **extra)


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


def cmd_verify(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log, ProgressBar("verifying", "segments") as progress:
        report = log.verify(progress=progress)
    for line in report.quarantined:
        print(f"quarantined: {line}")
    for line in report.problems:
        print(f"problem: {line}")
    print(f"{report.records_checked} events checked, {len(report.problems)} problems")
    return 1 if report.problems else 0


def cmd_reindex(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log, ProgressBar("reindexing", "segments") as progress:
        count = log.reindex(progress=progress)
    print(f"reindexed {count} events")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log:
        stats = dataclasses.asdict(log.stats())
    print_stats(stats, as_json=args.json)
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    _existing(args)
    with EventLog.open(args.data, _options(args)) as log, ProgressBar("compacting", "segments") as progress:
        report = log.apply_retention(args.now, progress=progress)
    _print_json(dataclasses.asdict(report))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    _existing(args)
    # A legal hold is the engine's rule: its LegalHoldError is reported like any StorageError.
    with EventLog.open(args.data, _options(args)) as log, ProgressBar("erasing", "segments") as progress:
        report = log.erase_lead(
            args.lead,
            args.account,
            requested_by=f"cli:{getpass.getuser()}",
            reason=args.reason,
            progress=progress,
        )
    if report is None:
        raise CommandError(f"lead {args.lead!r} has no events in account {args.account!r}")
    print(erasure_line(args.lead, report))
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    _existing(args)
    out = sys.stdout.buffer
    with EventLog.open(args.data, _options(args, read_only=True)) as log:
        for event in log.read_from(args.from_position, limit=args.limit):
            record = dataclasses.asdict(event)
            del record["seal"]  # the chain block: `verify --chain` reads it
            record["outcome"] = event.outcome.name
            out.write(orjson.dumps(record) + b"\n")
    out.flush()
    return 0
