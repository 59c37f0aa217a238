"""Signed retirement records: what retention removed, and the chain hash at the end of each run.

Retention removes events for good, so a verifier walking the chain finds gaps in
the positions. Before it removes anything, retention adds a record to
``retirements.json`` in the data directory listing each run of positions it is
about to remove with the chain hash at the run's last position, signed with the
store's key: a verifier continues the chain after a gap from that hash, and a gap
that no signed record covers is events removed outside retention. The records live
beside the log rather than in it: retention never hands out a position, so a store
after retention holds exactly the events it kept (and the signature, not the
file, is what a verifier trusts; a record dropped from the file leaves a gap that
is reported).

Signed bytes (FORMAT.md, "Signed records"): ``"leadtrail retired v1\n"``, the
number of runs (4 bytes, big-endian), then per run its first position (8), its
last position (8) and the chain hash at the last (32). The file is a JSON array of
``{"runs": [[first, last, chain_hash hex], ...], "signature": base64,
"public_key": base64}``, replaced whole (``Files.write_file_atomically``).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .chain import HASH_BYTES
from .datadir import read_json_file, write_json_file
from .errors import MetadataFileError
from .fs import Files

RETIREMENTS_FILE = "retirements.json"
_PREFIX = b"leadtrail retired v1\n"
_COUNT = struct.Struct(">I")
_RUN = struct.Struct(">QQ")


class Signs(Protocol):
    """The store's key (signing.py's ``Signer``)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Run:
    """Positions ``first``..``last`` removed; ``chain_hash``: the chain hash at ``last``."""

    first: int
    last: int
    chain_hash: bytes


@dataclass(frozen=True, slots=True)
class Retirement:
    """One record as read back: its runs, and whether its signature holds under the key
    it names (``public_key``)."""

    number: int
    """Its place in the file, from 0."""
    runs: tuple[Run, ...]
    public_key: bytes
    signed: bool


def signed_bytes(runs: Sequence[Run]) -> bytes:
    """The bytes a retirement record's signature covers."""
    parts = [_PREFIX, _COUNT.pack(len(runs))]
    for run in runs:
        parts.append(_RUN.pack(run.first, run.last))
        parts.append(run.chain_hash)
    return b"".join(parts)


def record(runs: Sequence[Run], signer: Signs) -> dict[str, Any]:
    """The signed record stating ``runs`` (as the file holds it)."""
    return {
        "runs": [[r.first, r.last, r.chain_hash.hex()] for r in runs],
        "signature": base64.b64encode(signer.sign(signed_bytes(runs))).decode(),
        "public_key": base64.b64encode(signer.public_key).decode(),
    }


def add(data_dir: str, files: Files, runs: Sequence[Run], signer: Signs) -> None:
    """Add the signed record of ``runs`` to the data directory's file, durably."""
    path = os.path.join(data_dir, RETIREMENTS_FILE)
    held = _items(path)
    write_json_file(files, path, [*held, record(runs, signer)])


def load(data_dir: str) -> list[Retirement]:
    """Every record of the data directory's file, in the order they were made; each says
    whether its signature holds under the key it names. ``MetadataFileError`` when the file
    holds anything else."""
    path = os.path.join(data_dir, RETIREMENTS_FILE)
    found = []
    for number, item in enumerate(_items(path)):
        retirement = read(number, item) if isinstance(item, dict) else None
        if retirement is None:
            raise MetadataFileError(
                f"{RETIREMENTS_FILE}: record {number} is not a retirement record ({path})"
            )
        found.append(retirement)
    return found


def _items(path: str) -> list[Any]:
    items = read_json_file(path)
    if items is None:
        return []
    if not isinstance(items, list):
        raise MetadataFileError(f"{RETIREMENTS_FILE} does not hold a list of records ({path})")
    return items


def read(number: int, details: Mapping[str, Any]) -> Retirement | None:
    """The record's runs and whether its signature holds; None when it is not a
    retirement record."""
    try:
        runs = tuple(
            Run(int(first), int(last), bytes.fromhex(hash_hex)) for first, last, hash_hex in details["runs"]
        )
        signature = base64.b64decode(details["signature"], validate=True)
        public_key = base64.b64decode(details["public_key"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if any(len(r.chain_hash) != HASH_BYTES or not 0 < r.first <= r.last for r in runs):
        return None
    return Retirement(number, runs, public_key, _verifies(public_key, signature, signed_bytes(runs)))


def _verifies(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def boundary_hash(
    records: Sequence[Retirement], position: int, public_key: bytes | None = None
) -> bytes | None:
    """The chain hash at ``position`` as a signed record states it (a run ending there), or
    None when none does; only records signed under ``public_key`` when it is given (the
    store's). Where the log starts after position 1, the chain is taken up from it."""
    for retirement in records:
        if not retirement.signed or (public_key is not None and retirement.public_key != public_key):
            continue
        for run in retirement.runs:
            if run.last == position:
                return run.chain_hash
    return None


__all__ = [
    "RETIREMENTS_FILE",
    "Retirement",
    "Run",
    "Signs",
    "add",
    "boundary_hash",
    "load",
    "read",
    "record",
    "signed_bytes",
]
