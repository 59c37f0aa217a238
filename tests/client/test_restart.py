"""Subscriptions and the background appender ride out a server restart on the same port."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from leadtrail.client import BackgroundAppender, Client, Event, UnavailableError


def append_when_up(client: Client, events: list[Event], deadline: float) -> list[str]:
    """Append, retrying while the restarted server is not yet accepting calls."""
    while True:
        try:
            return [result.id for result in client.append(events)]
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_subscription_resumes_without_gap_or_duplicate_after_server_restart(fresh_server: Any) -> None:
    client = Client(fresh_server.address, timeout=5)
    deadline = time.monotonic() + 30
    ids = append_when_up(client, [Event("source.submitted", f"l{i}", "flow-r") for i in range(40)], deadline)
    # Events of another flow between them: the resumed subscription must skip them too.
    append_when_up(client, [Event("source.submitted", "x", "other") for _ in range(5)], deadline)
    received: list[Event] = []
    subscription = client.subscribe(from_start=True, flow_id="flow-r")

    def consume() -> None:
        for item in subscription:
            assert isinstance(item, Event)
            received.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    while len(received) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(received) == 40
    position_before = subscription.position

    fresh_server.restart()
    ids += append_when_up(client, [Event("source.submitted", f"m{i}", "flow-r") for i in range(40)], deadline)
    while len(received) < 80 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room for a duplicate to show up, were there one
    subscription.stop()
    consumer.join(5)
    client.close()

    assert not consumer.is_alive()
    assert [event.id for event in received] == ids
    positions = [event.position for event in received]
    assert positions == sorted(set(positions))
    # Checkpoints may carry the position past the last matching event, never short of it.
    assert position_before >= positions[39] and subscription.position >= positions[-1]


def test_background_appender_stores_every_event_exactly_once_across_server_kill_and_restart(
    fresh_server: Any,
) -> None:
    errors: list[Any] = []
    appender = BackgroundAppender(
        fresh_server.address, batch_size=50, linger_ms=2, on_error=lambda e, err: errors.append(err)
    )
    submitted: list[str] = []
    restarted = threading.Event()

    def produce() -> None:
        for n in range(3000):
            submitted.append(appender.submit(Event("source.submitted", f"lead-{n}", "flow-bg")))
            if n % 100 == 0:
                time.sleep(0.05)  # production spans the restart
            if n == 2500:  # however slowly the server restarts, the last 500 come after it
                restarted.wait(60)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 20
    while appender.acknowledged < 800 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert producer.is_alive()
    # Killed outright: batches in flight may or may not be stored, and are sent again.
    fresh_server.restart(signal.SIGKILL)
    assert producer.is_alive()  # the restart happened mid-stream
    restarted.set()
    producer.join()
    assert appender.flush(30)
    assert appender.close(5)
    assert errors == [] and appender.failed == 0 and appender.acknowledged == 3000

    with Client(fresh_server.address) as client:
        stored = [event.id for event in client.query(flow_id="flow-bg", page_size=1000)]
        assert client.stats().event_count == 3000
    assert len(stored) == len(set(stored)) == 3000
    assert set(stored) == set(submitted)
