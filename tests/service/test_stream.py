"""Subscribe over a real server: replay, caught_up, live, resume points, checkpoints,
and a subscriber that reads nothing while 100k events arrive."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from leadtrail.v1 import event_pb2, stream_pb2, stream_pb2_grpc, submission_pb2, submission_pb2_grpc

MakeEvent = Callable[..., event_pb2.Event]
Stubs = Any  # conftest.Stubs


def append(stubs: Stubs, *events: event_pb2.Event) -> list[submission_pb2.AppendResult]:
    return list(stubs.submission.Append(submission_pb2.AppendRequest(events=events), timeout=30).results)


class Reader:
    """Reads a subscription on a thread so a test can wait for messages with a timeout."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: queue.Queue[stream_pb2.SubscribeResponse | BaseException] = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except BaseException as e:
            self.messages.put(e)

    def take(self, n: int, timeout: float = 20.0) -> list[stream_pb2.SubscribeResponse]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            item = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(item, BaseException):
                raise item
            out.append(item)
        return out

    def take_until(
        self, predicate: Callable[[stream_pb2.SubscribeResponse], bool], timeout: float = 20.0
    ) -> list[stream_pb2.SubscribeResponse]:
        out = []
        deadline = time.monotonic() + timeout
        while True:
            [message] = self.take(1, max(0.01, deadline - time.monotonic()))
            out.append(message)
            if predicate(message):
                return out

    def cancel(self) -> None:
        self.call.cancel()


def subscribe(stubs: Stubs, **kwargs: Any) -> Reader:
    return Reader(stubs.stream.Subscribe(stream_pb2.SubscribeRequest(**kwargs)))


def kinds(messages: list[stream_pb2.SubscribeResponse]) -> list[str]:
    return [str(m.WhichOneof("message")) for m in messages]


