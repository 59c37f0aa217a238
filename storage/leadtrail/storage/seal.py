"""An event's chain block (FORMAT.md, "Chain block"): its salt or its content's commitment,
and the first bytes of its chain hash. What a record holds; chain.py makes and checks them."""

from __future__ import annotations

from dataclasses import dataclass

from .format import BadRecord

HASH_BYTES = 32
SALT_BYTES = 16
CHAIN8_BYTES = 8
SALTED = 1
"""Block kind: the content is committed to by the salt the block holds."""
COMMITTED = 2
"""Block kind: the content was changed (erased, scrubbed); the block holds its commitment."""
SALTED_BLOCK_BYTES = 1 + SALT_BYTES + CHAIN8_BYTES
COMMITTED_BLOCK_BYTES = 1 + HASH_BYTES + CHAIN8_BYTES


@dataclass(frozen=True, slots=True)
class Seal:
    """An event's chain block: its salt or its content's commitment, and chain8."""

    kind: int
    value: bytes
    """The salt (``SALTED``) or the commitment (``COMMITTED``)."""
    chain8: bytes

    def encode(self) -> bytes:
        return bytes((self.kind,)) + self.value + self.chain8

    def committed(self, commitment: bytes) -> Seal:
        """This seal once the content it covers changed: the commitment, no salt."""
        return Seal(COMMITTED, commitment, self.chain8)


def parse_block(block: bytes | memoryview) -> Seal:
    """The seal of a chain block (the excess bytes of a wire body)."""
    size = len(block)
    kind = block[0] if size else 0
    if (kind == SALTED and size == SALTED_BLOCK_BYTES) or (
        kind == COMMITTED and size == COMMITTED_BLOCK_BYTES
    ):
        value = bytes(block[1 : size - CHAIN8_BYTES])
        return Seal(kind, value, bytes(block[size - CHAIN8_BYTES :]))
    raise BadRecord(f"wire body ends with {size} bytes that are no chain block (kind {kind})")
