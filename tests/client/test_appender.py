"""BackgroundAppender against a real in-process gRPC server with an idempotent in-memory store."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import Any

import grpc
import pytest
from leadtrail.client import (
    BackgroundAppender,
    Client,
    Event,
    InvalidArgumentError,
    LeadTrailError,
    PermissionDeniedError,
    QueueFullError,
)

ID = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def event(n: int, type: str = "source.submitted") -> Event:
    return Event(type, lead_id=f"lead-{n}", flow_id="flow-1", details={"n": n})


def test_submit_names_events_with_new_ulids_and_keeps_given_ids(fake_server: Any) -> None:
    with BackgroundAppender(fake_server.address) as appender:
        assigned = [appender.submit(event(n)) for n in range(5)]
        given = appender.submit(Event("a.b", "l", "f", id="evt_01JNMXW2YQ0000000000000001"))
        assert appender.flush(5)
    assert all(ID.match(event_id) for event_id in assigned)
    assert assigned == sorted(assigned) and len(set(assigned)) == 5
    assert given == "evt_01JNMXW2YQ0000000000000001"
    assert fake_server.service.order == [*assigned, given]


def test_flush_returns_once_every_submitted_event_is_acknowledged(fake_server: Any) -> None:
    appender = BackgroundAppender(fake_server.address, batch_size=50)
    ids = [appender.submit(event(n)) for n in range(1000)]
    assert appender.flush(10)
    assert appender.acknowledged == appender.submitted == 1000
    assert set(fake_server.service.stored) == set(ids)
    assert appender.close()


def test_events_are_batched_and_pipelined_on_one_long_lived_stream(fake_server: Any) -> None:
    with BackgroundAppender(fake_server.address, batch_size=100, linger_ms=20) as appender:
        for n in range(1000):
            appender.submit(event(n))
        assert appender.flush(10)
        for n in range(10):
            appender.submit(event(n + 1000))
        assert appender.flush(10)
    service = fake_server.service
    assert service.stream_calls == 1 and service.unary_calls == 0
    assert max(service.request_sizes) <= 100
    assert len(service.request_sizes) < 100  # batched, not one request per event


def test_api_key_is_sent_as_bearer_metadata(fake_server: Any) -> None:
    with BackgroundAppender(fake_server.address, api_key="secret-1") as appender:
        appender.submit(event(1))
        assert appender.flush(5)
    assert fake_server.service.metadata[0]["authorization"] == "Bearer secret-1"


def test_unacknowledged_batches_are_sent_again_after_a_lost_connection_and_stored_once(
    fake_server: Any,
) -> None:
    service = fake_server.service
    # Requests 3 and 7 are stored but the connection "drops" before the answer.
    service.fail_after_store = lambda number, stored: (
        grpc.StatusCode.UNAVAILABLE if number in (3, 7) else None
    )
    with BackgroundAppender(fake_server.address, batch_size=10, linger_ms=1) as appender:
        ids = []
        for n in range(300):
            ids.append(appender.submit(event(n)))
            if n % 25 == 0:
                time.sleep(0.002)
        assert appender.flush(10)
        assert (appender.acknowledged, appender.failed) == (300, 0)
    assert service.duplicates > 0  # the lost acknowledgements really were re-sent
    assert sorted(service.stored) == sorted(ids) and len(service.order) == 300
    assert service.stream_calls >= 3


def test_server_restart_on_the_same_port_mid_stream_loses_and_duplicates_nothing(fake_server: Any) -> None:
    appender = BackgroundAppender(fake_server.address, batch_size=20, linger_ms=1)
    ids: list[str] = []

    def produce() -> None:
        for n in range(2000):
            ids.append(appender.submit(event(n)))
            if n % 50 == 0:
                time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 10
    while len(fake_server.service.order) < 400 and time.monotonic() < deadline:
        time.sleep(0.001)
    fake_server.stop()  # connections cut while batches are in flight
    time.sleep(0.3)
    fake_server.start()  # same port, same store
    producer.join()
    assert appender.flush(20)
    assert appender.close()
    service = fake_server.service
    assert appender.failed == 0 and appender.acknowledged == 2000
    assert len(service.order) == len(set(service.order)) == 2000
    assert set(service.order) == set(ids)
    assert service.stream_calls >= 2


def test_invalid_event_is_isolated_and_reported_while_its_batch_neighbours_are_stored(
    fake_server: Any,
) -> None:
    errors: list[tuple[Event, LeadTrailError]] = []
    with BackgroundAppender(
        fake_server.address, batch_size=64, linger_ms=50, on_error=lambda e, err: errors.append((e, err))
    ) as appender:
        good = [appender.submit(event(n)) for n in range(30)]
        bad = appender.submit(event(30, type="Not A Type"))
        good += [appender.submit(event(n)) for n in range(31, 60)]
        assert appender.flush(10)
        assert (appender.acknowledged, appender.failed) == (59, 1)
    assert [failed.id for failed, _ in errors] == [bad]
    assert isinstance(errors[0][1], InvalidArgumentError)
    assert set(fake_server.service.stored) == set(good)


def test_event_that_cannot_be_encoded_is_reported_without_a_call(fake_server: Any) -> None:
    errors: list[tuple[Event, LeadTrailError]] = []
    with BackgroundAppender(fake_server.address, on_error=lambda e, err: errors.append((e, err))) as appender:
        naive = appender.submit(Event("a.b", "l", "f", timestamp=datetime(2025, 1, 1)))
        fine = appender.submit(event(1))
        assert appender.flush(5)
    assert [e.id for e, _ in errors] == [naive]
    assert isinstance(errors[0][1], InvalidArgumentError) and "naive" in str(errors[0][1])
    assert list(fake_server.service.stored) == [fine]


def test_rejection_of_the_caller_fails_the_batch_once_without_retrying_forever(fake_server: Any) -> None:
    fake_server.service.fail_after_store = lambda number, stored: grpc.StatusCode.PERMISSION_DENIED
    errors: list[LeadTrailError] = []
    with BackgroundAppender(fake_server.address, on_error=lambda e, err: errors.append(err)) as appender:
        for n in range(5):
            appender.submit(event(n))
        assert appender.flush(5)
        assert appender.failed == 5
    assert len(errors) == 5 and all(isinstance(err, PermissionDeniedError) for err in errors)


def test_on_error_that_raises_does_not_stop_delivery(fake_server: Any) -> None:
    def explode(event: Event, error: LeadTrailError) -> None:
        raise RuntimeError("callback bug")

    with BackgroundAppender(fake_server.address, batch_size=8, on_error=explode) as appender:
        appender.submit(event(0, type="BAD"))
        later = appender.submit(event(1))
        assert appender.flush(5)
    assert later in fake_server.service.stored


def stalled_appender(fake_server: Any, policy: str, **options: Any) -> BackgroundAppender:
    """An appender whose server answers nothing, so its queue of 4 fills up."""
    fake_server.service.gate.clear()
    appender = BackgroundAppender(
        fake_server.address,
        max_queue=4,
        batch_size=1,
        linger_ms=0,
        max_in_flight=1,
        full_policy=policy,
        **options,  # type: ignore[arg-type]
    )
    # One event in flight, one held by the sender waiting for room, four queued:
    # top the queue up until the sender has stopped taking from it.
    for _ in range(100):
        while not appender._queue.full():
            appender.submit(event(appender.submitted))
        time.sleep(0.02)
        if appender._queue.full():
            break
    assert appender._queue.full()
    return appender


def test_full_queue_with_raise_policy_raises_at_once(fake_server: Any) -> None:
    appender = stalled_appender(fake_server, "raise")
    started = time.monotonic()
    with pytest.raises(QueueFullError):
        appender.submit(event(99))
    assert time.monotonic() - started < 1  # at once: the block policy would wait for room
    fake_server.service.gate.set()
    assert appender.close(10)


def test_full_queue_with_drop_newest_policy_drops_and_counts(fake_server: Any) -> None:
    appender = stalled_appender(fake_server, "drop_newest")
    before = appender.submitted
    dropped_ids = [appender.submit(event(100 + n)) for n in range(3)]
    assert appender.dropped == 3 and appender.submitted == before
    fake_server.service.gate.set()
    assert appender.close(10)
    assert not set(dropped_ids) & set(fake_server.service.stored)
    assert len(fake_server.service.stored) == before


def test_full_queue_with_block_policy_gives_up_after_block_timeout(fake_server: Any) -> None:
    appender = stalled_appender(fake_server, "block", block_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(QueueFullError):
        appender.submit(event(99))
    assert 0.18 <= time.monotonic() - started < 2
    fake_server.service.gate.set()
    assert appender.close(10)


def test_full_queue_with_block_policy_waits_for_room(fake_server: Any) -> None:
    appender = stalled_appender(fake_server, "block", block_timeout=5)
    threading.Timer(0.2, fake_server.service.gate.set).start()
    started = time.monotonic()
    late = appender.submit(event(99))
    assert 0.15 <= time.monotonic() - started < 4
    assert appender.close(10)
    assert late in fake_server.service.stored


def test_close_reports_what_the_server_never_acknowledged(fake_server: Any) -> None:
    fake_server.service.gate.clear()
    errors: list[Event] = []
    appender = BackgroundAppender(fake_server.address, on_error=lambda e, err: errors.append(e))
    ids = [appender.submit(event(n)) for n in range(10)]
    assert not appender.close(timeout=0.3)
    assert appender.failed == 10 and sorted(e.id for e in errors) == sorted(ids)
    with pytest.raises(LeadTrailError, match="closed"):
        appender.submit(event(11))


def test_appender_can_share_a_client_and_leaves_it_open(fake_server: Any) -> None:
    client = Client(fake_server.address)
    with BackgroundAppender(client) as appender:
        appender.submit(event(1))
        assert appender.flush(5)
    result = client.append(Event("a.b", "l", "f", id="evt_01JNMXW2YQ0000000000000002"))  # channel open
    assert result.position == 2
    client.close()


def test_submit_takes_microseconds(fake_server: Any) -> None:
    with BackgroundAppender(fake_server.address) as appender:
        sample = event(0)
        timings = []
        for _ in range(2000):
            started = time.perf_counter()
            appender.submit(sample)
            timings.append(time.perf_counter() - started)
        assert appender.flush(10)
    timings.sort()
    assert timings[len(timings) // 2] < 100e-6  # median; generous for a shared CI machine
