"""The storage engine's error tree: one root, modelled on PEP 249.

Every foreign error (OSError, lmdb.Error, zstd errors) is translated into one
of these where it crosses into the engine, with the original kept as
``__cause__``. The server maps these classes to gRPC status codes in one place.
"""

from __future__ import annotations

import errno as _errno
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import lmdb

_P = ParamSpec("_P")
_R = TypeVar("_R")


class StorageError(Exception):
    """Root of every error raised by ``leadtrail.storage``."""


class InvalidArgumentError(StorageError):
    """A bad argument to an engine call (a limit out of range, a malformed policy or token).

    The caller can fix it; every other error is the store's own state or the disk's.
    """


class ValidationError(InvalidArgumentError):
    """An event breaks a rule of the contract; the whole batch was rejected.

    ``index`` is the position of the offending event in the request, ``field``
    the field name (dotted for nested values) and ``rule`` a human sentence
    naming the limit or pattern that was broken.
    """

    def __init__(self, index: int | None, field: str, rule: str) -> None:
        self.index = index
        self.field = field
        self.rule = rule
        where = f"events[{index}].{field}" if index is not None else field
        super().__init__(f"{where}: {rule}")


class LimitExceededError(ValidationError):
    """A request is larger than a configured limit (too many events, too big)."""


class NotWritableError(StorageError):
    """The store refuses appends: it failed a write/fsync or was opened read-only.

    After a failed write or fsync nothing more is acknowledged until the
    process restarts and recovery has re-established what is durable.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        self.errno = errno
        super().__init__(message)

    @property
    def disk_full(self) -> bool:
        return self.errno in (_errno.ENOSPC, _errno.EDQUOT)


class CorruptionError(StorageError):
    """Bytes of the log fail their checks in a place a crash cannot explain."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        first = problems[0] if problems else "corruption"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


class ClosedError(StorageError):
    """The store was closed."""


class InvalidCursorError(InvalidArgumentError):
    """A page token could not be decoded or belongs to another query."""


class DataDirectoryError(StorageError):
    """The data directory cannot be used (locked by another process, wrong layout)."""


class MetadataFileError(DataDirectoryError):
    """A metadata file of the data directory (retention.json, fields.json, retired.json,
    ...) cannot be read or does not hold what it should; the message names the file."""


class NotFoundError(StorageError):
    """What was asked for is not in the store (a position past the log's end, one holding no
    chained event)."""


class LegalHoldError(StorageError):
    """The account is under a legal hold: nothing of it may be erased until it is lifted."""


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """The one boundary: a foreign error (a file operation, LMDB) that reaches a caller of
    the engine leaves it as a ``StorageError`` saying what was being done."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise DataDirectoryError(f"{doing} failed: {e.strerror or e}{where}") from e
    except lmdb.Error as e:
        raise StorageError(f"{doing} failed in the index: {e}") from e


def translating(doing: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """``translated`` around every call of a method."""

    def wrap(method: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(method)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with translated(doing):
                return method(*args, **kwargs)

        return call

    return wrap
