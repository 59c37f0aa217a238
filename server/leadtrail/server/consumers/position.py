"""A consumer's stored position: ``<data>/consumers/<name>.json``.

The file holds the last position whose work is done and the consumer's own state
as of that position (JSON), written atomically (temporary file, fsync, rename,
directory fsync): a crash leaves the previous save or this one, never a mix, and
perhaps a leftover ``<name>.json.tmp`` that the next ``load`` removes. A save that
fails puts the previous save back (the consumer goes back to it too, and replays).
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
TMP_SUFFIX = ".tmp"


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
        self._directory_made = False
        self._stored: bytes | None = None
        """The file's bytes as last read or written (None: no file), put back when a save fails."""
        self._stored_known = False

    def load(self) -> Saved | None:
        """The last save, or None when the consumer never saved (a new consumer).

        Removes the temporary file a save that crashed left behind (the saved file is
        untouched by it: the crash came before or after its rename)."""
        tmp = self.path + TMP_SUFFIX
        try:
            self._files.remove(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise PositionFileError(f"{tmp}: cannot remove a leftover of a save: {e}") from None
        raw = self._read()
        if raw is None:
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
        """Durably: when this returns, a restart resumes after ``position``. Raising OSError,
        it leaves the previous save in place."""
        previous = self._stored if self._stored_known else self._read()
        if not self._directory_made:
            self._files.make_directory(self.directory)
            self._directory_made = True
        data = orjson.dumps({"format": FORMAT, "position": position, "state": state})
        self._files.replace_file(self.path, data, previous, TMP_SUFFIX)
        self._stored = data

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = None
        self._stored, self._stored_known = raw, True
        return raw

    def remove(self) -> None:
        try:
            self._files.remove(self.path)
        except FileNotFoundError:
            return
        finally:
            self._stored, self._stored_known = None, False
        self._files.fsync_dir(self.directory)
