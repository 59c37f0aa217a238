"""Subscribers that stop reading cost the server a bounded amount of memory each, and all
together no more than the subscriptions' shared budget: a stalled subscriber goes back to
reading from disk, and once it reads it gets every event, in order, with no gap."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from leadtrail.v1 import event_pb2, stream_pb2, stream_pb2_grpc, submission_pb2, submission_pb2_grpc

Server = Any  # conftest.ServerProcess

SUBSCRIBERS = 50
EVENTS = 7000
"""Enough for every subscriber to fall behind the live feed (4,096 events) and replay from
disk, where each one used to keep a 4 MiB read buffer: the server grew by 280 MiB."""
RSS_GROWTH_LIMIT = 150 * 1024 * 1024
"""What the stalled subscribers may add to the server's resident memory: the live feed, the
subscriptions' 64 MiB budget, each one's message in flight and gRPC's buffers (~60 MiB
measured), with room for the allocator on a loaded machine."""


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def lead_events(start: int, count: int) -> list[event_pb2.Event]:
    out = []
    for i in range(start, start + count):
        event = event_pb2.Event(type="source.submitted", lead_id=f"lead-{i}", flow_id="flow-memory")
        # ~1.2 KB snapshots of varied values, as a lead-distribution platform sends them.
        event.lead_json = (
            b'{"email":"person%d@example.com","notes":"' + os.urandom(450).hex().encode() + b'"}'
        ) % i
        out.append(event)
    return out


def test_stalled_subscribers_hold_bounded_memory_and_miss_nothing_once_they_read(
    spawn: Callable[..., Server], tmp_path: Path
) -> None:
    server = spawn(tmp_path / "data")
    channels = [grpc.insecure_channel(server.address) for _ in range(4)]
    try:
        submission = submission_pb2_grpc.SubmissionServiceStub(channels[0])
        submission.Append(submission_pb2.AppendRequest(events=lead_events(0, 10)), timeout=60)
        before = vm_rss(server.pid)
        # One message an event, as most subscribers ask: many small sends, the case that grew.
        request = stream_pb2.SubscribeRequest(after_position=10, json_snapshots=True)
        streams = [
            stream_pb2_grpc.StreamServiceStub(channels[i % len(channels)]).Subscribe(request, timeout=600)
            for i in range(SUBSCRIBERS)
        ]
        for start in range(10, 10 + EVENTS, 500):
            submission.Append(submission_pb2.AppendRequest(events=lead_events(start, 500)), timeout=60)
        peak = vm_rss(server.pid)
        # The pumps run on: give them time to fill what they may hold, and measure again.
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, vm_rss(server.pid))
        assert peak - before < RSS_GROWTH_LIMIT, f"grew {(peak - before) >> 20} MiB with stalled subscribers"

        last = 10 + EVENTS
        for number, stream in enumerate(streams):
            expected = 11
            for message in stream:
                if message.WhichOneof("message") == "event":
                    assert message.event.position == expected, number
                    expected += 1
                if expected > last:
                    break
            stream.cancel()
            assert expected == last + 1, number
    finally:
        for channel in channels:
            channel.close()
