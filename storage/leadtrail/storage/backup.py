"""Online backups of a data directory, and restoring one.

A backup is consistent at one committed position P while appends go on. The
store takes a ``Snapshot`` between two commit groups, with no maintenance
running (``EventLog.backup_snapshot``): it hard-links every file of the data
directory into a staging directory (``backup.tmp/N/``) and notes the
committed size of the active segment. That takes a few microseconds a file,
so appends wait for no copy. Afterwards a rewrite (erasure, retention) that
renames a new segment over an old one, or retention deleting one, leaves the
staged link on the old bytes, and appends to the active segment land after
the size noted, so the snapshot's bytes are those of position P however long
the copy takes. Left out: the index (derived: the restored store's first open
rebuilds it from the log), ``LOCK`` and lock files, ``backup.tmp/`` and the
temporary files of writes under way (``.tmp``, ``.compact``, ``.partial``).
Everything else is in: the segments, dictionaries, metadata files and keys of
the store, and the server's files beside them (API keys, alert rules, sinks
and their files, export jobs and their files, consumer positions); a file that
grows by appends (a files sink's output) is taken at its size when staged.

The SHA-256 of every file but the active segment is kept by (name, inode,
size, mtime) for the life of the process, so an incremental backup reads only
the files that changed (and the active segment) to find what to send.

The receiving side is a backup directory (``BackupDirectory``): one file per
name of the data directory (``log/00000000000000000001.log``, ``keys.json``),
each written as ``NAME.part``, fsynced and renamed, and ``manifest.json``,
replaced atomically once every file it names is in place: position, chain
hash, a signed checkpoint, the SHA-256 and size of every file. A second backup
into the same directory receives only the files whose name, size or SHA-256
changed (sealed segments never change, so mostly the active segment).

``restore`` checks every file against the manifest while it copies it into an
empty data directory; a file that does not match is refused by name and the
target is left as empty as it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .chain import GENESIS, HASH_BYTES, ChainPoint
from .datadir import BACKUP_STAGING_DIR
from .errors import StorageError
from .fs import OS_FILES, Files

STAGING_DIR = BACKUP_STAGING_DIR
"""Under the data directory: the staged links of the backups under way (removed when each
ends, and any leftover when the next one starts)."""
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20
"""Bytes read (and sent) at a time."""
FILE_MODE = 0o600
"""Backups and restored files hold the store's keys: readable by their owner only."""
DIR_MODE = 0o700

_LOG_DIR = "log"
_NOT_BACKED_UP_DIRS = frozenset({"index", "index.new", "index.old", STAGING_DIR})
"""Derived (the index, rebuilt on restore) or the backups' own staging."""
_NOT_BACKED_UP_FILES = frozenset({"LOCK"})
_TEMP_SUFFIXES = (".tmp", ".compact", ".partial", PART_SUFFIX, ".lock")
"""Files being written (left over by a crash, or under way) and lock files: never state."""
_MAX_NAME = 4096


class BackupError(StorageError):
    """A backup directory that is damaged, incomplete or not a backup; a backup stream that
    does not hold what it announced."""


class RestoreTargetError(BackupError):
    """The directory a restore was to fill is not empty (nothing was written to it)."""


def check_name(name: str) -> str:
    """``name`` if it names a file inside a directory (``log/0001.log``), else BackupError:
    names come from the other side of a connection and must not escape the directory."""
    parts = name.split("/")
    if (
        not 0 < len(name) <= _MAX_NAME
        or "\x00" in name
        or any(part in ("", ".", "..") for part in parts)
        or parts[0].startswith(MANIFEST)  # the manifest and its temporary file are the directory's own
        or name.endswith(PART_SUFFIX)  # a file being received
    ):
        raise BackupError(f"backup file name {name!r} is not a file name inside a data directory")
    return name


# -- the snapshot (server side) ------------------------------------------------------------------


