"""API keys: who may call what, for which account, entities and flows.

Keys live in ``<data>/keys.json``, written atomically (temp file, fsync,
rename, directory fsync) under an exclusive lock, so ``leadtrail keys`` can run
beside a live server. The server rereads the file when it changes, so a key
created or revoked offline takes effect on the next call.

A key is 160 random bits shown once, at creation; the file keeps only its
SHA-256. A slow password hash buys nothing for secrets this long, and every
call has to check one.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

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


class KeyStore:
    """The keys of one data directory."""

    def __init__(self, data_dir: str) -> None:
        self._dir = data_dir
        self._path = os.path.join(data_dir, KEYS_FILE)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of what _keys holds
        self._keys: dict[str, ApiKey] = {}  # by secret digest
        self._seen_keys = False

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
        stamp = self._stat()
        with self._lock:
            if stamp != self._seen:
                self._keys = {key.secret_sha256: key for key in self._read()}
                self._seen = stamp
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
        temp = self._path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(body, indent=1).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self._path)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

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
