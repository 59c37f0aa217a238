"""The data directory's key files (storage/keyfile.py): ``signing.key``, ``search.key`` and
the server's ``fingerprint.key`` are made the one same way, through the file seam. At each
of its operations an I/O error fails the call and leaves no key a later open could take for
a whole one; a crash leaves no key or the whole key; a power cut leaves no key or the whole
key, and the whole key once it was returned (and so may have been used)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import leadtrail_storage_powerloss as powerloss  # loaded by conftest.py
import pytest
from leadtrail.storage import Files, MetadataFileError, fingerprints, signing


def _fingerprint_key(data_dir: str, files: Files, create: bool) -> bytes | None:
    from leadtrail.server.privacy import FINGERPRINT_KEY_FILE, Fingerprints

    if not create and not os.path.exists(os.path.join(data_dir, FINGERPRINT_KEY_FILE)):
        return None
    Fingerprints(data_dir, files)
    return Path(data_dir, FINGERPRINT_KEY_FILE).read_bytes()


Load = Callable[[str, Files, bool], "bytes | None"]
KEYS: dict[str, tuple[str, str]] = {
    # name: (file, how a script loads it with `files`)
    "signing": (
        signing.KEY_FILE,
        "from leadtrail.storage.signing import load_key\nload_key({data!r}, files, True)",
    ),
    "search": (
        fingerprints.KEY_FILE,
        "from leadtrail.storage.fingerprints import load_key\nload_key({data!r}, files, True)",
    ),
    "fingerprint": (
        "fingerprint.key",
        "from leadtrail.server.privacy import Fingerprints\nFingerprints({data!r}, files)",
    ),
}
LOADERS: dict[str, Load] = {
    "signing": signing.load_key,
    "search": fingerprints.load_key,
    "fingerprint": _fingerprint_key,
}
KEY_BYTES = 32
KEY_OPERATIONS = 7
"""open, chmod, truncate, write, fsync, close, rename, then the directory's fsync: the
count is checked below so that a new step cannot go untested."""


def _whole_key_or_none(data: Path, name: str, mode: bool = True) -> bytes | None:
    path = data / name
    if not path.exists():
        return None
    key = path.read_bytes()
    assert len(key) == KEY_BYTES, f"a partial key of {len(key)} bytes"
    if mode:  # the power-loss states model bytes and names, not modes
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return key


@pytest.mark.parametrize("which", KEYS)
def test_making_a_key_takes_the_operations_tested_here(tmp_path: Path, which: str) -> None:
    files = faults.InjectedFiles()
    files.armed = True
    assert LOADERS[which](str(tmp_path), files, True) is not None
    assert len(files.ops) == KEY_OPERATIONS + 1, files.ops


@pytest.mark.parametrize("which", KEYS)
@pytest.mark.parametrize("damage", [b"", b"\x01" * 31, b"\x01" * 33])
def test_a_key_file_of_another_size_is_refused_naming_it_and_never_replaced(
    tmp_path: Path, which: str, damage: bytes
) -> None:
    name = KEYS[which][0]
    (tmp_path / name).write_bytes(damage)
    with pytest.raises(MetadataFileError, match=rf"{name} holds {len(damage)} bytes, not a 32-byte"):
        LOADERS[which](str(tmp_path), Files(), True)
    assert (tmp_path / name).read_bytes() == damage


@pytest.mark.parametrize("which", KEYS)
@pytest.mark.parametrize("fail_at", range(1, KEY_OPERATIONS + 2))
def test_an_io_error_at_any_step_fails_and_the_next_open_makes_a_whole_key(
    tmp_path: Path, which: str, fail_at: int
) -> None:
    name, load = KEYS[which][0], LOADERS[which]
    files = faults.InjectedFiles(fail_at, error=errno.EIO)
    files.armed = True
    try:
        made = load(str(tmp_path), files, True)
    except OSError:
        made = None
    found = _whole_key_or_none(tmp_path, name)
    assert made is None or found == made  # after the rename: the key is whole (the dir fsync failed)
    key = load(str(tmp_path), Files(), True)
    assert key is not None and len(key) == KEY_BYTES
    assert _whole_key_or_none(tmp_path, name) == key
    assert load(str(tmp_path), Files(), False) == key  # stable from now on


_CRASH = """
import sys
sys.path.insert(0, {faults_dir!r})
import faults
files = faults.InjectedFiles({fail_at}, crash=True)
files.armed = True
"""


@pytest.mark.parametrize("which", KEYS)
@pytest.mark.parametrize("fail_at", range(1, KEY_OPERATIONS + 2))
def test_a_crash_at_any_step_leaves_no_key_or_the_whole_key(tmp_path: Path, which: str, fail_at: int) -> None:
    name, how = KEYS[which]
    script = _CRASH.format(faults_dir=str(Path(faults.__file__).parent), fail_at=fail_at) + how.format(
        data=str(tmp_path)
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == faults.CRASH_EXIT, done.stderr
    before = _whole_key_or_none(tmp_path, name)
    key = LOADERS[which](str(tmp_path), Files(), True)
    assert key is not None and (before is None or key == before)
    assert _whole_key_or_none(tmp_path, name) == key
    # A temporary file may be left: the data directory's open removes it (datadir.remove_leftovers).
    assert sorted(os.listdir(tmp_path)) in ([name], sorted([name, name + ".tmp"]))


@pytest.mark.parametrize("which", KEYS)
def test_a_power_cut_at_any_step_leaves_no_key_or_the_whole_key_and_a_returned_key_stays(
    tmp_path: Path, which: str
) -> None:
    name, load = KEYS[which][0], LOADERS[which]
    probe = powerloss.PowerFiles(tmp_path)
    load(str(tmp_path), probe, True)
    total = len(probe.ops)  # what the model records (a chmod or a close changes no byte)
    assert total >= 5, probe.ops
    checked = 0
    for at in range(1, total + 2):  # the last one never fires: the key was returned
        root = tmp_path / f"cut-{at}"
        root.mkdir()
        files = powerloss.PowerFiles(root)
        files.cut(at)
        try:
            returned = load(str(root), files, True)
        except powerloss.PowerCut:
            returned = None
        files.drain()
        assert (returned is None) == (at <= total), f"cut at {at}: {files.fired}"
        for description, state in files.states(19_000 + at, 4):
            found = _whole_key_or_none(state, name, mode=False)
            where = f"{which}: power cut at {files.fired or 'the end'}, {description}"
            if returned is not None:
                assert found == returned, where
            shutil.rmtree(state)
            checked += 1
        shutil.rmtree(root)
    assert checked >= total + 1
