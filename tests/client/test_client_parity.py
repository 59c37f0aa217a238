"""The blocking and the asyncio client offer the same methods with the same parameters,
and both clean up after themselves."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from leadtrail.client import AsyncClient, AsyncSubscription, Client, Subscription

# Iterators in the blocking client, async iterators in the asyncio one; every other
# public method returns a value there and an awaitable here.
STREAMS = {"query", "export", "subscribe", "timeline_pages"}


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_sync_and_async_clients_have_the_same_methods_and_parameters() -> None:
    sync, asynchronous = _public(Client), _public(AsyncClient)
    assert sorted(sync) == sorted(asynchronous)
    for name, method in sync.items():
        twin = asynchronous[name]
        if isinstance(method, property) or isinstance(twin, property):
            assert isinstance(method, property) and isinstance(twin, property), name
            continue
        assert _parameters(method) == _parameters(twin), name
        if name in STREAMS:
            assert not inspect.iscoroutinefunction(twin), name
        else:
            assert inspect.iscoroutinefunction(twin), name
            assert not inspect.iscoroutinefunction(method), name


def test_sync_and_async_subscriptions_have_the_same_members() -> None:
    assert sorted(_public(Subscription)) == sorted(_public(AsyncSubscription))


def test_async_client_close_is_safe_twice(leadtrail_server: Any) -> None:
    async def scenario() -> None:
        client = AsyncClient(leadtrail_server.address, timeout=10)
        await client.stats()
        await client.close()
        await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_stopped_subscription_leaves_the_clients_open_set(leadtrail_server: Any) -> None:
    with Client(leadtrail_server.address, timeout=10) as client:
        subscription = client.subscribe()
        assert subscription in client._subscriptions
        subscription.stop()
        assert subscription not in client._subscriptions

    async def scenario() -> None:
        async with AsyncClient(leadtrail_server.address, timeout=10) as client:
            subscription = client.subscribe()
            assert subscription in client._subscriptions
            await subscription.stop()
            assert subscription not in client._subscriptions

    asyncio.run(asyncio.wait_for(scenario(), 30))
