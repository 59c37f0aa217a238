"""AdminService.VerifyChain: the hash chain walked over the served store (chain_verify.py),
on the store's executor: a walk reads every segment."""

from __future__ import annotations

from leadtrail.storage import ChainReport
from leadtrail.storage.chain import HASH_BYTES
from leadtrail.v1 import admin_pb2

from .served_store import ServedStore
from .status import invalid


async def verify_chain(store: ServedStore, request: admin_pb2.VerifyChainRequest) -> admin_pb2.VerifyReport:
    start, start_hash = request.from_position, request.from_chain_hash
    if start and len(start_hash) != HASH_BYTES:
        raise invalid(
            "from_chain_hash",
            f"{len(start_hash)} bytes; a chain hash has {HASH_BYTES} (required when from_position is set)",
        )
    if not start and start_hash:
        raise invalid("from_chain_hash", "given without from_position (the position it is the hash at)")
    log = store.log
    report = await store.run(lambda: log.verify_chain(start, bytes(start_hash)))
    return report_to_proto(report)


def report_to_proto(report: ChainReport) -> admin_pb2.VerifyReport:
    return admin_pb2.VerifyReport(
        records_checked=report.events_read,
        problems=report.problems,
        chain_checked=report.chain_checked,
        last_position=report.last_position,
        chain_hash=report.chain_hash,
        first_bad_position=report.first_bad_position,
        retired=report.retired,
        content_erased=report.content_erased,
        signatures_checked=report.signatures_checked,
    )
