"""Malformed requests to every RPC: each gets a status that names a problem (never UNKNOWN or
INTERNAL) and the server keeps serving everyone else."""

from __future__ import annotations

from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leadtrail.v1 import admin_pb2, event_pb2, query_pb2, stream_pb2, submission_pb2

Stubs = Any  # conftest.Stubs

METHODS = [
    (f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for module in (submission_pb2, query_pb2, stream_pb2, admin_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if method.name != "ApplyRetention"  # valid random requests would delete by policy: not fuzzed here
]
NAMED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a valid subscription runs until its deadline
}

# Valid requests, whose bytes the mutations start from.
SEEDS = [
    submission_pb2.AppendRequest(
        events=[event_pb2.Event(type="source.submitted", lead_id="lead-fuzz", flow_id="flow-fuzz")]
    ).SerializeToString(),
    query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(types=["recipient.*"]), page_size=5
    ).SerializeToString(),
    query_pb2.GetTimelineRequest(lead_id="lead-fuzz").SerializeToString(),
    stream_pb2.SubscribeRequest(from_start=True, batch_size=3).SerializeToString(),
]


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(seed) - 1)))
        seed[at : at + 1] = draw(st.binary(min_size=0, max_size=3))
    return bytes(seed)


def call(
    stubs: Stubs, method: str, client_streaming: bool, server_streaming: bool, raw: bytes
) -> grpc.StatusCode:
    channel = stubs.channel
    try:
        if client_streaming:
            responses = channel.stream_stream(method)(iter([raw]), timeout=2)
            for _ in responses:
                pass
        elif server_streaming:
            responses = channel.unary_stream(method)(raw, timeout=2)
            for _ in responses:
                pass
        else:
            channel.unary_unary(method)(raw, timeout=5)
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        details = e.details() or ""
        assert code in NAMED, (method, raw, code, details)
        assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED) or details, (
            method,
            raw,
        )
        return code
    return grpc.StatusCode.OK


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), raw=request_bytes())
def test_every_rpc_answers_malformed_bytes_with_a_named_status(
    stubs: Stubs, method: tuple[str, bool, bool], raw: bytes
) -> None:
    call(stubs, *method, raw)


def test_the_server_still_serves_after_the_fuzzing(stubs: Stubs) -> None:
    for method in METHODS:  # bytes no message parses from: each names the message it expected
        assert call(stubs, *method, b"\xff\xff\xff") == grpc.StatusCode.INVALID_ARGUMENT, method
    request = submission_pb2.AppendRequest(
        events=[event_pb2.Event(type="source.submitted", lead_id="lead-after-fuzz", flow_id="flow-fuzz")]
    )
    assert stubs.submission.Append(request, timeout=10).results[0].position > 0
