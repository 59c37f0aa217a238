"""``leadtrail verify --chain``: the hash chain walked offline on ``--data DIR`` or by the
server (``VerifyChain``), optionally against a signed checkpoint kept earlier (``--checkpoint
FILE``, what ``leadtrail checkpoint`` prints).

Exit 0 when the chain holds, 1 naming the first bad position or segment. A checkpoint
file's signature is checked with the store's key, and the chain hash at its position
with the one it states: a checkpoint beyond the store's end means events were removed.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from google.protobuf import json_format

from leadtrail.storage import CorruptionError, EventLog, GivenCheckpoint, Options, StorageError
from leadtrail.storage.signing import verify_checkpoint
from leadtrail.v1 import admin_pb2

from .cli_errors import UsageError
from .term import ProgressBar

if TYPE_CHECKING:
    from leadtrail.client import Client


def read_checkpoint(path: str) -> admin_pb2.SignedCheckpoint:
    """The ``SignedCheckpoint`` in a file (protobuf's JSON mapping, proto field names)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"--checkpoint {path}: {e.strerror or e}") from None
    try:
        return json_format.Parse(text, admin_pb2.SignedCheckpoint())
    except json_format.ParseError as e:
        raise UsageError(f"--checkpoint {path}: not a SignedCheckpoint in JSON: {e}") from None


def given_checkpoint(message: admin_pb2.SignedCheckpoint) -> GivenCheckpoint:
    return GivenCheckpoint(
        message.position, message.chain_hash, message.recorded_at.ToMilliseconds(), message.signature
    )


def cmd_verify_chain(args: argparse.Namespace) -> int:
    if not os.path.isdir(os.path.join(args.data, "log")):
        raise StorageError(f"no LeadTrail store at {args.data} (no log/ directory)")
    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    try:
        log = EventLog.open(args.data, Options(read_only=True))
    except CorruptionError as e:
        # A segment lost or damaged outside the engine refuses the open: that is the finding.
        for line in e.problems:
            print(f"problem: {line}")
        print(f"chain not verified: the store does not open ({len(e.problems)} problems)")
        return 1
    with log, ProgressBar("verifying the chain", "segments") as progress:
        given = given_checkpoint(checkpoint) if checkpoint is not None else None
        report = log.verify_chain(checkpoint=given, progress=progress)
        problems = list(report.problems)
        if checkpoint is not None and checkpoint.public_key and checkpoint.public_key != _key(log):
            problems.append("checkpoint: signed with another key than this store's")
    return _print(
        problems,
        report.retired,
        report.chain_checked,
        report.last_position,
        report.chain_hash,
        report.first_bad_position,
        report.content_erased,
        report.signatures_checked,
    )


def _key(log: EventLog) -> bytes | None:
    try:
        return log.public_key
    except StorageError:
        return None


def cmd_verify_chain_remote(args: argparse.Namespace) -> int:
    # Imported here: the offline walk above never loads the SDK or gRPC.
    from .cli_remote import connect

    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    with connect(args) as client:
        report = client.verify_chain()
        problems = list(report.problems)
        first_bad = report.first_bad_position
        if checkpoint is not None:
            found, bad = _against_server(client, checkpoint, report.last_position)
            problems.extend(found)
            if bad and (not first_bad or bad < first_bad):
                first_bad = bad
    return _print(
        problems,
        list(report.retired),
        report.chain_checked,
        report.last_position,
        report.chain_hash,
        first_bad,
        report.content_erased,
        report.signatures_checked,
    )


def _against_server(
    client: Client, checkpoint: admin_pb2.SignedCheckpoint, end: int
) -> tuple[list[str], int]:
    """Problems of a kept checkpoint against the server's chain (and the position they name):
    its signature under the server's key, and the server's chain hash at its position."""
    from leadtrail.client import NotFoundError

    position = checkpoint.position
    try:
        now = client.checkpoint(position)
    except NotFoundError:
        if position > end:
            removed = f"events were removed after position {end}: the checkpoint names position {position}"
            return [removed], end + 1
        raise
    problems: list[str] = []
    key = now.public_key
    if checkpoint.public_key and checkpoint.public_key != key:
        problems.append("checkpoint: signed with another key than the server's")
    given = given_checkpoint(checkpoint)
    # The key the server serves now: a server cannot sign anew a past hash it no longer has.
    if not verify_checkpoint(key, given.position, given.chain_hash, given.recorded_at_ms, given.signature):
        problems.append(
            f"checkpoint of position {position}: its signature does not verify with the server's key"
        )
    if now.chain_hash != checkpoint.chain_hash:
        problems.append(
            f"position {position}: the server's chain hash is not the checkpoint's: events up to it were "
            "edited, inserted or removed"
        )
    return problems, position if problems else 0


def _print(
    problems: list[str],
    retired: list[str],
    checked: int,
    last: int,
    chain_hash: bytes,
    first_bad: int,
    erased: int,
    signatures: int,
) -> int:
    for line in retired:
        print(f"retired: {line}")
    for line in problems:
        print(f"problem: {line}")
    if problems:
        where = f"first bad position {first_bad}" if first_bad else "see the problems above"
        print(f"chain NOT verified: {len(problems)} problems, {where}")
        return 1
    print(
        f"chain verified: {checked} events up to position {last}, chain hash {chain_hash.hex()} "
        f"({signatures} signatures checked, {erased} events with erased content)"
    )
    return 0
