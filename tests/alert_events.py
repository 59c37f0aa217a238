"""Reading alert events back over gRPC, for the tests of alert firing: every
``alert.fired`` / ``alert.resolved`` in position order, and a bounded wait for the ones a
test expects. Loaded once by ``tests/conftest.py`` as the module ``alert_events``."""

from __future__ import annotations

import time
from collections.abc import Callable

from leadtrail.client import Client, Event

ALERT_TYPES = ["alert.fired", "alert.resolved"]
WAIT_S = 30.0


def alerts(client: Client) -> list[Event]:
    return sorted(client.query(types=ALERT_TYPES), key=lambda e: e.position)


def wait_for(client: Client, done: Callable[[list[Event]], bool], timeout: float = WAIT_S) -> list[Event]:
    deadline = time.monotonic() + timeout
    while True:
        found = alerts(client)
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"alerts so far: {[(e.type, e.entity_id, e.details) for e in found]}")
        time.sleep(0.05)
