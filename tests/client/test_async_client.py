"""The asyncio client gives the same results as the blocking one against a real server."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from leadtrail.client import AsyncClient, CaughtUp, Event, NotFoundError, Outcome

T0 = datetime(2025, 6, 1, tzinfo=UTC)
_unique = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}-{next(_unique)}"


def test_async_client_appends_reads_queries_exports_and_aggregates(leadtrail_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncClient(leadtrail_server.address, timeout=10) as client:
            flow = unique("flow")
            results = await client.append(
                [
                    Event(
                        "recipient.delivered",
                        f"l{i}",
                        flow,
                        timestamp=T0 + timedelta(seconds=i),
                        outcome=Outcome.SUCCESS,
                        price=Decimal("1.25"),
                        lead={"i": i},
                    )
                    for i in range(7)
                ]
            )
            single = await client.append(Event("source.submitted", "l0", flow, timestamp=T0))
            assert not single.duplicate and single.position > results[-1].position

            got = await client.get(results[0].id)
            assert got.price == Decimal("1.25") and got.timestamp == T0 and got.lead == {"i": 0}
            with pytest.raises(NotFoundError):
                await client.get("evt_01JNMXW2YQ0000000000000ZZZ")

            queried = [e.id async for e in client.query(flow_id=flow, types="recipient.*", page_size=3)]
            assert queried == [r.id for r in results]
            page, token = await client.query_page(flow_id=flow, page_size=5)
            assert len(page) == 5 and token

            timeline = await client.timeline("l0")
            assert [step.event.id for step in timeline.steps] == [results[0].id, single.id]

            lines = b"".join([chunk async for chunk in client.export(flow_id=flow)]).splitlines()
            assert len(lines) == 8 and json.loads(lines[0])["flow_id"] == flow

            rows = await client.aggregate("type", flow_id=flow)
            assert {row.keys: (row.count, row.price_sum) for row in rows} == {
                ("recipient.delivered",): (7, Decimal("8.75")),
                ("source.submitted",): (1, Decimal(0)),
            }

            stats = await client.stats()
            assert stats.event_count >= 8
            assert (await client.verify()).problems == []

    asyncio.run(scenario())


def test_async_subscription_delivers_history_live_events_and_stops(leadtrail_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncClient(leadtrail_server.address) as client:
            flow = unique("flow")
            first = await client.append(Event("source.submitted", "l", flow))
            seen: list[Any] = []
            async with client.subscribe(from_start=True, flow_id=flow, include_checkpoints=True) as sub:
                async for item in sub:
                    seen.append(item)
                    if isinstance(item, CaughtUp):
                        live = await client.append(Event("recipient.delivered", "l", flow))
                    elif isinstance(item, Event) and item.id != first.id:
                        break
            assert [type(item).__name__ for item in seen] == ["Event", "CaughtUp", "Event"]
            assert seen[0].id == first.id and seen[2].id == live.id

            idle = client.subscribe(flow_id=unique("flow"))
            asyncio.get_running_loop().call_later(0.2, idle.stop)
            started = time.monotonic()
            assert [item async for item in idle] == []
            assert time.monotonic() - started < 10  # stopped, not ended by a timeout of its own

    asyncio.run(asyncio.wait_for(scenario(), 20))
