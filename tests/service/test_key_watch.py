"""The key file watch: a key created, revoked or removed by another process is seen by the
next call, with or without inotify, and nothing else in the data directory reloads the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from leadtrail.server import keys as keys_module
from leadtrail.server.keys import KeyFileWatch, KeyStore, KeyStoreError


def _reads(monkeypatch: pytest.MonkeyPatch, store: KeyStore) -> list[int]:
    """Counts the times ``store`` reads keys.json."""
    counted: list[int] = []
    read = store._read

    def counting() -> list[keys_module.ApiKey]:
        counted.append(1)
        return read()

    monkeypatch.setattr(store, "_read", counting)
    return counted


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "stat"])
def test_changes_by_another_process_are_seen_by_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool
) -> None:
    if not inotify:

        def unavailable(directory: str, name: str) -> KeyFileWatch:
            raise OSError("no inotify")

        monkeypatch.setattr(keys_module, "KeyFileWatch", unavailable)
    served, offline = KeyStore(str(tmp_path)), KeyStore(str(tmp_path))
    assert served.configured() is False
    assert (served._watch is not None) is inotify

    secret, key = offline.create("acme", "writer", now_ms=1)
    assert served.configured() is True
    assert served.authenticate(secret) == key

    offline.revoke(key.key_id, now_ms=2)
    assert served.configured() is True
    assert served.authenticate(secret) is None

    second, other = offline.create("acme", "reader", now_ms=3)
    assert served.configured() and served.authenticate(second) == other

    (tmp_path / "keys.json").unlink()
    with pytest.raises(KeyStoreError, match="gone or empty"):
        served.configured()


def test_unchanged_keys_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served, offline = KeyStore(str(tmp_path)), KeyStore(str(tmp_path))
    secret, key = offline.create("acme", "admin", now_ms=1)
    assert served.configured() and served.authenticate(secret) == key
    if served._watch is None:
        pytest.skip("no inotify on this system: every call compares the file's stat")
    reads = _reads(monkeypatch, served)
    (tmp_path / "fields.json.tmp").write_text("{}")  # another file of the directory
    for _ in range(100):
        assert served.configured() and served.authenticate(secret) == key
    assert reads == []
    offline.create("acme", "reader", now_ms=2)
    assert served.configured()
    assert reads == [1]


def test_a_watch_that_cannot_answer_says_changed(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    try:
        watch = KeyFileWatch(str(directory), "keys.json")
    except OSError:
        pytest.skip("no inotify on this system")
    assert watch.changed() is False
    (directory / "keys.json").write_text("{}")
    assert watch.changed() is True
    assert watch.changed() is False
    (directory / "keys.json").unlink()
    directory.rmdir()  # the directory itself gone: from now on the caller looks for itself
    assert watch.changed() is True
    assert watch.changed() is True
    watch.close()
    assert watch.changed() is True


def test_a_store_whose_directory_comes_later_watches_it_then(tmp_path: Path) -> None:
    try:
        KeyFileWatch(str(tmp_path), "keys.json").close()
    except OSError:
        pytest.skip("no inotify on this system")
    data = tmp_path / "new-store"
    served = KeyStore(str(data))
    assert served.configured() is False  # the server asks before the store makes its directory
    assert served._watch is None
    data.mkdir()
    assert served.configured() is False
    assert served._watch is not None
    secret, key = KeyStore(str(data)).create("acme", "admin", now_ms=1)
    assert served.configured() and served.authenticate(secret) == key


def test_keys_written_before_the_watch_is_made_are_seen(tmp_path: Path) -> None:
    # The server asks before its store makes the directory; the keys come before its next call,
    # which makes the watch: the new watch has seen nothing, so the file must be read.
    data = tmp_path / "new-store"
    served = KeyStore(str(data))
    assert served.configured() is False
    data.mkdir()
    secret, key = KeyStore(str(data)).create("acme", "reader", now_ms=1)
    assert served.configured() is True
    assert served.authenticate(secret) == key
