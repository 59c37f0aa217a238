"""The read audit: with API keys, every read is recorded in the store itself.

An ``audit.read`` event names the key (its ``lead_id``: a key's reads are its
timeline), the RPC, what it asked and how many events it was answered. The record
is queued for the next group commit and the read does not wait for it: a crash
can lose the records of the last reads, never anything appended.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import Any, Protocol

import orjson
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from leadtrail.storage import AUDIT_FLOW, AUDIT_TYPE_PREFIX, Event, Outcome, StorageError

from .caller import Caller

AUDIT_READ = AUDIT_TYPE_PREFIX + "read"
AUDIT_REQUEST_BYTES = 8192
"""A request bigger than this as JSON is recorded by its size only: the record must fit."""


class Submitter(Protocol):
    def submit(self, events: list[Event]) -> Future[Any]: ...


class ReadAudit:
    def __init__(self, log: Submitter) -> None:
        self._log = log

    def record(self, caller: Caller, rpc: str, request: Message, events: int) -> None:
        """Record a read made with a key: who, which RPC, what it asked, how many events."""
        key = caller.key
        if key is None:
            return
        asked = MessageToDict(request, preserving_proto_field_name=True)
        size = len(orjson.dumps(asked))
        if size > AUDIT_REQUEST_BYTES:
            asked = {"omitted": f"{size} bytes as JSON, over the {AUDIT_REQUEST_BYTES} kept"}
        record = Event(
            type=AUDIT_READ,
            lead_id=key.key_id,
            flow_id=AUDIT_FLOW,
            entity_id=key.key_id,
            outcome=Outcome.SUCCESS,
            reason=rpc,
            details={"rpc": rpc, "role": key.role, "request": asked, "events": events},
            account_id=key.account,
        )
        try:
            self._log.submit([record])
        except StorageError as e:  # a read-only store keeps serving reads
            logging.getLogger("leadtrail.server").warning("audit record of %s not written: %s", rpc, e)
