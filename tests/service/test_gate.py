"""The gate's rate limit on its own, with a clock the test moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from leadtrail.server.auth import Gate, RateLimited
from leadtrail.server.keys import KeyStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_may_burst_its_rate_then_waits_for_tokens(tmp_path: Path) -> None:
    keys = KeyStore(str(tmp_path))
    secret, key = keys.create("acme", "reader", 0, rate_per_second=5)
    other, _ = keys.create("acme", "reader", 0)
    clock = Clock()
    gate = Gate(keys, clock)
    metadata = (("authorization", f"Bearer {secret}"),)
    for _ in range(5):
        assert gate.admit(metadata, "QueryEvents") == key
    with pytest.raises(RateLimited) as refused:
        gate.admit(metadata, "QueryEvents")
    assert refused.value.retry_after_s == pytest.approx(0.2)
    clock.now += 0.1
    with pytest.raises(RateLimited) as again:
        gate.admit(metadata, "QueryEvents")
    assert again.value.retry_after_s == pytest.approx(0.1)
    clock.now += 0.1
    assert gate.admit(metadata, "QueryEvents") == key
    for _ in range(50):  # a key without a limit is never refused
        gate.admit((("authorization", f"Bearer {other}"),), "QueryEvents")
    clock.now += 60  # idle time saves at most one second of calls
    for _ in range(5):
        gate.admit(metadata, "QueryEvents")
    with pytest.raises(RateLimited):
        gate.admit(metadata, "QueryEvents")


def test_keys_refuse_a_rate_out_of_range(tmp_path: Path) -> None:
    from leadtrail.server.keys import KeyStoreError

    with pytest.raises(KeyStoreError, match="rate limit -1"):
        KeyStore(str(tmp_path)).create("acme", "reader", 0, rate_per_second=-1)


def test_a_stream_is_paced_by_its_keys_rate_rather_than_ended(tmp_path: Path) -> None:
    import asyncio

    keys = KeyStore(str(tmp_path))
    secret, key = keys.create("acme", "writer", 0, rate_per_second=4)
    clock = Clock()
    gate = Gate(keys, clock)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the test's clock moves instead of time
        slept.append(seconds)
        clock.now += seconds

    async def send(messages: int) -> None:
        for _ in range(messages):
            await gate.pace(key, sleep)

    asyncio.run(send(4))  # the burst
    assert slept == []
    asyncio.run(send(4))  # then one message every quarter second
    assert slept == [pytest.approx(0.25)] * 4
    assert clock.now == pytest.approx(101.0)
    with pytest.raises(RateLimited):  # and a new call finds the budget spent
        gate.admit((("authorization", f"Bearer {secret}"),), "Append")
    unlimited = keys.create("acme", "writer", 0)[1]
    asyncio.run(gate.pace(unlimited, sleep))
    asyncio.run(gate.pace(None, sleep))
    assert len(slept) == 4
