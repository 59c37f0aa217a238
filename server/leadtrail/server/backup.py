"""AdminService.Backup: an online backup of the whole data directory, streamed to the client.

The store stages a snapshot at its committed position (storage/backup.py) while
appends go on; this module answers with the plan (position, chain hash, how
many files and bytes come), then each file the client does not hold already
(same name, size and SHA-256: ``BackupRequest.have``) as a ``BackupFile`` and
its bytes in ``data`` parts of 1 MiB, then the manifest. Every read of a file
runs on the store's read pool: the event loop never waits on the disk. The
staged snapshot is removed when the stream ends, however it ends.

With ``--workers N`` the call is forwarded to the writer process like every
AdminService call (forwarding.py relays server streams part by part).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format

from leadtrail.storage.backup import CHUNK_BYTES, Snapshot, SnapshotFile, manifest_json
from leadtrail.v1 import admin_pb2

from . import checkpoint_service
from .served_store import ServedStore
from .status import Context, status_of

_NO_CHECKPOINT = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED})
"""A position without a chained event (a store written before the chain) has no checkpoint:
the backup is still whole, its manifest says so (``"checkpoint": null``)."""


async def backup(
    store: ServedStore, request: admin_pb2.BackupRequest, context: Context
) -> AsyncIterator[admin_pb2.BackupChunk]:
    snapshot = await store.run(store.log.backup_snapshot)
    try:
        have = {(f.name, f.size, f.sha256) for f in request.have}
        digests: dict[str, str] = {}
        sent: list[SnapshotFile] = []
        for file in snapshot.files:
            digests[file.name] = digest = await store.run(snapshot.sha256, file)
            if (file.name, file.size, digest) not in have:
                sent.append(file)
        checkpoint = await _checkpoint(store, snapshot)
        yield admin_pb2.BackupChunk(
            plan=admin_pb2.BackupPlan(
                position=snapshot.position,
                chain_hash=snapshot.chain.chain_hash,
                files=len(snapshot.files),
                files_sent=len(sent),
                bytes_sent=sum(f.size for f in sent),
            )
        )
        for file in sent:
            yield admin_pb2.BackupChunk(
                file=admin_pb2.BackupFile(name=file.name, size=file.size, sha256=digests[file.name])
            )
            offset = 0
            while offset < file.size:
                data = await store.run(snapshot.read, file, offset, CHUNK_BYTES)
                offset += len(data)
                yield admin_pb2.BackupChunk(data=data)
        created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        manifest = manifest_json(snapshot, digests, checkpoint, created_at)
        yield admin_pb2.BackupChunk(manifest_json=manifest.decode())
    finally:
        # Unlinks only (no data is written): fast enough to do here, even on a cancelled call.
        snapshot.close()


async def _checkpoint(store: ServedStore, snapshot: Snapshot) -> dict[str, object] | None:
    """The signed checkpoint at the snapshot's chain head, in protobuf's JSON mapping with the
    proto field names: the manifest carries what ``leadtrail checkpoint`` prints."""
    position = snapshot.chain.position
    if position == 0:
        return None
    try:
        signed = await checkpoint_service.get_checkpoint(
            store, admin_pb2.GetCheckpointRequest(position=position)
        )
    except Exception as e:
        if status_of(e)[0] in _NO_CHECKPOINT:
            return None
        raise
    return json_format.MessageToDict(signed, preserving_proto_field_name=True)
