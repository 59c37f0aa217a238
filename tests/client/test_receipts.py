"""Receipts with the SDK against a real server: every append's ``chain_hash`` verifies against
the signed checkpoint at its position; a changed hash does not (False); a checkpoint that
does not verify under a pinned key is an error, never a quiet False."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from leadtrail.client import (
    AppendResult,
    AsyncClient,
    Client,
    Event,
    NotFoundError,
    Receipts,
    SignatureError,
    SignedCheckpoint,
    VerifyReport,
)
from leadtrail.client._convert import verify_report_from_proto
from leadtrail.v1 import admin_pb2


def _events(n: int, lead: str) -> list[Event]:
    return [Event("source.submitted", lead, "flow-receipts", lead={"n": i}) for i in range(n)]


@pytest.fixture(scope="module")
def client(leadtrail_server: Any) -> Iterator[Client]:
    with Client(leadtrail_server.address, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def public_key(leadtrail_server: Any) -> bytes:
    seed = (leadtrail_server.data / "signing.key").read_bytes()
    return (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def test_receipts_of_appends_verify_and_a_changed_hash_does_not(client: Client, public_key: bytes) -> None:
    results = client.append(_events(4, "lead-r1"))
    for result in results:
        assert len(result.chain_hash) == 32
        assert client.verify_receipt(result.position, result.chain_hash)
        assert client.verify_receipt(result.position, result.chain_hash, public_key=public_key)
        changed = bytes([result.chain_hash[0] ^ 1]) + result.chain_hash[1:]
        assert not client.verify_receipt(result.position, changed)
        assert not client.verify_receipt(result.position, b"")
    # Another position's hash is not this position's receipt.
    assert not client.verify_receipt(results[0].position, results[1].chain_hash)
    # A duplicate answers the original's receipt.
    [again] = client.append([Event("source.submitted", "lead-r1", "flow-receipts", id=results[0].id)])
    assert again.duplicate and (again.position, again.chain_hash) == (
        results[0].position,
        results[0].chain_hash,
    )


def test_the_checkpoint_is_signed_over_the_bytes_format_md_gives(client: Client, public_key: bytes) -> None:
    [result] = client.append(_events(1, "lead-r2"))
    checkpoint = client.checkpoint(result.position)
    assert isinstance(checkpoint, SignedCheckpoint)
    assert (checkpoint.position, checkpoint.chain_hash) == (result.position, result.chain_hash)
    assert checkpoint.recorded_at == result.recorded_at and checkpoint.public_key == public_key
    signed = (
        b"leadtrail checkpoint v1\n"
        + result.position.to_bytes(8, "big")
        + result.chain_hash
        + checkpoint.recorded_at_ms.to_bytes(8, "big")
    )
    assert checkpoint.checkpoint_bytes() == signed
    Ed25519PublicKey.from_public_bytes(public_key).verify(checkpoint.signature, signed)
    assert client.checkpoint().position >= result.position


def test_a_wrong_pinned_key_raises(client: Client) -> None:
    [result] = client.append(_events(1, "lead-r3"))
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(SignatureError, match=f"position {result.position} is not signed by the pinned"):
        client.verify_receipt(result.position, result.chain_hash, public_key=other)
    with pytest.raises(SignatureError, match="a public key of 5 bytes"):
        client.verify_receipt(result.position, result.chain_hash, public_key=b"short")


def test_a_receipt_beyond_the_end_is_not_found(client: Client) -> None:
    beyond = client.checkpoint().position + 1000
    with pytest.raises(NotFoundError, match=f"position {beyond}"):
        client.verify_receipt(beyond, bytes(32))


def test_receipts_kept_and_checked_later_with_both_clients(
    client: Client, leadtrail_server: Any, public_key: bytes
) -> None:
    receipts = Receipts()
    receipts.add(client.append(_events(3, "lead-r4")))
    receipts.add(client.append(_events(1, "lead-r4")[0]))
    assert len(receipts) == 4
    assert [p for p, _ in receipts] == sorted(p for p, _ in receipts)
    assert receipts.failed(client.verify_receipt) == []
    assert receipts.failed(functools.partial(client.verify_receipt, public_key=public_key)) == []
    (position, chain_hash), *_ = receipts
    # A receipt holding another event's hash fails, and only that one.
    [real] = client.append(_events(1, "lead-r5"))
    forged = Receipts()
    forged.add(AppendResult(real.id, real.position, real.recorded_at, False, chain_hash=chain_hash))
    forged.add(client.append(_events(1, "lead-r6")))
    assert forged.failed(client.verify_receipt) == [real.position]

    async def check() -> list[int]:
        async with AsyncClient(leadtrail_server.address, timeout=30) as aclient:
            assert await aclient.verify_receipt(position, chain_hash, public_key)
            assert (await aclient.checkpoint(position)).chain_hash == chain_hash
            return await receipts.failed_async(aclient.verify_receipt)

    assert asyncio.run(asyncio.wait_for(check(), 60)) == []


def test_a_chain_report_keeps_every_field_the_server_sends() -> None:
    message = admin_pb2.VerifyReport(
        records_checked=9,
        problems=["position 7: digest differs"],
        chain_checked=9,
        last_position=12,
        chain_hash=b"\x05" * 32,
        first_bad_position=7,
        retired=["1-3"],
        content_erased=2,
        signatures_checked=4,
    )
    report = verify_report_from_proto(message)
    assert report == VerifyReport(
        9, ["position 7: digest differs"], [], 9, 12, b"\x05" * 32, 7, ["1-3"], 2, 4
    )
    assert verify_report_from_proto(admin_pb2.VerifyReport(records_checked=1)) == VerifyReport(1, [], [])
