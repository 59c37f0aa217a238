"""``leadtrail checkpoint`` prints a SignedCheckpoint in protobuf's JSON mapping (the FILE of
``verify --chain --checkpoint``), and ``leadtrail keys public`` the key it verifies with,
read from the data directory while the server runs."""

from __future__ import annotations

import base64
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format
from leadtrail.v1 import admin_pb2

if TYPE_CHECKING:
    from conftest import CLI

server_process = sys.modules["server_process"]  # loaded by conftest.py from tests/server_process.py

EVENTS = "\n".join(
    json.dumps({"type": "source.submitted", "lead_id": f"lead-{i}", "flow_id": "flow-cp"}) for i in range(3)
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, cli: CLI) -> Iterator[Any]:
    process = server_process.ServerProcess(
        tmp_path_factory.mktemp("server") / "data", "--http", "off"
    ).start()
    run = cli("append", "--server", process.address, input=EVENTS)
    assert run.status == 0, run
    yield process
    assert process.stop() == 0


def _parsed(text: str) -> admin_pb2.SignedCheckpoint:
    return json_format.Parse(text, admin_pb2.SignedCheckpoint())


def _verify(checkpoint: admin_pb2.SignedCheckpoint, public_key: bytes) -> None:
    recorded_at_ms = checkpoint.recorded_at.seconds * 1000 + checkpoint.recorded_at.nanos // 1_000_000
    signed = b"leadtrail checkpoint v1\n" + struct.pack(
        ">Q32sQ", checkpoint.position, checkpoint.chain_hash, recorded_at_ms
    )
    Ed25519PublicKey.from_public_bytes(public_key).verify(checkpoint.signature, signed)


def test_checkpoint_json_parses_back_and_verifies_with_the_public_key(served: Any, cli: CLI) -> None:
    run = cli("keys", "public", "--data", str(served.data))
    assert run.status == 0, run
    public_key = base64.b64decode(run.stdout.strip(), validate=True)
    assert len(public_key) == 32

    run = cli("checkpoint", "--server", served.address, "--position", "2")
    assert run.status == 0, run
    fields = json.loads(run.stdout)
    assert set(fields) == {"position", "chain_hash", "recorded_at", "signature", "public_key"}
    assert fields["position"] == "2"  # uint64 in protobuf's JSON mapping: a string
    checkpoint = _parsed(run.stdout)
    assert checkpoint.position == 2 and len(checkpoint.chain_hash) == 32
    assert base64.b64decode(fields["chain_hash"]) == checkpoint.chain_hash
    assert checkpoint.public_key == public_key
    _verify(checkpoint, public_key)

    latest = cli("checkpoint", "--server", served.address)
    assert latest.status == 0, latest
    head = _parsed(latest.stdout)
    assert head.position >= 3
    _verify(head, public_key)
    again = _parsed(cli("checkpoint", "--server", served.address, "--position", "2").stdout)
    assert again.chain_hash == checkpoint.chain_hash


def test_a_checkpoint_beyond_the_end_is_one_line_naming_the_last_position(served: Any, cli: CLI) -> None:
    line = cli("checkpoint", "--server", served.address, "--position", "999999").error_line()
    assert "position 999999" in line and "last position is" in line, line


def test_keys_public_says_when_there_is_no_store_or_no_key(tmp_path: Path, cli: CLI) -> None:
    line = cli("keys", "public", "--data", str(tmp_path / "none")).error_line()
    assert "no LeadTrail store" in line, line
    (tmp_path / "store" / "log").mkdir(parents=True)
    line = cli("keys", "public", "--data", str(tmp_path / "store")).error_line()
    assert "no signing key" in line and "signing.key" in line, line
    assert not (tmp_path / "store" / "signing.key").exists()