class SegmentFile(Protocol):
    """What a snapshot needs of a segment (segment.Segment)."""

    @property
    def path(self) -> str: ...

    @property
    def sealed(self) -> bool: ...

    @property
    def size(self) -> int:
        """For the unsealed last segment: the bytes committed (the writer's size)."""
        ...


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    name: str
    """The file's path under the data directory, with ``/``."""
    path: str
    """The staged copy (a hard link, or a copy where links do not work)."""
    size: int
    """The bytes that belong to the backup (of the active segment: those committed)."""
    identity: tuple[int, int, int] | None
    """(inode, size, mtime_ns) of a file that changes only by being replaced: its SHA-256
    is worked out once per process (``Snapshots``); None for the active segment."""


@dataclass
class Snapshot:
    """The data directory at ``position``; ``close`` removes the staged links."""

    position: int
    chain: ChainPoint
    store_id: str
    files: list[SnapshotFile]
    staging: str
    _owner: Snapshots = field(repr=False)

    def read(self, file: SnapshotFile, offset: int, size: int = CHUNK_BYTES) -> bytes:
        """At most ``size`` bytes of ``file`` from ``offset``, never past its snapshot size."""
        size = max(0, min(size, file.size - offset))
        if size == 0:
            return b""
        with open(file.path, "rb") as f:
            data = os.pread(f.fileno(), size, offset)
        if len(data) != size:
            raise BackupError(
                f"{file.name}: {file.size} bytes expected, the file ended at {offset + len(data)}"
            )
        return data

    def sha256(self, file: SnapshotFile) -> str:
        """The hex SHA-256 of the file's snapshot bytes (of an unchanged file, read once)."""
        return self._owner.sha256(self, file)

    def close(self) -> None:
        self._owner.release(self)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Snapshots:
    """The backups of one open store: their staging directories, and the SHA-256 of each
    file already hashed, so that an incremental backup does not read unchanged segments."""

    def __init__(self, data_dir: str) -> None:
        self._data_dir = data_dir
        self._staging_root = os.path.join(data_dir, STAGING_DIR)
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._numbers = itertools.count(1)
        self._digests: dict[tuple[str, tuple[int, int, int]], str] = {}

    def take(
        self, position: int, chain: ChainPoint, store_id: bytes, segments: Sequence[SegmentFile]
    ) -> Snapshot:
        """Stage the data directory as it is now. Call it where nothing commits, rewrites or
        deletes a segment (the writer thread, under the maintenance lock)."""
        with self._lock:
            staging = os.path.join(self._staging_root, str(next(self._numbers)))
            self._remove_leftovers()
            self._live.add(staging)
        try:
            os.makedirs(staging, mode=DIR_MODE)
            staged: list[SnapshotFile] = []
            numbers = itertools.count()
            for name, source, committed in _data_files(self._data_dir, segments):
                path = os.path.join(staging, str(next(numbers)))
                staged.append(_stage(name, source, path, committed))
        except BaseException:
            self._drop(staging)
            raise
        return Snapshot(position, chain, store_id.decode(), staged, staging, self)

    def sha256(self, snapshot: Snapshot, file: SnapshotFile) -> str:
        if file.identity is not None:
            known = self._digests.get((file.name, file.identity))
            if known is not None:
                return known
        digest = hashlib.sha256()
        offset = 0
        while offset < file.size:
            data = snapshot.read(file, offset)
            digest.update(data)
            offset += len(data)
        value = digest.hexdigest()
        if file.identity is not None:
            with self._lock:
                self._digests[(file.name, file.identity)] = value
        return value

    def release(self, snapshot: Snapshot) -> None:
        self._drop(snapshot.staging)
        names = {f.name: f.identity for f in snapshot.files}
        with self._lock:
            # Only the newest version of a file is asked for again: forget the others.
            for key in [k for k in self._digests if k[0] not in names or names[k[0]] != k[1]]:
                del self._digests[key]

    def _drop(self, staging: str) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        with self._lock:
            self._live.discard(staging)

    def _remove_leftovers(self) -> None:
        """Staging directories of backups that a crash interrupted (one process has the
        store open: those of this process are the only live ones)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self._staging_root):
                path = os.path.join(self._staging_root, name)
                if path not in self._live:
                    shutil.rmtree(path, ignore_errors=True)


def _data_files(data_dir: str, segments: Sequence[SegmentFile]) -> Iterator[tuple[str, str, int | None]]:
    """(name, path, committed size or None for the whole file) of every file a backup holds:
    the segments the store knows, and every other file but the derived and the temporary."""
    for segment in segments:
        committed = None if segment.sealed else segment.size
        yield f"{_LOG_DIR}/{os.path.basename(segment.path)}", segment.path, committed
    for root, dirs, names in os.walk(data_dir):
        relative = os.path.relpath(root, data_dir)
        if relative == ".":
            dirs[:] = sorted(d for d in dirs if d not in _NOT_BACKED_UP_DIRS and d != _LOG_DIR)
            names = [n for n in names if n not in _NOT_BACKED_UP_FILES]
        else:
            dirs.sort()
        for name in sorted(names):
            if name.endswith(_TEMP_SUFFIXES):
                continue
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield (name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"), path, None


def _stage(name: str, source: str, path: str, committed: int | None) -> SnapshotFile:
    try:
        os.link(source, path)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        # A file system without hard links: a copy, taken while the store waits.
        _copy_prefix(source, path, committed)
    info = os.stat(path)
    if committed is None:
        return SnapshotFile(name, path, info.st_size, (info.st_ino, info.st_size, info.st_mtime_ns))
    return SnapshotFile(name, path, committed, None)


def _copy_prefix(source: str, path: str, size: int | None) -> None:
    with open(source, "rb") as src, open(path, "wb") as dst:
        left = size if size is not None else -1
        while left != 0:
            data = src.read(CHUNK_BYTES if left < 0 else min(CHUNK_BYTES, left))
            if not data:
                break
            dst.write(data)
            left = left - len(data) if left > 0 else left


def manifest_json(
    snapshot: Snapshot, digests: Mapping[str, str], checkpoint: Mapping[str, Any] | None, created_at: str
) -> bytes:
    """The manifest of a backup of ``snapshot`` (see ``Manifest``)."""
    value = {
        "format": MANIFEST_FORMAT,
        "position": snapshot.position,
        "chain_hash": snapshot.chain.chain_hash.hex(),
        "chain_position": snapshot.chain.position,
        "recorded_at_ms": snapshot.chain.recorded_at_ms,
        "checkpoint": dict(checkpoint) if checkpoint is not None else None,
        "store_id": snapshot.store_id,
        "files": {f.name: digests[f.name] for f in snapshot.files},
        "sizes": {f.name: f.size for f in snapshot.files},
        "created_at": created_at,
    }
    return json.dumps(value, indent=1).encode() + b"\n"


# -- the manifest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a backup directory."""

    position: int
    """Every event up to it (committed when the backup was taken) is in the backup."""
    chain_hash: bytes
    """The chain hash at ``chain_position``: the last chained event up to ``position``."""
    chain_position: int
    recorded_at_ms: int
    checkpoint: dict[str, Any] | None
    """The ``SignedCheckpoint`` at ``position`` in protobuf's JSON mapping (proto field names,
    bytes in base64); None when the server signed none (no chained event there)."""
    store_id: str
    files: dict[str, str]
    """name -> hex SHA-256."""
    sizes: dict[str, int]
    created_at: str

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        try:
            raw: Any = json.loads(data)
            if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else None!r} is not 1")
            files = {check_name(str(k)): str(v) for k, v in dict(raw["files"]).items()}
            sizes = {check_name(str(k)): int(v) for k, v in dict(raw["sizes"]).items()}
            chain_hash = bytes.fromhex(str(raw["chain_hash"]))
            checkpoint = raw.get("checkpoint")
            manifest = cls(
                position=int(raw["position"]),
                chain_hash=chain_hash,
                chain_position=int(raw["chain_position"] if "chain_position" in raw else raw["position"]),
                recorded_at_ms=int(raw.get("recorded_at_ms", 0)),
                checkpoint=dict(checkpoint) if checkpoint is not None else None,
                store_id=str(raw.get("store_id", "")),
                files=files,
                sizes=sizes,
                created_at=str(raw.get("created_at", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BackupError(f"{MANIFEST} is not a backup manifest: {e!r}") from None
        if len(chain_hash) != HASH_BYTES or set(files) != set(sizes):
            raise BackupError(f"{MANIFEST} is not a backup manifest: bad chain_hash or files/sizes")
        if any(not re.fullmatch(r"[0-9a-f]{64}", v) for v in files.values()):
            raise BackupError(f"{MANIFEST} is not a backup manifest: a sha256 is not 64 hex digits")
        return manifest

    @property
    def chained(self) -> bool:
        return self.chain_hash != GENESIS


def read_manifest(directory: str) -> Manifest:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BackupError(f"{directory} holds no backup: no {MANIFEST}") from None
    except OSError as e:
        raise BackupError(f"{MANIFEST} cannot be read: {e.strerror or e} ({path})") from e
    return Manifest.parse(data)


# -- a backup directory (receiving side) ---------------------------------------------------------


def file_sha256(path: str, size: int | None = None) -> str | None:
    """The hex SHA-256 of a file; None if it is missing or not ``size`` bytes long."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if size is not None and os.fstat(f.fileno()).st_size != size:
                return None
            while data := f.read(CHUNK_BYTES):
                digest.update(data)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return digest.hexdigest()


class BackupDirectory:
    """A backup directory being brought up to date.

    The manifest is the commit point. Each file received goes to ``NAME.part``
    (fsynced) and stays there while the manifest in place still names the old
    ``NAME``; then the new manifest replaces the old one atomically, and only then
    is each ``NAME.part`` renamed over ``NAME`` and what the manifest no longer
    names removed. A crash or an I/O error at any step leaves a directory that
    restores to the old backup or to the new one: before the manifest, the old
    files are all in place; after it, each file the new manifest names is either
    ``NAME`` or ``NAME.part`` (``restore`` takes the one that matches, and the
    next backup into the directory finishes the renames first)."""

    def __init__(self, path: str, files: Files = OS_FILES) -> None:
        self.path = path
        self._files = files
        if not os.path.isdir(path):
            files.make_directory(path)
            os.chmod(path, DIR_MODE)
        self._made_dirs: set[str] = {path}
        self._received: dict[str, FileReceiver] = {}
        self._manifest = self._complete()
        if self._manifest is None and _holds_files(path):
            # Files a backup did not write: a backup removes what its manifest does not name.
            raise BackupError(f"{path} is neither empty nor a backup directory (no {MANIFEST})")

    def _complete(self) -> Manifest | None:
        """The manifest in place, after finishing the renames of a backup interrupted after it."""
        try:
            manifest = read_manifest(self.path)
        except BackupError:
            return None
        renamed = set()
        for name, size in manifest.sizes.items():
            path = self._file(name)
            if not os.path.exists(path + PART_SUFFIX):
                continue
            expected = manifest.files[name]
            if file_sha256(path + PART_SUFFIX, size) == expected and file_sha256(path, size) != expected:
                self._files.rename(path + PART_SUFFIX, path)
                renamed.add(os.path.dirname(path))
        for directory in sorted(renamed):
            self._files.fsync_dir(directory)
        return manifest

    def held(self) -> dict[str, tuple[int, str]]:
        """name -> (size, sha256) of each file the manifest in place names that is whole here
        (hashed again: a damaged copy is sent anew)."""
        manifest = self._manifest
        if manifest is None:
            return {}
        held = {}
        for name, size in manifest.sizes.items():
            digest = file_sha256(self._file(name), size)
            if digest == manifest.files[name]:
                held[name] = (size, digest)
        return held

    def receive(self, name: str, size: int, sha256: str) -> FileReceiver:
        """A file of the backup under way, written to ``NAME.part``; ``finish`` it once whole."""
        path = self._file(check_name(name))
        if name in self._received:
            raise BackupError(f"{name}: sent twice")
        directory = os.path.dirname(path)
        if directory not in self._made_dirs:
            self._files.make_directory(directory)
            self._made_dirs.add(directory)
        receiver = self._received[name] = FileReceiver(self._files, name, path + PART_SUFFIX, size, sha256)
        return receiver

    def finish(self, manifest_data: bytes) -> Manifest:
        """Check that every file the manifest names was received whole or is here as it says,
        put the manifest in place (the commit), then the files received, and remove the files
        it no longer names."""
        manifest = Manifest.parse(manifest_data)
        for name, receiver in self._received.items():
            if not receiver.done:
                raise BackupError(f"{name}: not received whole")
            if manifest.files.get(name) != receiver.sha256 or manifest.sizes.get(name) != receiver.size:
                raise BackupError(f"{name}: received, but the manifest names it otherwise")
        for name, size in manifest.sizes.items():
            if name in self._received:
                continue
            try:
                actual = os.path.getsize(self._file(name))
            except FileNotFoundError:
                raise BackupError(f"{name}: named by the manifest but neither here nor received") from None
            if actual != size:
                raise BackupError(f"{name}: {actual} bytes here, the manifest says {size}")
        for directory in sorted(self._made_dirs, key=len, reverse=True):
            self._files.fsync_dir(directory)  # the new files' entries before the manifest naming them
        path = os.path.join(self.path, MANIFEST)
        try:
            self._files.write_file_atomically(path, manifest_data, mode=FILE_MODE)
        except OSError:
            if _contents(path) == manifest_data:  # renamed before the failure: committed all the same
                self._manifest, self._received = manifest, {}
            raise
        # Committed: from here on the manifest names the .part files, which ``abandon`` must keep.
        self._manifest = manifest
        received, self._received = self._received, {}
        for name in sorted(received):
            path = self._file(name)
            self._files.rename(path + PART_SUFFIX, path)
        for directory in sorted(self._made_dirs, key=len, reverse=True):
            self._files.fsync_dir(directory)
        self._remove_others(set(manifest.files))
        return manifest

    def abandon(self) -> None:
        """Give up the backup under way (the manifest in place and its files stay)."""
        for receiver in self._received.values():
            receiver.abandon()
        self._received.clear()

    def _remove_others(self, keep: set[str]) -> None:
        for root, _dirs, names in os.walk(self.path, topdown=False):
            relative = os.path.relpath(root, self.path)
            removed = False
            for name in names:
                key = name if relative == "." else f"{relative.replace(os.sep, '/')}/{name}"
                if key == MANIFEST or key in keep:
                    continue
                self._files.remove(os.path.join(root, name))
                removed = True
            if removed:
                self._files.fsync_dir(root)
            if relative != "." and not os.listdir(root):
                os.rmdir(root)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, *name.split("/"))


def _holds_files(directory: str) -> bool:
    """Whether ``directory`` holds a file other than those an interrupted backup leaves."""
    return any(
        not name.endswith((PART_SUFFIX, ".tmp"))
        for _root, _dirs, names in os.walk(directory)
        for name in names
    )


def _contents(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class FileReceiver:
    """One file of a backup arriving in pieces into ``path`` (a ``NAME.part``): ``write`` each,
    then ``finish`` (checks the size and SHA-256 announced, fsyncs)."""

    def __init__(self, files: Files, name: str, path: str, size: int, sha256: str) -> None:
        self.name, self.size, self.sha256 = name, size, sha256
        self.done = False
        self.received = 0
        self._files = files
        self._path = path
        self._digest = hashlib.sha256()
        self._fd = files.open_for_append(path)
        try:
            files.chmod(self._fd, FILE_MODE)
            files.truncate(self._fd, 0)  # a leftover of an interrupted backup
        except BaseException:
            self.abandon()
            raise

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.size:
            raise BackupError(f"{self.name}: more than the {self.size} bytes announced")
        self._files.write(self._fd, data)
        self._digest.update(data)
        self.received += len(data)

    def finish(self) -> None:
        try:
            if self.received != self.size:
                raise BackupError(f"{self.name}: {self.received} bytes received of {self.size}")
            if self._digest.hexdigest() != self.sha256:
                raise BackupError(f"{self.name}: the bytes received do not have the sha256 announced")
            self._files.fsync(self._fd)
        except BaseException:
            self.abandon()
            raise
        fd, self._fd = self._fd, -1
        self._files.close(fd)
        self.done = True

    def abandon(self) -> None:
        """Give up the file (the backup failed): the manifest in place never names a ``.part``."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                self._files.close(fd)
        with contextlib.suppress(OSError):
            self._files.remove(self._path)


# -- restore --------------------------------------------------------------------------------------


def require_empty(target: str) -> None:
    """RestoreTargetError unless ``target`` is missing or an empty directory."""
    try:
        entries = os.listdir(target)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise RestoreTargetError(f"{target} is not a directory") from None
    if entries:
        raise RestoreTargetError(
            f"{target} is not empty ({len(entries)} entries): restore fills only an empty directory"
        )


def restore(
    source: str,
    target: str,
    files: Files = OS_FILES,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Copy the backup in ``source`` into the new data directory ``target`` (missing or
    empty), checking each file's size and SHA-256 against the manifest as it goes; any
    mismatch is a BackupError naming the file, and leaves ``target`` as it was.

    ``progress(done, total)`` is called with bytes copied. The index is not made here:
    the first open rebuilds it from the log."""
    manifest = read_manifest(source)
    require_empty(target)
    made = not os.path.exists(target)
    total = sum(manifest.sizes.values())
    done = 0
    directories: set[str] = set()
    try:
        files.make_directory(target)
        os.chmod(target, DIR_MODE)
        for name in sorted(manifest.files):
            path = os.path.join(target, *name.split("/"))
            directory = os.path.dirname(path)
            if directory not in directories:
                os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
                directories.add(directory)
            done = _restore_file(files, source, name, manifest, path, done, total, progress)
        for directory in sorted(directories | {target}, key=len, reverse=True):
            files.fsync_dir(directory)
        files.fsync_dir(os.path.dirname(os.path.abspath(target)))
    except BaseException:
        _empty(target, made)
        raise
    return manifest


def _restore_file(
    files: Files,
    source: str,
    name: str,
    manifest: Manifest,
    path: str,
    done: int,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    size, expected = manifest.sizes[name], manifest.files[name]
    copy = os.path.join(source, *name.split("/"))
    if os.path.exists(copy + PART_SUFFIX) and file_sha256(copy + PART_SUFFIX, size) == expected:
        copy += PART_SUFFIX  # a backup that ended between its manifest and this file's rename
    digest = hashlib.sha256()
    copied = 0
    try:
        src = open(copy, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise BackupError(f"{name}: in the manifest but missing from the backup") from None
    fd = files.open_for_append(path)
    try:
        files.chmod(fd, FILE_MODE)
        while data := src.read(CHUNK_BYTES):
            copied += len(data)
            if copied > size:
                break
            digest.update(data)
            files.write(fd, data)
            done += len(data)
            if progress is not None:
                progress(done, total)
        if copied != size:
            held = copied if copied <= size else "more"
            raise BackupError(f"{name}: damaged: {held} bytes, the manifest says {size}")
        if digest.hexdigest() != expected:
            raise BackupError(f"{name}: damaged: its sha256 is not the one in the manifest")
        files.fsync(fd)
    finally:
        src.close()
        files.close(fd)
    return done


def _empty(target: str, made: bool) -> None:
    """Undo a failed restore: ``target`` as it was (missing, or empty)."""
    if made:
        shutil.rmtree(target, ignore_errors=True)
    else:
        empty(target)


def empty(directory: str) -> None:
    """Remove everything in ``directory`` (what a refused restore put there)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)


__all__ = [
    "CHUNK_BYTES",
    "MANIFEST",
    "STAGING_DIR",
    "BackupDirectory",
    "BackupError",
    "FileReceiver",
    "Manifest",
    "RestoreTargetError",
    "Snapshot",
    "SnapshotFile",
    "Snapshots",
    "check_name",
    "empty",
    "manifest_json",
    "read_manifest",
    "require_empty",
    "restore",
]
