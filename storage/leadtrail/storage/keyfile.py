"""The data directory's secret key files (``signing.key``, ``search.key``, the server's
``fingerprint.key``): random bytes made once, never replaced.

A key is made on the first open that may write, through the ``Files`` seam, as every
file of the data directory is: a temporary file of mode 0600 (before a byte is
written), fsynced, renamed into place and the directory fsynced, so that a crash or a
power cut at any step leaves no key or the whole key, never a part, and a key that was
returned (and so may have been used) survives a power cut. A key file of any other
size refuses the open: data made under one key is never mixed with data made under
another.
"""

from __future__ import annotations

import os
import secrets

from .errors import MetadataFileError
from .fs import Files

KEY_MODE = 0o600


def load_key_file(
    data_dir: str, name: str, size: int, files: Files, create: bool, what: str = "key"
) -> bytes | None:
    """The ``size`` bytes of ``data_dir/name``; made when there is none and ``create``,
    else None. ``what`` names the key in the size error (``a 32-byte Ed25519 key``)."""
    path = os.path.join(data_dir, name)
    try:
        with open(path, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        if not create:
            return None
        key = secrets.token_bytes(size)
        files.write_file_atomically(path, key, mode=KEY_MODE)
        return key
    except OSError as e:
        raise MetadataFileError(f"{name} cannot be read: {e.strerror or e} ({path})") from e
    if len(key) != size:
        raise MetadataFileError(f"{name} holds {len(key)} bytes, not {what} ({path})")
    return key
