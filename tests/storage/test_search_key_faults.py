"""The search key (``search.key``) is made through the file seam: an I/O error at any of its
operations fails the open that makes it and leaves no key a later open could take for a whole
one; a crash at any of them leaves no key or the whole key, never a part."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import Files
from leadtrail.storage.fingerprints import KEY_BYTES, KEY_FILE, load_key

KEY_OPERATIONS = 7
"""open, chmod, truncate, write, fsync, close, rename, then the directory's fsync: the
count is checked below so that a new step cannot go untested."""


def test_making_the_key_takes_the_operations_tested_here(tmp_path: Path) -> None:
    files = faults.InjectedFiles()
    files.armed = True
    assert load_key(str(tmp_path), files, create=True) is not None
    assert len(files.ops) == KEY_OPERATIONS + 1, files.ops


def _whole_key_or_none(data: Path) -> bytes | None:
    path = data / KEY_FILE
    if not path.exists():
        return None
    key = path.read_bytes()
    assert len(key) == KEY_BYTES, f"a partial key of {len(key)} bytes"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return key


@pytest.mark.parametrize("fail_at", range(1, KEY_OPERATIONS + 2))
def test_an_io_error_at_any_step_fails_and_the_next_open_makes_a_whole_key(
    tmp_path: Path, fail_at: int
) -> None:
    files = faults.InjectedFiles(fail_at, error=errno.EIO)
    files.armed = True
    try:
        made = load_key(str(tmp_path), files, create=True)
    except OSError:
        made = None
    found = _whole_key_or_none(tmp_path)
    assert made is None or found == made  # after the rename: the key is whole (the dir fsync failed)
    key = load_key(str(tmp_path), Files(), create=True)
    assert key is not None and len(key) == KEY_BYTES
    assert _whole_key_or_none(tmp_path) == key
    assert load_key(str(tmp_path), Files(), create=False) == key  # stable from now on


_CRASH = """
import sys
sys.path.insert(0, {faults_dir!r})
import faults
from leadtrail.storage.fingerprints import load_key
files = faults.InjectedFiles({fail_at}, crash=True)
files.armed = True
load_key({data!r}, files, create=True)
"""


@pytest.mark.parametrize("fail_at", range(1, KEY_OPERATIONS + 2))
def test_a_crash_at_any_step_leaves_no_key_or_the_whole_key(tmp_path: Path, fail_at: int) -> None:
    script = _CRASH.format(faults_dir=str(Path(faults.__file__).parent), fail_at=fail_at, data=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == faults.CRASH_EXIT, done.stderr
    before = _whole_key_or_none(tmp_path)
    key = load_key(str(tmp_path), Files(), create=True)
    assert key is not None and (before is None or key == before)
    assert _whole_key_or_none(tmp_path) == key
    # A temporary file may be left: the data directory's open removes it (datadir.remove_leftovers).
    assert sorted(os.listdir(tmp_path)) in ([KEY_FILE], sorted([KEY_FILE, KEY_FILE + ".tmp"]))
