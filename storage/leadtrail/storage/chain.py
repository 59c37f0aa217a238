"""The hash chain (FORMAT.md, "Hash chain"): an event's digest, its chain block, the link.

Every chained event's digest covers each of its fields, its content (reason,
details, snapshot) only through a salted commitment, so that an erasure, which
rewrites the content and keeps the commitment in place of the salt, leaves the
chain as it was. The chain hash at a position is SHA-256 of the one before it
and the event's digest; a wire body ends with a block holding the salt (or the
commitment) and the first 8 bytes of that hash.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import wireform
from .seal import (
    CHAIN8_BYTES,
    COMMITTED,
    COMMITTED_BLOCK_BYTES,
    HASH_BYTES,
    SALT_BYTES,
    SALTED,
    SALTED_BLOCK_BYTES,
    Seal,
    parse_block,
)

if TYPE_CHECKING:
    from .event import Event

GENESIS = bytes(32)
"""The chain hash before a store's first chained event."""
SYSTEM_ACCOUNT = "leadtrail.system"
"""The account of the records the store signs (checkpoints, retirements): a name no API key
can hold (keys' account names have no dot)."""

_CONTENT = b"leadtrail content v1\x00"
_EVENT = b"leadtrail event v1\x00"
_TIMES = struct.Struct(">QQQ")
_LEN = struct.Struct(">I")
_OUTCOME_DURATION = struct.Struct(">BI")
_U32 = struct.Struct(">I")
_sha256 = hashlib.sha256


def _lp(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def commitment(salt: bytes, reason: str, details_json: bytes, lead_json: bytes) -> bytes:
    """The salted commitment to an event's content."""
    r = reason.encode()
    return _sha256(
        b"".join(
            (
                _CONTENT,
                salt,
                _LEN.pack(len(r)),
                r,
                _LEN.pack(len(details_json)),
                details_json,
                _LEN.pack(len(lead_json)),
                lead_json,
            )
        )
    ).digest()


def digest(
    position: int,
    recorded_at_ms: int,
    timestamp_ms: int,
    account_id: str,
    meta: list[object] | tuple[object, ...],
    content: bytes,
) -> bytes:
    """The event's digest; ``meta`` is the wire body's meta array (FORMAT.md, "Wire body")
    and ``content`` the content's commitment."""
    event_id, event_type, lead_id, flow_id, entity_id, outcome, _, duration, integration, code, price = meta
    return _sha256(
        b"".join(
            (
                _EVENT,
                _TIMES.pack(position, recorded_at_ms, timestamp_ms),
                _lp(account_id.encode()),
                _lp(str(event_id).encode()),
                _lp(str(event_type).encode()),
                _lp(str(lead_id).encode()),
                _lp(str(flow_id).encode()),
                _lp(str(entity_id).encode()),
                _OUTCOME_DURATION.pack(int(outcome), int(duration)),  # type: ignore[call-overload]
                _lp(str(integration).encode()),
                _U32.pack(int(code)),  # type: ignore[call-overload]
                _lp(str(price).encode()),
                content,
            )
        )
    ).digest()


def link(previous: bytes, event_digest: bytes) -> bytes:
    """The chain hash after an event: SHA-256(previous chain hash ‖ its digest)."""
    return _sha256(previous + event_digest).digest()


class Chainer:
    """The writer's end of the chain: the hash so far, and the block of each new event.

    Owned by the writer thread. Salts come from the operating system's random source,
    drawn for many events at once (one system call per 256)."""

    __slots__ = ("_at", "_salts", "chain_hash", "position", "recorded_at_ms")

    _DRAW = 256 * SALT_BYTES

    def __init__(self, head: ChainPoint) -> None:
        self.position = head.position
        self.chain_hash = head.chain_hash
        self.recorded_at_ms = head.recorded_at_ms
        self._salts = b""
        self._at = 0

    @property
    def head(self) -> ChainPoint:
        """The chain point of the last event chained."""
        return ChainPoint(self.position, self.chain_hash, self.recorded_at_ms)

    def next_block(self, event: Event, details_json: bytes, lead_json: bytes) -> bytes:
        """The chain block of ``event`` (stored: its position and commit time set, the next
        one), moving the head to it."""
        at = self._at
        if at >= len(self._salts):
            self._salts, at = os.urandom(self._DRAW), 0
        salt = self._salts[at : at + SALT_BYTES]
        self._at = at + SALT_BYTES
        block, self.chain_hash = wireform.chain_block(
            self.chain_hash,
            salt,
            event.position,
            event.recorded_at_ms,
            event.timestamp_ms or 0,
            event.account_id,
            event.id,
            event.type,
            event.lead_id,
            event.flow_id,
            event.entity_id,
            event.outcome,
            event.duration_ms,
            event.integration,
            event.response_code,
            event.price,
            event.reason,
            details_json,
            lead_json,
        )
        self.position = event.position
        self.recorded_at_ms = event.recorded_at_ms
        return block


@dataclass(frozen=True, slots=True)
class ChainPoint:
    """The chain hash at a position, and the commit time of the event there."""

    position: int
    chain_hash: bytes
    recorded_at_ms: int


__all__ = [
    "CHAIN8_BYTES",
    "COMMITTED",
    "COMMITTED_BLOCK_BYTES",
    "GENESIS",
    "HASH_BYTES",
    "SALTED",
    "SALTED_BLOCK_BYTES",
    "SALT_BYTES",
    "SYSTEM_ACCOUNT",
    "ChainPoint",
    "Chainer",
    "Seal",
    "commitment",
    "digest",
    "link",
    "parse_block",
]
