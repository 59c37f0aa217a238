"""The store's signing key (``signing.key``) and the checkpoints it signs.

The key is made on the first writable open (0600, through the file seam: an I/O error or a
crash at any step leaves no key or the whole key), kept for ever, refused when damaged; a
checkpoint's signature is checked here with ``cryptography`` directly, over the bytes
FORMAT.md gives, so that any Ed25519 library would agree.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from leadtrail.storage import EventLog, MetadataFileError, Options
from leadtrail.storage.chain import ChainPoint
from leadtrail.storage.signing import (
    KEY_BYTES,
    KEY_FILE,
    Signer,
    checkpoint_bytes,
    verify_checkpoint,
)

KEY_OPERATIONS = 7
"""open, chmod, truncate, write, fsync, close, rename, then the directory's fsync: the
count is checked below so that a new step cannot go untested."""

QUIET = Options(checkpoints=False)


def _point(position: int = 7) -> ChainPoint:
    return ChainPoint(position, bytes(range(32)), 1_795_924_800_000 + position)


def test_checkpoint_bytes_are_the_ones_format_md_gives() -> None:
    signed = checkpoint_bytes(258, b"\xab" * 32, 1_795_924_800_123)
    assert signed == (
        b"leadtrail checkpoint v1\n"
        + bytes.fromhex("0000000000000102")
        + b"\xab" * 32
        # 1_795_924_800_123 = 0x1a22575b27b
        + bytes.fromhex("000001a22575b27b")
    )
    assert len(signed) == 24 + 8 + 32 + 8
    with pytest.raises(ValueError, match="chain_hash: 31 bytes"):
        checkpoint_bytes(1, b"\0" * 31, 0)


def test_a_signed_checkpoint_verifies_with_cryptography_and_nothing_else_does() -> None:
    signer = Signer(bytes(range(32)))
    point = _point()
    signed = signer.sign_checkpoint(point)
    assert (signed.position, signed.chain_hash, signed.recorded_at_ms) == (
        7,
        point.chain_hash,
        point.recorded_at_ms,
    )
    assert signed.public_key == signer.public_key and len(signed.public_key) == 32
    assert len(signed.signature) == 64
    message = b"leadtrail checkpoint v1\n" + struct.pack(">Q32sQ", 7, point.chain_hash, point.recorded_at_ms)
    Ed25519PublicKey.from_public_bytes(signed.public_key).verify(signed.signature, message)  # raises if bad
    assert signed.verifies()
    assert verify_checkpoint(signed.public_key, 7, point.chain_hash, point.recorded_at_ms, signed.signature)
    # Any changed part fails, and so does another key.
    other = Signer(bytes(32)).public_key
    assert not signed.verifies(other)
    assert not verify_checkpoint(
        signed.public_key, 8, point.chain_hash, point.recorded_at_ms, signed.signature
    )
    assert not verify_checkpoint(signed.public_key, 7, b"\1" * 32, point.recorded_at_ms, signed.signature)
    assert not verify_checkpoint(
        signed.public_key, 7, point.chain_hash, point.recorded_at_ms + 1, signed.signature
    )
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    assert not verify_checkpoint(signed.public_key, 7, point.chain_hash, point.recorded_at_ms, flipped)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(signed.public_key).verify(flipped, message)
    # Malformed parts are a failed check, never an exception.
    assert not verify_checkpoint(
        signed.public_key[:31], 7, point.chain_hash, point.recorded_at_ms, signed.signature
    )
    assert not verify_checkpoint(
        signed.public_key, 7, point.chain_hash[:31], point.recorded_at_ms, signed.signature
    )
    assert not verify_checkpoint(
        signed.public_key, 7, point.chain_hash, point.recorded_at_ms, signed.signature[:63]
    )
    assert not verify_checkpoint(
        signed.public_key, -1, point.chain_hash, point.recorded_at_ms, signed.signature
    )


def test_the_first_writable_open_makes_the_key_0600_and_every_later_open_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "store"
    with EventLog.open(data, QUIET) as log:
        key = (data / KEY_FILE).read_bytes()
        public = log.public_key
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(os.stat(data / KEY_FILE).st_mode) == 0o600
    assert public == Signer(key).public_key
    with EventLog.open(data, QUIET) as log:
        assert log.public_key == public
    with EventLog.open(data, Options(read_only=True)) as log:
        assert log.public_key == public
        assert log.checkpoint().verifies(public)
    assert (data / KEY_FILE).read_bytes() == key


def test_a_read_only_open_makes_no_key_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "store"
    EventLog.open(data, QUIET).close()
    os.remove(data / KEY_FILE)
    read_only = Options(read_only=True)
    with EventLog.open(data, read_only) as log, pytest.raises(MetadataFileError, match=KEY_FILE):
        _ = log.public_key
    assert not (data / KEY_FILE).exists()


@pytest.mark.parametrize("damage", [b"", b"\x01" * 31, b"\x01" * 33])
def test_a_damaged_key_refuses_the_open_naming_the_file(tmp_path: Path, damage: bytes) -> None:
    data = tmp_path / "store"
    EventLog.open(data, QUIET).close()
    (data / KEY_FILE).write_bytes(damage)
    with pytest.raises(MetadataFileError, match=rf"{KEY_FILE} holds {len(damage)} bytes.*{KEY_FILE}"):
        EventLog.open(data, QUIET)
    assert (data / KEY_FILE).read_bytes() == damage  # never replaced
    EventLog.open(data, Options(read_only=True)).close()  # not needed to read the store
