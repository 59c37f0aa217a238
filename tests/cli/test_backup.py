"""``leadtrail backup`` of a running server while clients append, and ``leadtrail restore``:
the restored server holds every acknowledged event up to the backup's position; a second
backup into the same directory receives only what changed; a damaged file is refused by name."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from leadtrail.client import Client
from leadtrail.client import Event as ClientEvent
from leadtrail.server.keys import KeyStore
from leadtrail.storage import Event, EventLog, Options

if TYPE_CHECKING:
    from conftest import CLI

server_process = sys.modules["server_process"]  # loaded by conftest.py from tests/server_process.py

STORED = 150
"""Events written before the server starts, in segments of 4 KiB: sealed segments to keep."""


@dataclass
class Taken:
    address: str
    admin: str
    reader: str
    backup: Path
    position: int
    acknowledged: dict[int, str]
    """Position -> id of every event the store acknowledged, before and during the backup."""
    stdout: str


def _stored_events(n: int) -> list[Event]:
    return [
        Event(
            type="source.submitted",
            lead_id=f"stored-{i % 9}",
            flow_id="flow-solar",
            lead={"email": f"p{i}@example.com", "note": secrets.token_hex(40)},
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def taken(cli: CLI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Taken]:
    """A backup taken by the CLI while a client keeps appending."""
    root = tmp_path_factory.mktemp("backup")
    data = root / "data"
    acknowledged: dict[int, str] = {}
    with EventLog.open(data, Options(segment_bytes=4096)) as log:
        for _ in range(0, STORED, 10):
            acknowledged.update((r.position, r.id) for r in log.append(_stored_events(10)))
        assert sum(s.sealed for s in log.segments) >= 3
    keys = KeyStore(str(data))  # made in this process: no command to start
    admin, _ = keys.create("default", "admin", int(time.time() * 1000))
    reader, _ = keys.create("default", "reader", int(time.time() * 1000))
    server = server_process.ServerProcess(data).start()
    stop = threading.Event()

    def keep_appending() -> None:
        with Client(server.address, api_key=admin) as client:
            n = 0
            while not stop.is_set():
                batch = [
                    ClientEvent(type="load.step", lead_id=f"load-{n + i}", flow_id="f") for i in range(5)
                ]
                acknowledged.update((r.position, r.id) for r in client.append(batch))
                n += 5

    appender = threading.Thread(target=keep_appending)
    appender.start()
    try:
        deadline = time.monotonic() + 30
        while len(acknowledged) < STORED + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        run = cli("backup", "--server", server.address, "--api-key", admin, "--to", str(root / "dir"))
    finally:
        stop.set()
        appender.join(30)
    assert run.status == 0, run
    match = re.search(r"backup at position (\d+)", run.stdout)
    assert match, run.stdout
    try:
        yield Taken(
            server.address, admin, reader, root / "dir", int(match.group(1)), acknowledged, run.stdout
        )
    finally:
        assert server.stop() == 0


def test_a_restored_backup_serves_every_acknowledged_event_up_to_its_position(
    cli: CLI, taken: Taken, tmp_path: Path
) -> None:
    assert re.search(r"(\d+) of \1 files sent .*chain hash [0-9a-f]{64}", taken.stdout), taken.stdout
    expected = {p: i for p, i in taken.acknowledged.items() if p <= taken.position}
    assert len(expected) > STORED  # appends through the server made it in
    assert max(taken.acknowledged) > taken.position  # and went on while the backup was taken
    restored = tmp_path / "restored"
    run = cli("restore", "--from", str(taken.backup), "--data", str(restored))
    assert run.status == 0, run
    assert f"restored position {taken.position}" in run.stdout and "verified" in run.stdout
    server = server_process.ServerProcess(restored).start()
    try:
        with Client(server.address, api_key=taken.admin) as client:  # the keys came back too
            served = {e.position: e.id for e in client.query(page_size=1000) if e.position <= taken.position}
            last = expected[max(expected)]
            assert client.get(last).id == last  # the index was rebuilt: found by id
    finally:
        assert server.stop() == 0
    assert expected.items() <= served.items()
    assert max(served) == max(expected)


def test_a_second_backup_into_the_same_directory_receives_only_what_changed(
    cli: CLI, taken: Taken, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    shutil.copytree(taken.backup, again)
    sealed = sorted(p for p in (again / "log").iterdir())[:3]  # the first segments never change
    inodes = [p.stat().st_ino for p in sealed]
    run = cli("backup", "--server", taken.address, "--api-key", taken.admin, "--to", str(again))
    assert run.status == 0, run
    match = re.search(r"backup at position (\d+) in .*: (\d+) of (\d+) files sent", run.stdout)
    assert match, run.stdout
    position, sent, files = (int(g) for g in match.groups())
    assert position >= taken.position and sent < files
    assert [p.stat().st_ino for p in sealed] == inodes  # not received again


def test_a_damaged_backup_file_is_refused_by_name_and_nothing_is_restored(
    cli: CLI, taken: Taken, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(taken.backup, damaged)
    segment = sorted((damaged / "log").iterdir())[1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x20
    segment.write_bytes(bytes(data))
    target = tmp_path / "target"
    line = cli("restore", "--from", str(damaged), "--data", str(target)).error_line()
    assert f"log/{segment.name}: damaged" in line
    assert not target.exists()


def test_restore_and_backup_refuse_a_directory_of_other_files(cli: CLI, taken: Taken, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    run = cli("restore", "--from", str(taken.backup), "--data", str(target))
    assert run.status == 2 and f"{target} is not empty" in run.stderr, run
    assert os.listdir(target) == ["keep.txt"]
    # Nor does a backup go into a directory of other files (it would remove them).
    run = cli("backup", "--server", taken.address, "--api-key", taken.admin, "--to", str(target))
    assert run.status == 2 and "is neither empty nor a backup directory" in run.stderr, run
    assert os.listdir(target) == ["keep.txt"]


def test_backup_needs_an_admin_key_and_shows_progress_on_a_terminal(
    cli: CLI, taken: Taken, tmp_path: Path
) -> None:
    line = cli(
        "backup", "--server", taken.address, "--api-key", taken.reader, "--to", str(tmp_path / "r")
    ).error_line()
    assert "PERMISSION_DENIED" in line or "permission" in line.lower()
    assert not (tmp_path / "r" / "manifest.json").exists()
    shown: Any = cli.on_terminal(
        "backup", "--server", taken.address, "--api-key", taken.admin, "--to", str(tmp_path / "t")
    )
    assert shown.status == 0, shown
    assert "backup" in shown.stderr and "KiB" in shown.stderr


def _signed(backup: Path, *, tampered: bool = False) -> None:
    """Gives the manifest of ``backup`` a checkpoint signed with the store's key (made, and
    added to the backup, if the store has none), its signature spoilt when ``tampered``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from google.protobuf import json_format
    from leadtrail.v1 import admin_pb2

    manifest = json.loads((backup / "manifest.json").read_text())
    key_file = backup / "signing.key"
    if "signing.key" not in manifest["files"]:
        key_file.write_bytes(secrets.token_bytes(32))
        manifest["files"]["signing.key"] = hashlib.sha256(key_file.read_bytes()).hexdigest()
        manifest["sizes"]["signing.key"] = 32
    key = Ed25519PrivateKey.from_private_bytes(key_file.read_bytes())
    position, chain_hash = manifest["chain_position"], bytes.fromhex(manifest["chain_hash"])
    recorded_at_ms = manifest["recorded_at_ms"]
    signed = (
        b"leadtrail checkpoint v1\n"
        + position.to_bytes(8, "big")
        + chain_hash
        + recorded_at_ms.to_bytes(8, "big")
    )
    signature = bytearray(key.sign(signed))
    if tampered:
        signature[5] ^= 1
    checkpoint = admin_pb2.SignedCheckpoint(
        position=position,
        chain_hash=chain_hash,
        signature=bytes(signature),
        public_key=key.public_key().public_bytes_raw(),
    )
    checkpoint.recorded_at.FromMilliseconds(recorded_at_ms)
    manifest["checkpoint"] = json_format.MessageToDict(checkpoint, preserving_proto_field_name=True)
    (backup / "manifest.json").write_text(json.dumps(manifest))


def test_restore_checks_the_checkpoint_of_the_manifest_with_the_stores_key(
    cli: CLI, taken: Taken, tmp_path: Path
) -> None:
    signed = tmp_path / "signed"
    shutil.copytree(taken.backup, signed)
    _signed(signed)
    run = cli("restore", "--from", str(signed), "--data", str(tmp_path / "good"))
    assert run.status == 0, run
    assert "checkpoint signature verified" in run.stdout
    _signed(signed, tampered=True)
    run = cli("restore", "--from", str(signed), "--data", str(tmp_path / "bad"))
    assert run.status == 1 and "checkpoint signature does not verify" in run.stderr, run
    assert os.listdir(tmp_path / "bad") == []