def test_replay_then_caught_up_once_then_live_without_gap_or_duplicate(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    flow = "flow-sub-live"
    before = append(stubs, *[make_event(f"lead-s{i}", flow_id=flow) for i in range(30)])
    reader = subscribe(stubs, from_start=True, filter=event_pb2.EventFilter(flow_id=flow))
    replay = reader.take_until(lambda m: m.HasField("caught_up"))
    assert [m.event.id for m in replay if m.HasField("event")] == [r.id for r in before]
    assert replay[-1].caught_up.position >= before[-1].position
    live = append(stubs, *[make_event(f"lead-t{i}", flow_id=flow) for i in range(5)])
    live += append(stubs, make_event("lead-t5", flow_id=flow))
    got = [m for m in reader.take(len(live) + 0, timeout=20) if m.HasField("event")]
    while len(got) < len(live):
        got += [m for m in reader.take(1) if m.HasField("event")]
    assert [m.event.id for m in got] == [r.id for r in live]
    assert [m.event.position for m in got] == sorted(m.event.position for m in got)
    reader.cancel()


def test_after_position_resumes_exactly_after_it(stubs: Stubs, make_event: MakeEvent) -> None:
    flow = "flow-sub-after"
    results = append(stubs, *[make_event("lead-after", flow_id=flow) for _ in range(10)])
    reader = subscribe(stubs, after_position=results[3].position, filter=event_pb2.EventFilter(flow_id=flow))
    events = [m for m in reader.take_until(lambda m: m.HasField("caught_up")) if m.HasField("event")]
    assert [m.event.position for m in events] == [r.position for r in results[4:]]
    reader.cancel()


def test_from_end_sends_only_events_appended_after_subscribing(stubs: Stubs, make_event: MakeEvent) -> None:
    flow = "flow-sub-end"
    append(stubs, *[make_event("lead-end", flow_id=flow) for _ in range(3)])
    reader = subscribe(stubs, from_end=True, filter=event_pb2.EventFilter(flow_id=flow))
    assert kinds(reader.take(1)) == ["caught_up"]
    [new] = append(stubs, make_event("lead-end", flow_id=flow))
    [message] = reader.take_until(lambda m: m.HasField("event"))
    assert message.event.id == new.id
    reader.cancel()


def test_from_recorded_at_starts_at_the_first_event_committed_at_or_after_it(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    flow = "flow-sub-recorded"
    append(stubs, make_event("lead-rec", flow_id=flow))
    time.sleep(0.05)
    later = append(stubs, *[make_event("lead-rec", flow_id=flow) for _ in range(3)])
    reader = subscribe(
        stubs, from_recorded_at=later[0].recorded_at, filter=event_pb2.EventFilter(flow_id=flow)
    )
    events = [m for m in reader.take_until(lambda m: m.HasField("caught_up")) if m.HasField("event")]
    assert [m.event.id for m in events] == [r.id for r in later]
    reader.cancel()


def test_a_filter_that_matches_nothing_still_gets_checkpoints(stubs: Stubs, make_event: MakeEvent) -> None:
    first = append(stubs, make_event("lead-cp", flow_id="flow-cp"))[0].position
    for _ in range(5):
        append(stubs, *[make_event("lead-cp", flow_id="flow-cp", lead={}) for _ in range(500)])
    reader = subscribe(
        stubs, after_position=first, filter=event_pb2.EventFilter(flow_id="flow-that-never-is")
    )
    replay = reader.take_until(lambda m: m.HasField("caught_up"))
    checkpoints = [m.checkpoint.position for m in replay if m.HasField("checkpoint")]
    assert kinds(replay)[-1] == "caught_up"
    assert len(checkpoints) >= 2 and checkpoints == sorted(checkpoints)
    gaps = [b - a for a, b in zip([first, *checkpoints], checkpoints, strict=False)]
    assert max(gaps) <= 1000
    # Live: matching nothing, the client still hears within about a second.
    [late] = append(stubs, make_event("lead-cp", flow_id="flow-cp"))
    [beat] = reader.take(1, timeout=5)
    assert beat.checkpoint.position >= late.position
    reader.cancel()


def test_a_cancelled_subscription_ends_and_the_server_keeps_serving(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    readers = [subscribe(stubs, from_start=True) for _ in range(5)]
    for reader in readers:
        reader.take(1)
        reader.cancel()
    for reader in readers:
        with pytest.raises(grpc.RpcError) as info:
            reader.take_until(lambda m: False, timeout=20)
        assert info.value.code() == grpc.StatusCode.CANCELLED
    assert append(stubs, make_event("lead-after-cancel"))[0].position > 0


@pytest.mark.slow
def test_a_subscriber_that_reads_nothing_while_100k_events_arrive_gets_all_in_order_and_memory_stays_bounded(
    spawn: Callable[..., Any], tmp_path: Path
) -> None:
    server = spawn(tmp_path / "data")
    channel = grpc.insecure_channel(server.address)
    submission = submission_pb2_grpc.SubmissionServiceStub(channel)
    stream = stream_pb2_grpc.StreamServiceStub(channel)
    call = stream.Subscribe(stream_pb2.SubscribeRequest(from_start=True))
    first = next(call)  # subscribed and caught up on the empty store; now read nothing
    assert first.HasField("caught_up")
    padding = "p" * 1500  # ~1.5 KB of snapshot per event: 75 MB per 50k events if the server kept them

    def batches(first: int) -> Iterator[submission_pb2.AppendRequest]:
        for b in range(first, first + 100):
            events = []
            for i in range(500):
                e = event_pb2.Event(type="source.submitted", lead_id=f"lead-{b}-{i}", flow_id="flow-slow")
                e.lead.update({"notes": padding, "n": b * 500 + i})
                events.append(e)
            yield submission_pb2.AppendRequest(events=events)

    # The first 50k fill every bounded cache; the next 50k must not grow the server.
    acknowledged = sum(len(r.results) for r in submission.AppendStream(batches(0), timeout=300))
    half = server.rss_anon_bytes()
    acknowledged += sum(len(r.results) for r in submission.AppendStream(batches(100), timeout=300))
    assert acknowledged == 100_000
    grown = server.rss_anon_bytes() - half
    # Keeping 50k unread ~1.5 KB events would add 75 MB at the very least; what the
    # allocator keeps of in-flight requests on a busy machine has reached 33 MB.
    assert grown < 64 * 1024 * 1024, f"server memory grew {grown >> 20} MiB over 50k events nobody read"
    expected = 1
    for message in call:
        if message.HasField("event"):
            assert message.event.position == expected
            assert message.event.lead.fields["n"].number_value == expected - 1
            expected += 1
            if expected > 100_000:
                break
    call.cancel()
    channel.close()
    assert expected == 100_001
    assert server.stop() == 0


def events_in(messages: list[stream_pb2.SubscribeResponse]) -> list[event_pb2.Event]:
    out: list[event_pb2.Event] = []
    for m in messages:
        out += m.events.events if m.HasField("events") else [m.event] if m.HasField("event") else []
    return out


def test_batches_carry_the_same_events_in_order_within_the_batch_size(
    stubs: Stubs, make_event: MakeEvent
) -> None:
    flow = "flow-sub-batch"
    before = append(stubs, *[make_event(f"lead-b{i}", flow_id=flow) for i in range(25)])
    reader = subscribe(stubs, from_start=True, batch_size=10, filter=event_pb2.EventFilter(flow_id=flow))
    replay = reader.take_until(lambda m: m.HasField("caught_up"))
    assert "event" not in kinds(replay)  # a batching subscriber gets no single-event messages
    sizes = [len(m.events.events) for m in replay if m.HasField("events")]
    assert sizes and max(sizes) <= 10 and sum(sizes) == 25
    assert [e.id for e in events_in(replay)] == [r.id for r in before]
    live = append(stubs, *[make_event(f"lead-c{i}", flow_id=flow) for i in range(3)])
    got: list[event_pb2.Event] = []
    while len(got) < len(live):
        got += events_in(reader.take(1))
    assert [e.id for e in got] == [r.id for r in live]
    reader.cancel()


def test_a_batch_is_sent_before_the_checkpoint_that_follows_it(stubs: Stubs, make_event: MakeEvent) -> None:
    first = append(stubs, make_event("lead-bcp", flow_id="flow-bcp-other"))[0].position
    wanted = append(stubs, make_event("lead-bcp", flow_id="flow-bcp"))
    for _ in range(3):
        append(stubs, *[make_event("lead-bcp", flow_id="flow-bcp-other", lead={}) for _ in range(500)])
    reader = subscribe(
        stubs, after_position=first, batch_size=100, filter=event_pb2.EventFilter(flow_id="flow-bcp")
    )
    replay = reader.take_until(lambda m: m.HasField("caught_up"))
    positions = [
        m.checkpoint.position if m.HasField("checkpoint") else m.events.events[-1].position
        for m in replay
        if m.HasField("checkpoint") or m.HasField("events")
    ]
    assert kinds(replay)[0] == "events" and "checkpoint" in kinds(replay)
    assert [e.id for e in events_in(replay)] == [wanted[0].id]
    assert positions == sorted(positions)  # never a checkpoint past an event not yet sent
    reader.cancel()


def test_a_batch_size_over_the_limit_is_invalid_argument_naming_it(stubs: Stubs) -> None:
    reader = subscribe(stubs, from_start=True, batch_size=1001)
    with pytest.raises(grpc.RpcError) as info:
        reader.take(1)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch_size" in info.value.details() and "1000" in info.value.details()
