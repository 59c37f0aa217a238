"""The file operations of the write path, behind one small seam.

Every operation that can make an append fail (open, chmod, write, fsync,
truncate, rename, remove, directory fsync) goes through a ``Files`` object so that
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

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def chmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

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
        rewritten segments, quarantined bytes, the server's rules and consumer positions):
        a crash at any step leaves the old file or the new one, and a leftover temporary
        file that the next open removes. Every step goes through this seam, so that fault
        tests can fail or crash each one.

        ``mode``: the temporary file (so the file it becomes) gets exactly this mode
        before a byte is written, whatever the umask or a leftover's mode, for files
        that hold secrets. None leaves the mode ``open_for_append`` gives.
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

    def replace_file(
        self,
        path: str,
        data: bytes,
        previous: bytes | None,
        tmp_suffix: str = ".tmp",
        mode: int | None = None,
    ) -> None:
        """``write_file_atomically``; when a step fails, put ``previous`` back (None: no file)
        before re-raising, so that a failed change stores nothing.

        A failure before the rename left the old file in place (writing it again changes
        nothing); one after it (the directory fsync) may have left the new file, which a
        restart would read although the caller was told nothing was stored. If putting
        back fails too (a disk that now fails every write), the file may hold the failed
        change, but only when the rename was done before the first failure; the next change
        that succeeds replaces it, and a restart before that reads the failed change. The
        first error is raised, with a note saying that putting back failed.
        """
        try:
            self.write_file_atomically(path, data, tmp_suffix, mode)
        except OSError as e:
            try:
                if previous is not None:
                    self.write_file_atomically(path, previous, tmp_suffix, mode)
                else:
                    try:
                        self.remove(path)
                    except FileNotFoundError:
                        pass
                    else:
                        self.fsync_dir(os.path.dirname(path) or ".")
            except OSError as again:
                e.add_note(f"{path}: putting the previous content back failed too: {again}")
            raise

    def make_directory(self, path: str) -> None:
        """Create ``path`` (and missing parents) and fsync its parent, so that a file
        written into it next is not lost with the directory's own entry on a power cut.

        Harmless on a directory that exists: callers make it once per open rather than
        remembering whether a crash came between its creation and the fsync.
        """
        os.makedirs(path, exist_ok=True)
        self.fsync_dir(os.path.dirname(os.path.abspath(path)))


OS_FILES = Files()
