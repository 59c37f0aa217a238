"""The file operations of the write path, behind one small seam.

Every operation that can make an append fail (open, write, fsync, truncate,
rename, remove, directory fsync) goes through a ``Files`` object so that
fault tests can inject ``OSError`` (ENOSPC, EIO) at each of them, the way
LevelDB tests its log writer against in-memory fakes. Reads use ``os.pread``
directly: a failed read fails only that read.
"""

from __future__ import annotations

import os


class Files:
    """The real file system. Subclass and override to inject faults."""

    def open_for_append(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        os.fdatasync(fd)

    def chmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        # A new, renamed or deleted directory entry is durable only once the
        # directory itself is fsynced.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_file_atomically(
        self, path: str, data: bytes | memoryview, tmp_suffix: str = ".tmp", mode: int | None = None
    ) -> None:
        """Write under a temporary name, fsync, rename over ``path``, fsync the directory.

        The one way any file of a data directory is replaced (metadata, dictionaries,
        rewritten segments, quarantined bytes): a crash at any step leaves the old file
        or the new one, and a leftover temporary file that the next open removes. Every
        step goes through this seam, so that fault tests can fail or crash each one.
        ``mode`` (e.g. 0o600 for a file holding secrets) is set before a byte is written.
        """
        tmp = path + tmp_suffix
        fd = self.open_for_append(tmp)
        try:
            if mode is not None:
                self.chmod(fd, mode)
            self.truncate(fd, 0)  # a leftover of an earlier attempt
            self.write(fd, data)
            self.fsync(fd)
        finally:
            self.close(fd)
        self.rename(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")


OS_FILES = Files()
