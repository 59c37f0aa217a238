"""A consumer's stored position: ``<data>/consumers/<name>.json``.

The file holds the last position whose work is done and the consumer's own state
as of that position (JSON), written atomically (temporary file, fsync, rename,
directory fsync): a crash leaves the previous save or this one, never a mix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

from leadtrail.storage import Files

DIRECTORY = "consumers"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
FORMAT = 1


class PositionFileError(Exception):
    """A stored position cannot be read; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Saved:
    position: int
    """Every event up to this position has been handled."""
    state: Any
    """What the handler saved with it (JSON values), None when it saves nothing."""


class ConsumerPosition:
    def __init__(self, data_dir: str, name: str, files: Files | None = None) -> None:
        if not NAME.match(name):
            raise ValueError(f"consumer name {name!r}: expected {NAME.pattern}")
        self.name = name
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, name + ".json")
        self._files = files or Files()

    def load(self) -> Saved | None:
        """The last save, or None when the consumer never saved (a new consumer)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            saved = orjson.loads(raw)
            if saved.get("format") != FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, expected {FORMAT}")
            position = saved["position"]
            if type(position) is not int or position < 0:
                raise ValueError(f"position {position!r} is not a position")
            return Saved(position, saved.get("state"))
        except (ValueError, KeyError, AttributeError) as e:
            raise PositionFileError(f"{self.path}: {e}") from None

    def save(self, position: int, state: Any = None) -> None:
        """Durably: when this returns, a restart resumes after ``position``."""
        os.makedirs(self.directory, exist_ok=True)
        data = orjson.dumps({"format": FORMAT, "position": position, "state": state})
        self._files.write_file_atomically(self.path, data)

    def remove(self) -> None:
        try:
            self._files.remove(self.path)
        except FileNotFoundError:
            return
        self._files.fsync_dir(self.directory)
