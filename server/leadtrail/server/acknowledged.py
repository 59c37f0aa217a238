"""The newest position the writer worker has acknowledged, shared with its followers.

Eight bytes of a file in the server's private directory, mapped into memory by
every worker: the writer raises the number before it answers an append; a
follower compares it with what it serves before it answers a read, and waits
(bounded) for the notice that brings it there (follower.py). So a client reads
through any worker what it was told is stored, as from a single process, while
appends never wait for the followers and a read waits only in the moment
between an acknowledgement and its notice. Positions only grow, and the file
outlives a writer's restart (a follower keeps its mapping of it).
"""

from __future__ import annotations

import mmap
import os
import struct

_POSITION = struct.Struct("<Q")
FILE_NAME = "acknowledged"


class AcknowledgedPosition:
    def __init__(self, path: str, writable: bool) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY, 0o600)
        try:
            if writable and os.fstat(fd).st_size < _POSITION.size:
                os.ftruncate(fd, _POSITION.size)
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self._map = mmap.mmap(fd, _POSITION.size, access=access)
        finally:
            os.close(fd)

    def get(self) -> int:
        position: int = _POSITION.unpack_from(self._map)[0]
        return position

    def raise_to(self, position: int) -> None:
        """The writer's side, on its event loop: one aligned 8-byte store."""
        if position > self.get():
            _POSITION.pack_into(self._map, 0, position)

    def close(self) -> None:
        self._map.close()
