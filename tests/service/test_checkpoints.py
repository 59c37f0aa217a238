"""AdminService.GetCheckpoint over a real server: every role may ask; the answer is the chain
hash an append answered, signed with the key of the data directory (checked here with
``cryptography``); a position beyond the end is NOT_FOUND naming the last position."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from leadtrail.v1 import admin_pb2, event_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
Server = Any  # conftest.ServerProcess
CLI = [sys.executable, "-m", "leadtrail.server.cli"]
ROLES = ("writer", "reader", "analyst", "admin")


def _key(server: Server, role: str) -> tuple[tuple[str, str]]:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(server.data), "--account", "acme", "--role", role],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return (("authorization", f"Bearer {done.stdout.strip()}"),)


def _signed_bytes(checkpoint: admin_pb2.SignedCheckpoint) -> bytes:
    recorded_at_ms = checkpoint.recorded_at.seconds * 1000 + checkpoint.recorded_at.nanos // 1_000_000
    return b"leadtrail checkpoint v1\n" + struct.pack(
        ">Q32sQ", checkpoint.position, checkpoint.chain_hash, recorded_at_ms
    )


@pytest.fixture(scope="module")
def appended(
    server: Server, stubs: Stubs
) -> Iterator[tuple[list[submission_pb2.AppendResult], dict[str, Any]]]:
    """Events appended in open mode, then a key of each role (from then on keys are needed)."""
    events = [
        event_pb2.Event(type="source.submitted", lead_id=f"lead-{i}", flow_id="flow-cp", entity_id="src")
        for i in range(3)
    ]
    results = list(stubs.submission.Append(submission_pb2.AppendRequest(events=events), timeout=30).results)
    keys = {role: _key(server, role) for role in ROLES}
    yield results, keys


def test_every_role_gets_the_checkpoint_an_append_answered_signed_by_the_stores_key(
    server: Server, stubs: Stubs, appended: tuple[list[submission_pb2.AppendResult], dict[str, Any]]
) -> None:
    results, keys = appended
    seed = (server.data / "signing.key").read_bytes()
    public_key = (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    for role, metadata in keys.items():
        for result in results:
            assert len(result.chain_hash) == 32, role
            request = admin_pb2.GetCheckpointRequest(position=result.position)
            checkpoint = stubs.admin.GetCheckpoint(request, metadata=metadata, timeout=30)
            assert checkpoint.position == result.position, role
            assert checkpoint.chain_hash == result.chain_hash, role
            assert checkpoint.recorded_at == result.recorded_at, role
            assert checkpoint.public_key == public_key, role
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                checkpoint.signature, _signed_bytes(checkpoint)
            )
        latest = stubs.admin.GetCheckpoint(admin_pb2.GetCheckpointRequest(), metadata=metadata, timeout=30)
        assert latest.position >= results[-1].position, role
        Ed25519PublicKey.from_public_bytes(public_key).verify(latest.signature, _signed_bytes(latest))


def test_a_position_beyond_the_end_is_not_found_naming_the_last_position(
    stubs: Stubs, appended: tuple[list[submission_pb2.AppendResult], dict[str, Any]]
) -> None:
    _, keys = appended
    latest = stubs.admin.GetCheckpoint(admin_pb2.GetCheckpointRequest(), metadata=keys["reader"], timeout=30)
    beyond = latest.position + 1000
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.GetCheckpoint(
            admin_pb2.GetCheckpointRequest(position=beyond), metadata=keys["writer"], timeout=30
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = info.value.details() or ""
    assert f"position {beyond}" in details and "last position is" in details, details


def test_a_call_without_a_key_is_refused_once_keys_exist(
    stubs: Stubs, appended: tuple[list[submission_pb2.AppendResult], dict[str, Any]]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.GetCheckpoint(admin_pb2.GetCheckpointRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
