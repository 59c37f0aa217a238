"""``leadtrail verify --chain``: offline on a data directory, or by a server, against a kept
checkpoint file (what ``leadtrail checkpoint`` prints); exit 0 clean, 1 naming the first
bad position or segment."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from crc32c import crc32c
from google.protobuf import json_format
from leadtrail import client as sdk
from leadtrail.storage import Event, EventLog, Options
from leadtrail.storage.signing import Signer
from leadtrail.v1 import admin_pb2

if TYPE_CHECKING:
    from conftest import CLI

RECORD_HEADER = 20
SEGMENT_HEADER = 24


def event(n: int) -> Event:
    return Event(
        type="source.submitted",
        lead_id=f"lead-{n % 3}",
        flow_id="flow-1",
        timestamp_ms=1_767_225_600_000 + n,
        lead={"email": f"person{n % 3}@example.com", "n": n},
    )


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, list[tuple[int, bytes]]]:
    """Twelve events, each its own commit, in one segment; (position, receipt) of each."""
    path = tmp_path / "data"
    with EventLog.open(path, Options(checkpoints=False)) as log:
        receipts = [(r.position, r.chain_hash) for n in range(12) for r in log.append([event(n)])]
    return path, receipts


def checkpoint_file(data: Path, position: int, path: Path) -> Path:
    """A signed checkpoint of ``position`` in the file form ``leadtrail checkpoint`` prints."""
    with EventLog.open(data, Options(read_only=True)) as log:
        point = log.chain_point(position)
    signed = Signer((data / "signing.key").read_bytes()).sign_checkpoint(point)
    message = admin_pb2.SignedCheckpoint(
        position=signed.position,
        chain_hash=signed.chain_hash,
        signature=signed.signature,
        public_key=signed.public_key,
    )
    message.recorded_at.FromMilliseconds(signed.recorded_at_ms)
    path.write_text(json_format.MessageToJson(message, preserving_proto_field_name=True))
    return path


def record_offsets(segment: Path) -> list[tuple[int, int]]:
    """(offset, position) of each record."""
    data = segment.read_bytes()
    found, at = [], SEGMENT_HEADER
    while at < len(data):
        length, position = struct.unpack_from("<IQ", data, at + 4)
        found.append((at, position))
        at += RECORD_HEADER + length
    return found


def test_a_clean_store_verifies_with_its_last_receipt(
    cli: CLI, store: tuple[Path, list[tuple[int, bytes]]]
) -> None:
    data, receipts = store
    position, chain_hash = receipts[-1]
    run = cli("verify", "--chain", "--data", str(data))
    assert run.status == 0, run
    assert f"chain verified: 12 events up to position {position}, chain hash {chain_hash.hex()}" in run.stdout


def test_an_edit_with_its_crc_fixed_exits_1_naming_the_position(
    cli: CLI, store: tuple[Path, list[tuple[int, bytes]]]
) -> None:
    data, _ = store = store
    segment = next((data / "log").glob("*.log"))
    offset, position = record_offsets(segment)[5]
    raw = bytearray(segment.read_bytes())
    length = struct.unpack_from("<I", raw, offset + 4)[0]
    raw[offset + RECORD_HEADER + 6] ^= 0x10  # the timestamp, in the payload prefix
    payload = bytes(raw[offset + RECORD_HEADER : offset + RECORD_HEADER + length])
    crc = crc32c(payload, crc32c(bytes(raw[offset : offset + 16])))
    struct.pack_into("<I", raw, offset + 16, crc)
    segment.write_bytes(bytes(raw))

    assert cli("verify", "--data", str(data)).status == 0  # every CRC holds
    run = cli("verify", "--chain", "--data", str(data))
    assert run.status == 1, run
    assert f"problem: position {position}: digest does not match its chain8: edited" in run.stdout
    assert f"first bad position {position}" in run.stdout


def test_a_tail_cut_is_caught_against_a_checkpoint_file(
    cli: CLI, store: tuple[Path, list[tuple[int, bytes]]], tmp_path: Path
) -> None:
    data, receipts = store
    kept = checkpoint_file(data, receipts[-1][0], tmp_path / "checkpoint.json")
    assert cli("verify", "--chain", "--checkpoint", str(kept), "--data", str(data)).status == 0

    segment = next((data / "log").glob("*.log"))
    offset, position = record_offsets(segment)[-3]
    os.truncate(segment, offset)
    run = cli("verify", "--chain", "--checkpoint", str(kept), "--data", str(data))
    assert run.status == 1, run
    assert f"events were removed after position {position - 1}" in run.stdout
    assert f"first bad position {position}" in run.stdout


def test_a_checkpoint_file_that_is_no_checkpoint_is_a_usage_error(
    cli: CLI, store: tuple[Path, list[tuple[int, bytes]]], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"position": "many"}')
    run = cli("verify", "--chain", "--checkpoint", str(bad), "--data", str(store[0]))
    assert run.status == 2
    assert "not a SignedCheckpoint" in run.stderr


def test_a_deleted_segment_exits_1_naming_the_missing_positions(cli: CLI, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data, Options(segment_bytes=4096, checkpoints=False)) as log:
        for n in range(0, 200, 10):
            log.append([event(k) for k in range(n, n + 10)])
    segments = sorted((data / "log").glob("*.log"))
    assert len(segments) >= 3
    first = int(segments[1].name.removesuffix(".log"))
    segments[1].unlink()
    run = cli("verify", "--chain", "--data", str(data))
    assert run.status == 1, run
    assert f"positions {first}.." in run.stdout and "missing" in run.stdout


def test_the_server_walks_its_chain(cli: CLI, server: str, tmp_path: Path) -> None:
    with sdk.Client(server) as client:
        results = client.append(
            [sdk.Event("source.submitted", f"lead-{n}", "flow-1", lead={"n": n}) for n in range(5)]
        )
    run = cli("verify", "--chain", "--server", server)
    assert run.status == 0, run
    assert "chain verified: " in run.stdout

    printed = cli("checkpoint", "--position", str(results[-1].position), "--server", server)
    assert printed.status == 0, printed
    kept = tmp_path / "checkpoint.json"
    kept.write_text(printed.stdout)
    run = cli("verify", "--chain", "--checkpoint", str(kept), "--server", server)
    assert run.status == 0, run

    message = json_format.Parse(printed.stdout, admin_pb2.SignedCheckpoint())
    message.chain_hash = bytes(32)
    kept.write_text(json_format.MessageToJson(message, preserving_proto_field_name=True))
    run = cli("verify", "--chain", "--checkpoint", str(kept), "--server", server)
    assert run.status == 1, run
    assert "its signature does not verify" in run.stdout
