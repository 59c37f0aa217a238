"""AdminService.GetCheckpoint: the chain hash at a position, signed.

Any role may ask (auth.py): a writer checks its receipts against it, an auditor keeps it
outside the store. The store signs on request (signing.py), on the read pool.
"""

from __future__ import annotations

from leadtrail.storage import NotFoundError, SignedCheckpoint
from leadtrail.v1 import admin_pb2

from .convert import ms_to_timestamp
from .served_store import ServedStore
from .status import not_found


async def get_checkpoint(
    store: ServedStore, request: admin_pb2.GetCheckpointRequest
) -> admin_pb2.SignedCheckpoint:
    log, position = store.log, request.position
    last = log.last_position
    if position > last:
        raise not_found(f"position {position}: beyond the end of the log (the last position is {last})")
    try:
        checkpoint = await store.run(log.checkpoint, position)
    except NotFoundError as e:  # retired, or written without a chain
        raise not_found(f"position {position}: {e}; the last position is {last}") from None
    return checkpoint_to_proto(checkpoint)


def checkpoint_to_proto(checkpoint: SignedCheckpoint) -> admin_pb2.SignedCheckpoint:
    message = admin_pb2.SignedCheckpoint(
        position=checkpoint.position,
        chain_hash=checkpoint.chain_hash,
        signature=checkpoint.signature,
        public_key=checkpoint.public_key,
    )
    ms_to_timestamp(checkpoint.recorded_at_ms, message.recorded_at)
    return message
