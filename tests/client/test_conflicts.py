"""Re-sending a stored id with other content keeps the first event and warns, naming the id."""

from __future__ import annotations

import asyncio
import itertools
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from leadtrail.client import (
    AppendConflictWarning,
    AsyncClient,
    BackgroundAppender,
    Client,
    Event,
    new_event_id,
)

T0 = datetime(2025, 6, 1, tzinfo=UTC)
_unique = itertools.count()


def _first(event_id: str) -> Event:
    return Event("source.submitted", f"lead-{next(_unique)}", "flow-conflict", id=event_id, timestamp=T0)


def test_an_id_resent_with_another_type_warns_and_the_first_event_stays(leadtrail_server: Any) -> None:
    event_id = new_event_id()
    sent = _first(event_id)
    with Client(leadtrail_server.address, timeout=10) as client:
        first = client.append(sent)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the very same event again is a plain duplicate
            again = client.append(sent)
        assert again.duplicate and not again.conflict
        with pytest.warns(AppendConflictWarning, match=event_id) as caught:
            other = client.append(Event("recipient.delivered", "someone-else", "flow-conflict", id=event_id))
        assert other.duplicate and other.conflict and other.position == first.position
        assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller's line
        assert client.get(event_id).type == "source.submitted"


def test_the_async_client_warns_the_same(leadtrail_server: Any) -> None:
    event_id = new_event_id()

    async def scenario() -> None:
        async with AsyncClient(leadtrail_server.address, timeout=10) as client:
            await client.append(_first(event_id))
            with pytest.warns(AppendConflictWarning, match=event_id):
                result = await client.append(Event("source.rejected", "l", "flow-conflict", id=event_id))
            assert result.conflict

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_background_appender_warns_too(leadtrail_server: Any) -> None:
    event_id = new_event_id()
    with Client(leadtrail_server.address, timeout=10) as client:
        client.append(_first(event_id))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with BackgroundAppender(leadtrail_server.address) as appender:
            appender.submit(Event("source.rejected", "l", "flow-conflict", id=event_id))
            assert appender.flush(30)  # warned on the appender's thread before acknowledging
    conflicts = [w.message for w in caught if isinstance(w.message, AppendConflictWarning)]
    assert [c.event_id for c in conflicts] == [event_id]
