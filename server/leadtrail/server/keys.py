"""API keys: who may call what, for which account, entities and flows.

Keys live in ``<data>/keys.json``, written atomically (temp file, fsync,
rename, directory fsync) under an exclusive lock, so ``leadtrail keys`` can run
beside a live server. The server rereads the file when it changes, so a key
created or revoked offline takes effect on the next call.

A key is 160 random bits shown once, at creation; the file keeps only its
SHA-256. A slow password hash buys nothing for secrets this long, and every
call has to check one.

Every call asks whether the file changed. On Linux an inotify watch on the data
directory answers without a ``stat`` (``KeyFileWatch``); elsewhere the file is
``stat``-ed each call.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import struct
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from leadtrail.storage.fs import OS_FILES, Files

KEYS_FILE = "keys.json"
LOCK_FILE = "keys.lock"
KEY_PREFIX = "ltk_"
ROLES = ("writer", "reader", "analyst", "admin")
ACCOUNT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SCOPE_MAX = 128
"""Entity and flow ids a key may be restricted to: at most this many of each."""

RATE_MAX = 1_000_000
_FORMAT_VERSION = 1


class KeyStoreError(Exception):
    """A key request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored and listed: everything but the secret."""

    key_id: str
    account: str
    role: str
    entities: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()
    created_at_ms: int = 0
    revoked_at_ms: int = 0
    rate_per_second: int = 0
    """Calls a second this key may make, with bursts of as many; 0 for no limit."""
    secret_sha256: str = field(default="", repr=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms != 0

    def sees(self, entity_id: str, flow_id: str) -> bool:
        """Whether an event of this entity and flow is within the key's scope."""
        return (not self.entities or entity_id in self.entities) and (not self.flows or flow_id in self.flows)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return KEY_PREFIX + base64.b32encode(secrets.token_bytes(20)).decode().lower()


def check_key_fields(account: str, role: str, entities: Sequence[str], flows: Sequence[str]) -> None:
    if not ACCOUNT_PATTERN.match(account):
        raise KeyStoreError(
            f"account {account!r}: must be 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    if role not in ROLES:
        raise KeyStoreError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    for name, values in (("entity", entities), ("flow", flows)):
        if len(values) > SCOPE_MAX:
            raise KeyStoreError(f"{name}: {len(values)} given; a key may name at most {SCOPE_MAX}")
        for value in values:
            if not value or len(value) > 128:
                raise KeyStoreError(f"{name} {value!r}: must be 1-128 characters")


_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_UNMOUNT = 0x400, 0x800, 0x2000
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_WATCHED = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
    | _IN_DELETE_SELF | _IN_MOVE_SELF
)  # fmt: skip
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT | _IN_IGNORED
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_EVENTS_BUFFER = 64 * 1024


class KeyFileWatch:
    """Tells whether one file of a directory may have changed since the last question,
    from an inotify watch on the directory (the file is replaced by a rename).

    The question costs one non-blocking ``read`` of the watch, called through
    ``ctypes.PyDLL``: the GIL stays held, so the event loop asking it on every call
    does not hand the GIL to the writer thread and wait to get it back, as a
    ``stat`` does. The kernel queues an event before the rename that causes it
    returns, so a key revoked by ``leadtrail keys`` is seen by the next call.
    Once the watch cannot answer for sure (an overflow, the directory gone) it
    says "changed" for ever, and the caller looks at the file itself.
    """

    def __init__(self, directory: str, name: str) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify is Linux only")
        libc = ctypes.PyDLL(None, use_errno=True)
        self._read = libc.read
        self._read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
        self._read.restype = ctypes.c_ssize_t
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        watch = libc.inotify_add_watch(fd, os.fsencode(directory), _WATCHED)
        if watch < 0:
            error = ctypes.get_errno()
            os.close(fd)
            raise OSError(error, os.strerror(error), directory)  # FileNotFoundError for ENOENT
        self._fd = fd
        self._name = os.fsencode(name)
        self._buffer = ctypes.create_string_buffer(_EVENTS_BUFFER)
        self._broken = False
        self._closer = weakref.finalize(self, os.close, fd)

    def changed(self) -> bool:
        """Whether the file may have changed since the last call (True when unsure)."""
        if self._broken:
            return True
        changed = False
        while (n := self._read(self._fd, self._buffer, _EVENTS_BUFFER)) > 0:
            data = self._buffer.raw[:n]
            at = 0
            while at + _EVENT.size <= n:
                _, mask, _, length = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
                at += _EVENT.size + length
                if mask & (_GONE | _IN_Q_OVERFLOW):
                    self._broken = True
                elif name == self._name:
                    changed = True
        if n < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            self._broken = True
        return changed or self._broken

    def close(self) -> None:
        self._closer()
        self._broken = True


