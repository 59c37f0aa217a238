"""AdminService.Backup over a real server: the plan first, each file the caller does not hold
with its bytes, the manifest last; the same through a follower worker (``--workers 2``)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from leadtrail.v1 import admin_pb2, admin_pb2_grpc, submission_pb2

from .conftest import ServerProcess, Stubs, lead_event

CONNECTIONS = 8


def backup(admin: Any, have: list[admin_pb2.BackupFile] | None = None) -> dict[str, Any]:
    """The stream of one Backup call, checked part by part as a client writes it."""
    chunks = list(admin.Backup(admin_pb2.BackupRequest(have=have or []), timeout=60))
    assert chunks[0].WhichOneof("part") == "plan" and chunks[-1].WhichOneof("part") == "manifest_json"
    plan = chunks[0].plan
    files: dict[str, bytes] = {}
    announced: dict[str, admin_pb2.BackupFile] = {}
    name = ""
    for chunk in chunks[1:-1]:
        part = chunk.WhichOneof("part")
        if part == "file":
            name = chunk.file.name
            announced[name] = chunk.file
            files[name] = b""
        else:
            assert part == "data" and name and len(chunk.data) <= 1 << 20
            files[name] += chunk.data
    for name, data in files.items():
        assert len(data) == announced[name].size
        assert hashlib.sha256(data).hexdigest() == announced[name].sha256
    manifest = json.loads(chunks[-1].manifest_json)
    assert (plan.files, plan.files_sent, plan.bytes_sent) == (
        len(manifest["files"]),
        len(files),
        sum(len(d) for d in files.values()),
    )
    assert manifest["position"] == plan.position and bytes.fromhex(manifest["chain_hash"]) == plan.chain_hash
    for name, file in announced.items():
        assert manifest["files"][name] == file.sha256 and manifest["sizes"][name] == file.size
    return {"plan": plan, "files": files, "manifest": manifest}


def held(taken: dict[str, Any]) -> list[admin_pb2.BackupFile]:
    manifest = taken["manifest"]
    return [
        admin_pb2.BackupFile(name=n, size=manifest["sizes"][n], sha256=s)
        for n, s in manifest["files"].items()
    ]


def test_backup_streams_the_plan_every_file_and_the_manifest_then_only_what_changed(stubs: Stubs) -> None:
    appended = stubs.submission.Append(
        submission_pb2.AppendRequest(events=[lead_event(f"lead-backup-{i}") for i in range(20)])
    )
    first = backup(stubs.admin)
    manifest = first["manifest"]
    assert manifest["format"] == 1 and manifest["position"] >= appended.results[-1].position
    names = set(manifest["files"])
    assert {"STORE_ID", "search.key"} <= names and any(n.startswith("log/") for n in names)
    assert not any(n.startswith(("index", "backup.tmp")) or n == "LOCK" for n in names)
    assert first["plan"].files_sent == len(names)  # nothing held: everything sent

    stubs.submission.Append(submission_pb2.AppendRequest(events=[lead_event("lead-backup-late")]))
    second = backup(stubs.admin, held(first))
    assert second["plan"].position > first["plan"].position
    assert 0 < second["plan"].files_sent < second["plan"].files
    # What is sent again is what changed: the active segment, not the keys or the id.
    assert "STORE_ID" not in second["files"] and "search.key" not in second["files"]
    assert any(n.startswith("log/") for n in second["files"])

    # A have list that does not match (another size, another digest) gets the file anyway.
    wrong = [admin_pb2.BackupFile(name=f.name, size=f.size, sha256="0" * 64) for f in held(second)]
    assert backup(stubs.admin, wrong)["plan"].files_sent == second["plan"].files


def test_backup_through_a_follower_worker_is_the_writers(
    tmp_path: Path, spawn: Callable[..., ServerProcess]
) -> None:
    server = spawn(tmp_path / "data", "--workers", "2", "--http", "off")
    stubs = Stubs(server.address)
    try:
        stubs.submission.Append(submission_pb2.AppendRequest(events=[lead_event(f"w-{i}") for i in range(5)]))
        # Each new connection lands on either worker (SO_REUSEPORT): all of them on the writer
        # 1 time in 2**8.
        for _ in range(CONNECTIONS):
            channel = grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
            try:
                taken = backup(admin_pb2_grpc.AdminServiceStub(channel))
            finally:
                channel.close()
            assert taken["plan"].position >= 5 and taken["plan"].files_sent == taken["plan"].files
    finally:
        stubs.close()
    assert server.stop() == 0, "".join(server.stderr_lines)


def test_a_backup_the_client_gives_up_leaves_no_staged_files(server: ServerProcess, stubs: Stubs) -> None:
    stubs.submission.Append(submission_pb2.AppendRequest(events=[lead_event("lead-given-up")]))
    call = stubs.admin.Backup(admin_pb2.BackupRequest(), timeout=60)
    assert next(call).WhichOneof("part") == "plan"
    staging = server.data / "backup.tmp"
    call.cancel()  # (the server may or may not have sent everything by now: no files left either way)
    deadline = time.monotonic() + 30
    while os.listdir(staging) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(staging) == []
