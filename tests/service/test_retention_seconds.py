"""Retention ages in seconds through the SDK against a real server: a policy of a few
seconds expires what is older on the server's own clock, and keeps what is newer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from leadtrail.client import AsyncClient, Client, Event, InvalidArgumentError, NotFoundError

from .conftest import ServerProcess

AGE_S = 2
MAX_SECONDS = 36_500 * 86_400


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.address) as c:
        yield c


def journey(lead: str, n: int) -> list[Event]:
    return [Event("source.submitted", lead_id=lead, flow_id="flow-test", lead={"step": i}) for i in range(n)]


def test_events_older_than_the_seconds_expire_and_newer_ones_stay(client: Client) -> None:
    policy = client.set_retention_policy("default", max_age_seconds=AGE_S)
    assert (policy.account_id, policy.max_age_seconds, policy.max_age_days) == ("default", AGE_S, 0)

    old = client.append(journey("lead-old", 3) + journey("lead-mixed", 2))
    oldest_kept_ms = max(r.recorded_at.timestamp() for r in old) * 1000 + AGE_S * 1000
    deadline = time.monotonic() + 30
    # Wait on the wall clock (the server's, on this machine) until the events are past their age.
    while time.time() * 1000 <= oldest_kept_ms + 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    new = client.append(journey("lead-mixed", 2) + journey("lead-new", 1))

    report = client.apply_retention()

    assert report.events_removed == len(old)
    with pytest.raises(NotFoundError):
        client.timeline("lead-old")
    assert [s.event.id for s in client.timeline("lead-mixed").steps] == [r.id for r in new[:2]]
    assert [s.event.id for s in client.timeline("lead-new").steps] == [new[2].id]
    for r in old:
        with pytest.raises(NotFoundError):
            client.get(r.id)
    # Legal hold still wins over the age.
    client.set_retention_policy("default", legal_hold=True, max_age_seconds=1)
    assert client.apply_retention().events_removed == 0
    client.set_retention_policy("default")  # keep forever again for later tests of the module


def test_days_and_seconds_together_or_too_many_seconds_are_invalid(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match="max_age_days and max_age_seconds"):
        client.set_retention_policy("other", max_age_days=1, max_age_seconds=60)
    with pytest.raises(InvalidArgumentError, match=f"max_age_seconds: .*limit of {MAX_SECONDS} seconds"):
        client.set_retention_policy("other", max_age_seconds=MAX_SECONDS + 1)


def test_the_async_client_sets_seconds_too(server: ServerProcess) -> None:
    async def main() -> int:
        async with AsyncClient(server.address) as c:
            policy = await c.set_retention_policy("async-co", max_age_seconds=21_600)
            return policy.max_age_seconds

    assert asyncio.run(main()) == 21_600
