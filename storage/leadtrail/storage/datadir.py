"""The data directory around the log: its lock, its id and its metadata files.

Everything here but the log, the dictionaries and the index: ``LOCK`` (held by
the one process that has the store open), ``STORE_ID``, the policies
(``retention.json``, ``fields.json``), the positions removed on purpose
(``retired.json``) and the last commit time retention saw
(``recorded_at.json``). Each metadata file is replaced whole through
``Files.write_file_atomically``; a file that cannot be read or parsed is a
``MetadataFileError`` naming it, never a traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

from .errors import DataDirectoryError, MetadataFileError
from .fs import Files

LOCK_FILE = "LOCK"
STORE_ID_FILE = "STORE_ID"
RETIRED_FILE = "retired.json"
RECORDED_AT_FLOOR_FILE = "recorded_at.json"
TEMP_SUFFIXES = (".tmp", ".compact")
BACKUP_STAGING_DIR = "backup.tmp"
"""Where a backup in progress links the files it copies (backup.py)."""
"""Leftovers of an interrupted atomic write: the file they were to replace is still whole."""


def read_json_file(path: str) -> Any:
    """The JSON value of a metadata file; None when there is no such file."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise MetadataFileError(f"{name} cannot be read: {e.strerror or e} ({path})") from e
    try:
        return json.loads(data)
    except ValueError as e:
        raise MetadataFileError(f"{name} is not valid JSON: {e} ({path})") from e


def write_json_file(files: Files, path: str, value: Any, indent: int | None = None) -> None:
    files.write_file_atomically(path, json.dumps(value, indent=indent).encode())


class DataDirectory:
    """One data directory: where each part of the store lives, and the small files."""

    def __init__(self, path: str, files: Files) -> None:
        self.path = path
        self.files = files
        self.log_dir = os.path.join(path, "log")
        self.quarantine_dir = os.path.join(path, "quarantine")
        self.index_dir = os.path.join(path, "index")
        self.dictionaries_dir = os.path.join(path, "dictionaries")
        self._lock_fd = -1

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- the lock and the id ---------------------------------------------------

    def lock(self) -> None:
        """Create the directory if need be and take it for this process."""
        # make_directory fsyncs the parent: without it a power cut can take a new store's
        # directory (and every event acknowledged in it) out of its parent. Until the store
        # has its id, a first open may have stopped between the mkdir and that fsync.
        new = not os.path.exists(self.file(STORE_ID_FILE))
        for directory in (self.path, self.log_dir):
            if new or not os.path.isdir(directory):
                self.files.make_directory(directory)
        self._lock_fd = os.open(self.file(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise DataDirectoryError(f"data directory {self.path} is in use by another process") from e

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def store_id(self) -> bytes:
        """This store's random id, made on first open (the index and dictionaries carry it)."""
        path = self.file(STORE_ID_FILE)
        try:
            with open(path, "rb") as f:
                value = f.read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        value = uuid.uuid4().hex.encode()
        self.files.write_file_atomically(path, value + b"\n")
        return value

    def existing_store_id(self) -> bytes:
        """The store's id as the process that owns the store wrote it; for a follower,
        which must not create one."""
        try:
            with open(self.file(STORE_ID_FILE), "rb") as f:
                value = f.read().strip()
        except FileNotFoundError:
            value = b""
        if not value:
            raise DataDirectoryError(f"data directory {self.path} has no store yet (no {STORE_ID_FILE})")
        return value

    def remove_leftovers(self) -> None:
        """Remove what an interrupted compaction, quarantine, atomic write or backup left behind."""
        shutil.rmtree(os.path.join(self.path, BACKUP_STAGING_DIR), ignore_errors=True)
        for directory in (self.log_dir, self.path, self.quarantine_dir):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                path = os.path.join(directory, name)
                if name.endswith(TEMP_SUFFIXES) and not os.path.isdir(path):
                    os.remove(path)

    # -- retired ranges ---------------------------------------------------------

    def retired_ranges(self) -> list[tuple[int, int]]:
        """Position ranges removed on purpose (retention, quarantine), as [first, last]."""
        value = read_json_file(self.file(RETIRED_FILE))
        if value is None:
            return []
        try:
            return [(int(a), int(b)) for a, b in value]
        except (ValueError, TypeError) as e:
            raise MetadataFileError(f"{RETIRED_FILE} is unreadable: {e}") from e

    def retire(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Record, durably and before they go, positions about to be removed on purpose.

        A position gap between segments that no retired range explains is a
        segment file lost outside the engine: corruption, not retention.
        """
        ranges = [(a, b) for a, b in ranges if a <= b]
        if not ranges:
            return
        merged: list[list[int]] = []
        for first, last in sorted([*self.retired_ranges(), *ranges]):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        write_json_file(self.files, self.file(RETIRED_FILE), merged)

    # -- the recorded_at floor -----------------------------------------------------

    def recorded_at_floor(self) -> int:
        """The commit time retention last saw; see ``save_recorded_at_floor``."""
        value = read_json_file(self.file(RECORDED_AT_FLOOR_FILE))
        if value is None:
            return 0
        try:
            return int(value["recorded_at_ms"])
        except (ValueError, KeyError, TypeError) as e:
            raise MetadataFileError(f"{RECORDED_AT_FLOOR_FILE} is unreadable: {e!r}") from e

    def save_recorded_at_floor(self, recorded_at_ms: int) -> None:
        # Retention may remove the newest events, and with them the only record
        # of the latest commit time: keep it so recorded_at never goes backwards.
        write_json_file(self.files, self.file(RECORDED_AT_FLOOR_FILE), {"recorded_at_ms": recorded_at_ms})

    # -- sizes -------------------------------------------------------------------------

    def bytes_under(self, path: str | None = None) -> int:
        """Bytes of the files under ``path`` (the whole directory by default)."""
        total = 0
        for root, dirs, names in os.walk(path or self.path):
            if root == self.path and BACKUP_STAGING_DIR in dirs:
                dirs.remove(BACKUP_STAGING_DIR)  # links to files counted where they are
            for name in names:
                total += file_size(os.path.join(root, name))
        return total


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0
