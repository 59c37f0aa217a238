"""Replacing the index by a new one, built beside it: compaction and rebuilds.

LMDB reuses freed pages but never shrinks its file: after retention removed
most events, or a rebuild rewrote every entry in place, ``index/data.mdb``
stayed as large as it ever was. Instead, the new index is built beside the
old one (a rebuild from the log, or ``Index.copy_live``: every entry in key
order, so pages are full and none is free), made durable, and swapped in:

1. ``index.new/`` gets the new index; its files and the directory are fsynced
   (``prepare``). Readers keep using the old index meanwhile.
2. With no reader holding the old index, ``index/`` is renamed to
   ``index.old/``, then ``index.new/`` to ``index/``, the data directory is
   fsynced, and ``index.old/`` is removed (``swap``).

A crash before step 2 leaves the old index in place; between its two renames,
no ``index/`` at all, which the next open creates empty and rebuilds from the
log (the index is derived state); after them, the new one. Leftover
``index.new/`` and ``index.old/`` are removed on open.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from .fs import Files
from .index import Index

NEW_SUFFIX = ".new"
OLD_SUFFIX = ".old"


def prepare(index_dir: str, build: Callable[[str], None], files: Files) -> str:
    """Build a new index with ``build(path)`` beside ``index_dir`` and make it durable;
    returns its path."""
    fresh = index_dir.rstrip(os.sep) + NEW_SUFFIX
    remove_leftovers(index_dir)
    os.makedirs(fresh)
    try:
        build(fresh)
        for name in os.listdir(fresh):
            fd = files.open_for_append(os.path.join(fresh, name))
            try:
                files.fsync(fd)
            finally:
                files.close(fd)
        files.fsync_dir(fresh)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return fresh


def swap(old: Index, fresh: str, files: Files) -> Index:
    """Close ``old``, put the prepared index ``fresh`` in its place and open it.

    The caller makes sure nothing reads or writes ``old`` meanwhile."""
    path = old.path.rstrip(os.sep)
    retired = path + OLD_SUFFIX
    old.close()
    try:
        files.rename(path, retired)
        files.rename(fresh, path)
        files.fsync_dir(os.path.dirname(path) or ".")
    except OSError:
        # The index is derived state: a swap that failed half-way costs a rebuild at
        # worst, never the store. Whichever whole index is left is used.
        if not os.path.isdir(path):
            os.replace(retired if os.path.isdir(retired) else fresh, path)
    remove_leftovers(path)
    return Index(path, old.map_size, prints=old.prints)


def remove_leftovers(index_dir: str) -> None:
    """What an interrupted rebuild or compaction left beside the index."""
    for suffix in (NEW_SUFFIX, OLD_SUFFIX):
        shutil.rmtree(index_dir.rstrip(os.sep) + suffix, ignore_errors=True)
