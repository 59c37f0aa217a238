"""The store's Ed25519 key, and the checkpoints it signs (FORMAT.md, "Signed records").

``signing.key`` in the data directory holds the private key's 32-byte seed, mode 0600,
made on the first writable open and never replaced: every checkpoint the store ever
signed verifies with one public key, which an auditor keeps outside the store. A
checkpoint is the chain hash at a position with its event's commit time; its signature
covers ``"leadtrail checkpoint v1\\n"`` + position (8 bytes, big-endian) + chain hash (32)
+ recorded_at_ms (8, big-endian), so anyone holding the public key checks it with any
Ed25519 library.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .chain import HASH_BYTES, ChainPoint
from .errors import MetadataFileError
from .fs import Files
from .keyfile import load_key_file

KEY_FILE = "signing.key"
KEY_BYTES = 32
"""An Ed25519 private key's seed (RFC 8032), as ``Ed25519PrivateKey.from_private_bytes`` takes it."""
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
CHECKPOINT_PREFIX = b"leadtrail checkpoint v1\n"
_U64 = struct.Struct(">Q")


def checkpoint_bytes(position: int, chain_hash: bytes, recorded_at_ms: int) -> bytes:
    """The bytes a checkpoint's signature covers."""
    if len(chain_hash) != HASH_BYTES:
        raise ValueError(f"chain_hash: {len(chain_hash)} bytes, a chain hash has {HASH_BYTES}")
    return CHECKPOINT_PREFIX + _U64.pack(position) + chain_hash + _U64.pack(recorded_at_ms)


def verify_checkpoint(
    public_key: bytes, position: int, chain_hash: bytes, recorded_at_ms: int, signature: bytes
) -> bool:
    """Whether ``signature`` is the key's over the checkpoint; False for any malformed part
    (a key or hash of the wrong length, a position out of range) as for a wrong signature."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        signed = checkpoint_bytes(position, chain_hash, recorded_at_ms)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signed)
    except (InvalidSignature, ValueError, struct.error):
        return False
    return True


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """The chain hash at ``position`` and its event's commit time, signed by the store."""

    position: int
    chain_hash: bytes
    recorded_at_ms: int
    signature: bytes
    public_key: bytes

    def verifies(self, public_key: bytes | None = None) -> bool:
        """Whether the signature holds, under ``public_key`` (a pinned key) or the one it names."""
        key = self.public_key if public_key is None else public_key
        return verify_checkpoint(key, self.position, self.chain_hash, self.recorded_at_ms, self.signature)


class Signer:
    """Signs with the store's key."""

    __slots__ = ("_private", "public_key")

    def __init__(self, seed: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        """The raw 32-byte Ed25519 public key."""

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def sign_checkpoint(self, point: ChainPoint) -> SignedCheckpoint:
        signature = self.sign(checkpoint_bytes(point.position, point.chain_hash, point.recorded_at_ms))
        return SignedCheckpoint(
            point.position, point.chain_hash, point.recorded_at_ms, signature, self.public_key
        )


def load_key(data_dir: str, files: Files, create: bool) -> bytes | None:
    """The data directory's signing key seed (see keyfile.py); None when there is none and
    not ``create``. A store that signed with one key never signs with another."""
    return load_key_file(data_dir, KEY_FILE, KEY_BYTES, files, create, f"a {KEY_BYTES}-byte Ed25519 key")


def load_signer(data_dir: str, files: Files, create: bool) -> Signer | None:
    """The store's signer (see ``load_key``); None when there is no key and not ``create``."""
    seed = load_key(data_dir, files, create)
    return None if seed is None else Signer(seed)


def existing_signer(data_dir: str, files: Files) -> Signer:
    """The signer of a store whose writer made its key already (a read-only open, a follower,
    a maintenance step); ``MetadataFileError`` when there is none yet."""
    signer = load_signer(data_dir, files, create=False)
    if signer is None:
        raise MetadataFileError(
            f"the store has no {KEY_FILE} yet: its first writable open makes it ({data_dir})"
        )
    return signer


__all__ = [
    "CHECKPOINT_PREFIX",
    "KEY_BYTES",
    "KEY_FILE",
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SignedCheckpoint",
    "Signer",
    "checkpoint_bytes",
    "existing_signer",
    "load_key",
    "load_signer",
    "verify_checkpoint",
]
