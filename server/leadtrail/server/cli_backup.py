"""``leadtrail backup`` (online, over the server) and ``leadtrail restore`` (offline).

``backup --to DIR`` sends the server what DIR already holds (the files its
manifest names that are still whole), receives the rest (storage/backup.py
writes each file as ``NAME.part`` and renames it once its SHA-256 checked), and
writes ``DIR/manifest.json`` once every file is in place. ``restore --from DIR
--data NEW`` checks each file against the manifest while copying it into an
empty directory, opens the store there (which rebuilds the index from the log)
and proves it is the store that was backed up: its log ends at the backup's
position, the chain hash there is the manifest's, and the signed checkpoint of
the manifest verifies with the store's own key and names that hash.
"""

from __future__ import annotations

import argparse
import hmac
import sys
from collections.abc import Callable, Iterable

from google.protobuf import json_format

from leadtrail.storage import EventLog, Options, StorageError
from leadtrail.storage.backup import (
    BackupDirectory,
    BackupError,
    FileReceiver,
    Manifest,
    RestoreTargetError,
    empty,
    require_empty,
    restore,
)
from leadtrail.storage.chain_verify import GivenCheckpoint
from leadtrail.storage.signing import verify_checkpoint
from leadtrail.v1 import admin_pb2, admin_pb2_grpc

from .cli_errors import CommandError, UsageError
from .cli_remote import connect
from .term import ProgressBar, human_bytes

_KIB = 1024
"""FORMAT.md, "Signed records": what a checkpoint's Ed25519 signature covers."""


def cmd_backup(args: argparse.Namespace) -> int:
    try:
        target = BackupDirectory(args.to)
    except BackupError as e:
        raise UsageError(f"--to {e}") from None
    held = target.held()
    request = admin_pb2.BackupRequest(
        have=[admin_pb2.BackupFile(name=n, size=size, sha256=sha) for n, (size, sha) in sorted(held.items())]
    )
    with connect(args) as client, ProgressBar("backup", "KiB") as progress:
        chunks = admin_pb2_grpc.AdminServiceStub(client.channel).Backup(request, metadata=client.metadata)
        plan, manifest = _receive(target, chunks, progress)
    print(
        f"backup at position {manifest.position} in {args.to}: {plan.files_sent} of {plan.files} files "
        f"sent ({human_bytes(plan.bytes_sent)}), chain hash {manifest.chain_hash.hex()}"
    )
    return 0


def _receive(
    target: BackupDirectory, chunks: Iterable[admin_pb2.BackupChunk], progress: ProgressBar
) -> tuple[admin_pb2.BackupPlan, Manifest]:
    plan: admin_pb2.BackupPlan | None = None
    receiver: FileReceiver | None = None
    received = 0
    try:
        for chunk in chunks:
            part = chunk.WhichOneof("part")
            if part == "plan":
                plan = chunk.plan
            elif plan is None:
                raise BackupError(f"the server sent {part} before the plan")
            elif part == "file":
                if receiver is not None:
                    receiver.finish()
                receiver = target.receive(chunk.file.name, chunk.file.size, chunk.file.sha256)
            elif part == "data":
                if receiver is None:
                    raise BackupError("the server sent data before naming its file")
                receiver.write(chunk.data)
                received += len(chunk.data)
                progress(received // _KIB, plan.bytes_sent // _KIB)  # on a terminal only
            elif part == "manifest_json":
                if receiver is not None:
                    receiver.finish()
                return plan, target.finish(chunk.manifest_json.encode())
        raise BackupError("the server ended the backup before its manifest: DIR keeps the previous backup")
    except BaseException:
        target.abandon()
        raise


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        require_empty(args.data)
    except RestoreTargetError as e:
        raise UsageError(f"--data {e}") from None
    with ProgressBar("restore", "KiB") as progress:
        manifest = restore(args.source, args.data, progress=_in_kib(progress))
    try:
        events, problems = _check_restored(args.data, manifest)
    except BaseException:
        empty(args.data)
        raise
    if problems:
        empty(args.data)
        for problem in problems:
            print(f"leadtrail: {problem}", file=sys.stderr)
        raise CommandError(
            f"the backup in {args.source} does not verify: nothing was restored to {args.data}"
        )
    files = len(manifest.files)
    size = human_bytes(sum(manifest.sizes.values()))
    proofs = [f"chain hash {manifest.chain_hash.hex()} verified" if manifest.chained else "no chained event"]
    if manifest.checkpoint is not None:
        proofs.append("checkpoint signature verified")
    print(
        f"restored position {manifest.position} ({events} events, {files} files, {size}) into {args.data}; "
        + ", ".join(proofs)
    )
    return 0


def _in_kib(progress: ProgressBar) -> Callable[[int, int], None]:
    return lambda done, total: progress(done // _KIB, total // _KIB)


def _check_restored(data: str, manifest: Manifest) -> tuple[int, list[str]]:
    """The events of the restored store and what disagrees with the manifest (nothing when
    the store is the one backed up). Opened read-only: the open rebuilds the index."""
    problems: list[str] = []
    signed = None
    if manifest.checkpoint is not None:
        try:
            signed = json_format.ParseDict(manifest.checkpoint, admin_pb2.SignedCheckpoint())
        except json_format.ParseError as e:
            problems.append(f"the manifest's checkpoint is not a SignedCheckpoint: {e}")
    with EventLog.open(data, Options(read_only=True)) as store:
        events = store.stats().event_count
        if store.last_position != manifest.position:
            problems.append(
                f"the restored log ends at position {store.last_position}, the backup at {manifest.position}"
            )
        if manifest.chain_position:
            try:
                point = store.chain_point(manifest.chain_position)
            except StorageError as e:
                problems.append(f"position {manifest.chain_position}: {e}")
            else:
                if not hmac.compare_digest(point.chain_hash, manifest.chain_hash):
                    problems.append(
                        f"position {manifest.chain_position}: chain hash {point.chain_hash.hex()}, "
                        f"the manifest says {manifest.chain_hash.hex()}"
                    )
        given = None
        if signed is not None:
            problems.extend(_checkpoint_problems(store.public_key, manifest, signed))
            given = GivenCheckpoint(
                signed.position, signed.chain_hash, signed.recorded_at.ToMilliseconds(), signed.signature
            )
        # The whole chain walked (chain_verify.py) with the store's signed records, and
        # against the manifest's checkpoint.
        report = store.verify_chain(checkpoint=given)
        problems.extend(f"chain: {p}" for p in report.problems)
    return events, problems


def _checkpoint_problems(
    public_key: bytes, manifest: Manifest, signed: admin_pb2.SignedCheckpoint
) -> list[str]:
    """The manifest's checkpoint names its chain hash and is signed by the restored store's key."""
    problems = []
    if signed.position != manifest.chain_position or not hmac.compare_digest(
        signed.chain_hash, manifest.chain_hash
    ):
        problems.append(f"the manifest's checkpoint is of position {signed.position}, another chain hash")
    if not hmac.compare_digest(public_key, signed.public_key):
        return [*problems, "the manifest's checkpoint was signed by another key than the store's"]
    recorded_at_ms = signed.recorded_at.ToMilliseconds()
    if not verify_checkpoint(
        public_key, signed.position, signed.chain_hash, recorded_at_ms, signed.signature
    ):
        problems.append("the manifest's checkpoint signature does not verify")
    return problems
