"""Which part a process plays under ``leadtrail serve --workers N``.

Worker 0 is the writer: it opens the store as a single server does and owns
the writer, the durable consumers, keys and every mutating admin call; it also
listens on a private Unix socket for the other workers. Workers 1..N-1 are
followers: they read the store from disk and send everything else to worker 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .acknowledged import FILE_NAME


@dataclass(frozen=True)
class WorkerRole:
    index: int
    count: int
    private_socket: str
    """The writer's private socket (a path), in a directory only this user can enter."""

    @property
    def acknowledged_file(self) -> str:
        """The writer's acknowledged position (acknowledged.py), beside its socket."""
        return os.path.join(os.path.dirname(self.private_socket), FILE_NAME)

    @property
    def writer(self) -> bool:
        return self.index == 0

    @property
    def name(self) -> str:
        return "writer" if self.writer else "follower"
