"""Receipts: the chain hash an append answered, checked later against a signed checkpoint.

Each ``AppendResult.chain_hash`` commits to every event of the log up to the appended one.
``verify_receipt`` fetches the server's signed checkpoint at that position, checks its
Ed25519 signature (under a pinned public key when given: a key kept from before, so that a
server signing with another key cannot answer for the store) and compares the chain hashes.
A hash that differs means the log up to that position is not the one the receipt was given
for. Signatures are checked with ``cryptography``, imported only here: the rest of the SDK
needs only grpcio and protobuf.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Iterator

from ._errors import LeadTrailError, SignatureError
from ._model import AppendResult, SignedCheckpoint

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def check_signature(checkpoint: SignedCheckpoint, public_key: bytes | None = None) -> None:
    """Raise ``SignatureError`` unless the checkpoint is signed by ``public_key`` (None: the
    key the checkpoint names)."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as e:  # pragma: no cover - a dependency of the leadtrail package
        raise LeadTrailError(f"checking a signature needs the cryptography package: {e}") from None
    key = checkpoint.public_key if public_key is None else public_key
    where = f"the checkpoint at position {checkpoint.position}"
    if len(key) != PUBLIC_KEY_BYTES:
        raise SignatureError(
            f"{where}: a public key of {len(key)} bytes, not an Ed25519 key's {PUBLIC_KEY_BYTES}"
        )
    if len(checkpoint.signature) != SIGNATURE_BYTES:
        raise SignatureError(
            f"{where}: a signature of {len(checkpoint.signature)} bytes, not {SIGNATURE_BYTES}"
        )
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(checkpoint.signature, checkpoint.checkpoint_bytes())
    except (InvalidSignature, ValueError, OverflowError):
        pinned = "the pinned public key" if public_key is not None else "the public key it names"
        raise SignatureError(f"{where} is not signed by {pinned}") from None


def receipt_holds(
    checkpoint: SignedCheckpoint, position: int, chain_hash: bytes, public_key: bytes | None = None
) -> bool:
    """Whether a receipt matches the signed checkpoint at its position (the signature is
    checked first: ``SignatureError`` when it does not hold)."""
    check_signature(checkpoint, public_key)
    if checkpoint.position != position:
        raise SignatureError(
            f"asked for the checkpoint at position {position}, got one at {checkpoint.position}"
        )
    return hmac.compare_digest(checkpoint.chain_hash, chain_hash)


class Receipts:
    """The receipts of appends, kept to be checked later::

        receipts = Receipts()
        receipts.add(client.append(events))
        ...
        assert receipts.failed(client.verify_receipt) == []

    Results without a receipt (a server that does not chain) are not kept.
    """

    def __init__(self) -> None:
        self._held: dict[int, bytes] = {}

    def add(self, results: AppendResult | Iterable[AppendResult]) -> None:
        for result in [results] if isinstance(results, AppendResult) else results:
            if result.chain_hash:
                self._held[result.position] = result.chain_hash

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(position, chain_hash) in position order."""
        return iter(sorted(self._held.items()))

    def failed(self, verify: Callable[[int, bytes], bool]) -> list[int]:
        """The positions whose receipt ``verify`` (``Client.verify_receipt``, or a
        ``functools.partial`` of it with a pinned key) does not hold."""
        return [position for position, chain_hash in self if not verify(position, chain_hash)]

    async def failed_async(self, verify: Callable[[int, bytes], Awaitable[bool]]) -> list[int]:
        """``failed`` with ``AsyncClient.verify_receipt``."""
        return [position for position, chain_hash in self if not await verify(position, chain_hash)]
