"""AdminService.VerifyChain over a real server: the walk from the start or from a kept hash,
and the arguments it refuses (INVALID_ARGUMENT naming the field)."""

from __future__ import annotations

import grpc
import pytest
from leadtrail.v1 import admin_pb2, submission_pb2

from .conftest import Stubs, lead_event


@pytest.fixture(scope="module")
def receipts(stubs: Stubs) -> list[submission_pb2.AppendResult]:
    found = []
    for batch in range(4):
        request = submission_pb2.AppendRequest(events=[lead_event(f"lead-{batch}-{n}") for n in range(5)])
        found.extend(stubs.submission.Append(request, timeout=30).results)
    assert all(len(r.chain_hash) == 32 for r in found)
    return found


def test_the_whole_chain_verifies(stubs: Stubs, receipts: list[submission_pb2.AppendResult]) -> None:
    report = stubs.admin.VerifyChain(admin_pb2.VerifyChainRequest(), timeout=60)
    assert list(report.problems) == [] and report.first_bad_position == 0
    assert report.chain_checked >= len(receipts)
    assert report.last_position >= receipts[-1].position
    if report.last_position == receipts[-1].position:  # no checkpoint record came after
        assert report.chain_hash == receipts[-1].chain_hash


def test_a_walk_from_a_receipt_checks_what_follows(
    stubs: Stubs, receipts: list[submission_pb2.AppendResult]
) -> None:
    start = receipts[7]
    request = admin_pb2.VerifyChainRequest(from_position=start.position, from_chain_hash=start.chain_hash)
    report = stubs.admin.VerifyChain(request, timeout=60)
    assert list(report.problems) == []
    assert report.chain_checked >= receipts[-1].position - start.position

    wrong = admin_pb2.VerifyChainRequest(from_position=start.position, from_chain_hash=receipts[6].chain_hash)
    report = stubs.admin.VerifyChain(wrong, timeout=60)
    assert report.first_bad_position == start.position + 1
    assert report.problems[0].startswith(f"position {start.position + 1}: digest does not match")


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (admin_pb2.VerifyChainRequest(from_position=3, from_chain_hash=b"short"), "from_chain_hash: 5 bytes"),
        (admin_pb2.VerifyChainRequest(from_position=3), "from_chain_hash: 0 bytes"),
        (admin_pb2.VerifyChainRequest(from_chain_hash=bytes(32)), "from_chain_hash: given without"),
    ],
)
def test_a_bad_start_is_refused_naming_the_field(
    stubs: Stubs, request_: admin_pb2.VerifyChainRequest, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stubs.admin.VerifyChain(request_, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (caught.value.details() or "")