class KeyStore:
    """The keys of one data directory."""

    def __init__(self, data_dir: str, files: Files = OS_FILES) -> None:
        """``files``: every write of the key file goes through this seam (power-loss tests)."""
        self._dir = data_dir
        self._files = files
        self._path = os.path.join(data_dir, KEYS_FILE)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of what _keys holds
        self._keys: dict[str, ApiKey] = {}  # by secret digest
        self._seen_keys = False
        self._watch: KeyFileWatch | None = None
        self._watching = False  # tried to make the watch (made on the first call: servers only)
        self._loaded = False
        self._watched_since_load = False  # whether the watch existed when _keys was read

    # -- reading -----------------------------------------------------------------------

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> list[ApiKey]:
        try:
            with open(self._path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise KeyStoreError(f"{self._path}: unreadable ({e})") from e
        if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
            raise KeyStoreError(f"{self._path}: not a version {_FORMAT_VERSION} key file")
        keys = []
        try:
            for item in data["keys"]:
                item = dict(item)
                item["entities"] = tuple(item.get("entities", ()))
                item["flows"] = tuple(item.get("flows", ()))
                keys.append(ApiKey(**item))
        except (KeyError, TypeError, ValueError) as e:
            raise KeyStoreError(f"{self._path}: a key record is damaged ({e!r})") from None
        return keys

    def _current(self) -> dict[str, ApiKey]:
        with self._lock:
            if not self._watching:  # the first look: made here, so that only servers watch
                self._watching = True
                try:
                    self._watch = KeyFileWatch(self._dir, KEYS_FILE)
                except FileNotFoundError:  # no directory yet (a new store): tried again next time
                    self._watching = False
                except (OSError, AttributeError):  # no inotify here
                    self._watch = None
            # Without a watch, the file's (inode, size, mtime) says whether it changed.
            notified = self._watch is not None and self._watch.changed()
            if self._watch is not None and not self._watched_since_load:
                # A watch made after the last load (the directory appeared since) knows
                # nothing of what changed before it: the file itself must say, once.
                notified = True
            if self._watch is not None and not notified and self._loaded:
                return self._keys
        stamp = self._stat()
        with self._lock:
            if notified or stamp != self._seen or not self._loaded:
                self._keys = {key.secret_sha256: key for key in self._read()}
                self._seen = stamp
                self._loaded = True
                self._watched_since_load = self._watch is not None
            return self._keys

    def configured(self) -> bool:
        """True once any key exists (revoked ones included): from then on every call needs one.
        A key file that disappears later does not open the store again: it is refused instead."""
        if self._current():
            self._seen_keys = True
        elif self._seen_keys:
            raise KeyStoreError(f"{self._path} is gone or empty; restart the server to run without keys")
        return self._seen_keys

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key for ``secret`` as of the last ``configured()`` (which rereads a changed
        file; the gate asks it first on every call); None when unknown or revoked."""
        digest = _digest(secret)
        with self._lock:
            key = self._keys.get(digest)
        if key is None or key.revoked or not hmac.compare_digest(key.secret_sha256, digest):
            return None
        return key

    def list_keys(self, account: str | None = None) -> list[ApiKey]:
        keys = sorted(self._read(), key=lambda k: (k.created_at_ms, k.key_id))
        return [k for k in keys if account is None or k.account == account]

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[list[ApiKey]]:
        os.makedirs(self._dir, exist_ok=True)
        with open(os.path.join(self._dir, LOCK_FILE), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                keys = self._read()
                yield keys
                self._write(keys)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, keys: list[ApiKey]) -> None:
        body = {"version": _FORMAT_VERSION, "keys": [self._as_json(k) for k in keys]}
        data = json.dumps(body, indent=1).encode() + b"\n"
        # The temporary file is 0600 before a byte is written: it holds key digests.
        self._files.write_file_atomically(self._path, data, mode=0o600)

    @staticmethod
    def _as_json(key: ApiKey) -> dict[str, Any]:
        item = asdict(key)
        item["entities"], item["flows"] = list(key.entities), list(key.flows)
        return item

    def create(
        self,
        account: str,
        role: str,
        now_ms: int,
        entities: Sequence[str] = (),
        flows: Sequence[str] = (),
        rate_per_second: int = 0,
    ) -> tuple[str, ApiKey]:
        """A new key: its secret (shown once, never stored) and its record."""
        check_key_fields(account, role, entities, flows)
        if not 0 <= rate_per_second <= RATE_MAX:
            raise KeyStoreError(
                f"rate limit {rate_per_second}: must be 0 (none) to {RATE_MAX} calls a second"
            )
        secret = _new_secret()
        key = ApiKey(
            key_id="key_" + secrets.token_hex(8),
            account=account,
            role=role,
            entities=tuple(dict.fromkeys(entities)),
            flows=tuple(dict.fromkeys(flows)),
            created_at_ms=now_ms,
            rate_per_second=rate_per_second,
            secret_sha256=_digest(secret),
        )
        with self._locked() as keys:
            keys.append(key)
        return secret, key

    def revoke(self, key_id: str, now_ms: int, account: str | None = None) -> ApiKey:
        """Revoke a key by id (within ``account`` when given); revoking twice keeps the first time."""
        with self._locked() as keys:
            for i, key in enumerate(keys):
                if key.key_id == key_id and (account is None or key.account == account):
                    if not key.revoked:
                        keys[i] = key = ApiKey(**{**asdict(key), "revoked_at_ms": now_ms})
                    return key
        raise KeyStoreError(f"key_id {key_id!r}: no such key")
