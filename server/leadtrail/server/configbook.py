"""Named configuration of every account, kept in one JSON file of the data directory.

Alert rules, sinks and export jobs are each a ``NamedBook``: entries keyed by account and
name, held in memory (readers never touch the disk) and in one ``ConfigFile`` replaced
whole on every change (they change rarely).

Every step of a write goes through the storage ``Files`` seam (fault tests fail or crash
each one). A crash leaves the old file or the new one and perhaps a temporary file, which
loading the file removes. A change that fails stores nothing: the book in memory keeps the
old entries, and the file is put back to them when the failure came after the new one took
its place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import orjson

from leadtrail.storage import Files

FORMAT = 1
"""Of every file a ``ConfigFile`` writes (its ``format`` field)."""
TMP_SUFFIX = ".tmp"

Key = tuple[str, str]
"""An entry's account and name."""


class ConfigFileError(Exception):
    """A configuration file cannot be read; the message names the file and the problem."""


class Named(Protocol):
    """What a ``NamedBook`` holds: an entry of one account, by name."""

    @property
    def account_id(self) -> str: ...

    @property
    def key(self) -> Key: ...


class Numbered(Named, Protocol):
    """An entry a book numbers: a dataclass with a ``revision`` field."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def revision(self) -> int: ...


T = TypeVar("T", bound=Named)
N = TypeVar("N", bound=Numbered)
P = TypeVar("P")


class ConfigFile:
    """One JSON file ``{"format": 1, ...}``, read whole and replaced whole, atomically.

    ``mode`` (0600 for files holding secrets) is given to the temporary file before a byte
    is written; ``error`` is the exception a file that cannot be read raises (its message
    names the file and the problem)."""

    def __init__(
        self, path: str, files: Files, *, mode: int | None = None, error: type[Exception] = ConfigFileError
    ) -> None:
        self.path = path
        self._files = files
        self._mode = mode
        self._error = error
        self._stored: bytes | None = None
        """The file's bytes as last read or written (None: no file), put back when a change fails."""
        self._directory_made = False

    def load(self, parse: Callable[[dict[str, Any]], P]) -> P | None:
        """``parse`` of the file's JSON object (its format checked), None when there is no file.

        Removes first the temporary file a write that crashed may have left (perhaps half
        written, perhaps holding secrets): the file itself is the old one or the new one."""
        tmp = self.path + TMP_SUFFIX
        try:
            self._files.remove(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._error(f"{tmp}: cannot remove a leftover of a write: {e}") from None
        try:
            with open(self.path, "rb") as f:
                stored = f.read()
            raw = orjson.loads(stored)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise self._error(f"{self.path}: {e}") from None
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            parsed = parse(raw)
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
            raise self._error(f"{self.path}: {e}") from None
        self._stored = stored
        return parsed

    def store(self, content: dict[str, Any]) -> None:
        """Replace the file with ``{"format": 1, **content}`` or, raising OSError, leave it as it
        was (put back when the failure came after the rename)."""
        data = orjson.dumps({"format": FORMAT, **content}, option=orjson.OPT_INDENT_2)
        if not self._directory_made:
            # Made once per open: a crash between the directory's creation and its parent's
            # fsync is healed by the next open.
            self._files.make_directory(os.path.dirname(self.path))
            self._directory_made = True
        self._files.replace_file(self.path, data, self._stored, TMP_SUFFIX, mode=self._mode)
        self._stored = data


@dataclass(frozen=True, slots=True)
class BookForm(Generic[T]):
    """What a ``NamedBook`` holds and how its file spells it."""

    section: str
    """The key of the entries' list in the file (``rules``, ``sinks``, ``jobs``)."""
    to_json: Callable[[T], dict[str, Any]]
    from_json: Callable[[dict[str, Any]], T]
    limit: int
    """The most entries an account may hold: a new one over it raises ``too_many``, which
    names them as ``noun`` (``alert rules``)."""
    too_many: type[Exception]
    noun: str
    revision: Callable[[T], int] | None = None
    """An entry's revision and (``revised``) the entry with another: when given (``numbered``),
    the book numbers every change."""
    revised: Callable[[T, int], T] | None = None

    def numbered(self: BookForm[N]) -> BookForm[N]:
        """This form, its entries numbered by their ``revision`` field."""
        return replace(self, revision=_revision_of, revised=_with_revision)


def _revision_of(entry: Numbered) -> int:
    return entry.revision


def _with_revision(entry: N, revision: int) -> N:
    return replace(entry, revision=revision)


class NamedBook(Generic[T]):
    """Every account's entries of one kind, by account and name, in memory and in one file.

    ``lock`` orders the changes (they are made on threads of the read pool); it is
    reentrant, so that a caller may hold it around a change of its own. Listeners hear of
    the entries on ``notify``, on the thread that calls it (the event loop), in order."""

    def __init__(self, file: ConfigFile, form: BookForm[T]) -> None:
        self.file = file
        self.form = form
        self.lock = threading.RLock()
        self._listeners: list[Callable[[list[T]], None]] = []
        self._revision = 0
        """The last revision given (kept in the file, so it never goes back)."""
        self._entries: dict[Key, T] = file.load(self._parse) or {}

    def _parse(self, raw: dict[str, Any]) -> dict[Key, T]:
        entries = [self.form.from_json(e) for e in raw[self.form.section]]
        revision_of = self.form.revision
        if revision_of is not None:
            revision = raw.get("revision", 0)
            if type(revision) is not int or revision < 0:
                raise ValueError(f"revision {revision!r} is not a revision")
            self._revision = max([revision, *(revision_of(e) for e in entries)])
        return {e.key: e for e in entries}

    def entries(self, account_id: str | None = None) -> list[T]:
        """The entries of ``account_id`` (of every account when None), by account and name."""
        chosen = (e for e in self._entries.values() if account_id is None or e.account_id == account_id)
        return sorted(chosen, key=lambda e: e.key)

    def get(self, account_id: str, name: str) -> T | None:
        return self._entries.get((account_id, name))

    def by_key(self) -> dict[Key, T]:
        """A copy of every entry by key, to change and ``write``."""
        return dict(self._entries)

    def set(self, entry: T) -> T:
        """Create or replace ``entry`` (by account and name), durably; numbered with the next
        revision when the book numbers them. Raises ``form.too_many`` for a new entry of an
        account that holds ``form.limit`` already."""
        with self.lock:
            if entry.key not in self._entries:
                held = sum(1 for key in self._entries if key[0] == entry.account_id)
                if held >= self.form.limit:
                    raise self.form.too_many(
                        f"account {entry.account_id!r} holds {held} {self.form.noun}, the most it may hold "
                        f"({self.form.limit}); delete one first"
                    )
            revision = self._revision
            if self.form.revised is not None:
                revision += 1
                entry = self.form.revised(entry, revision)
            self.write({**self._entries, entry.key: entry}, revision)
        return entry

    def delete(self, account_id: str, name: str) -> bool:
        """False when the account has no entry of that name."""
        with self.lock:
            key = (account_id, name)
            if key not in self._entries:
                return False
            self.write({k: e for k, e in self._entries.items() if k != key}, self._revision)
        return True

    def write(self, entries: dict[Key, T], revision: int | None = None) -> None:
        """``save`` then ``hold``: raising OSError, memory and the file stay as they were."""
        self.save(entries, revision)
        self.hold(entries, revision)

    def save(self, entries: dict[Key, T], revision: int | None = None) -> None:
        """Store ``entries`` (``revision``: the last given; None keeps it), not yet seen by readers
        (``hold``): a caller changing other files too shows every change at once."""
        content: dict[str, Any] = {}
        if self.form.revised is not None:
            content["revision"] = self._revision if revision is None else revision
        content[self.form.section] = [self.form.to_json(entries[key]) for key in sorted(entries)]
        self.file.store(content)

    def hold(self, entries: dict[Key, T], revision: int | None = None) -> None:
        """What readers see from now on, once ``save`` stored it."""
        self._entries = entries
        if revision is not None:
            self._revision = revision

    def add_listener(self, listener: Callable[[list[T]], None]) -> None:
        self._listeners.append(listener)

    def notify(self) -> None:
        """Tell the listeners every entry as it is now."""
        entries = self.entries()
        for listener in self._listeners:
            listener(entries)
