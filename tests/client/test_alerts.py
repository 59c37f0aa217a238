"""The SDK's alert calls against a real server, the blocking and the asyncio client alike: rules
set, read back (Decimal thresholds, never a secret), deleted; refusals as the SDK's errors;
the value types' checks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from leadtrail.client import (
    AlertKind,
    AlertRule,
    AsyncClient,
    Client,
    EventFilter,
    GroupBy,
    InvalidArgumentError,
    NotFoundError,
    Outcome,
)

server_process = sys.modules["server_process"]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("sdk-alerts") / "data"
    process = server_process.ServerProcess(data, "--http", "off").start()
    yield process.address
    assert process.stop() == 0


def failures_rule(name: str = "buyer-failures", **fields: Any) -> AlertRule:
    values: dict[str, Any] = {
        "kind": AlertKind.RATE,
        "filter": EventFilter(types="recipient.failed", outcomes=Outcome.FAILURE),
        "base": EventFilter(types=("recipient.*",)),
        "threshold": Decimal("0.2"),
        "window_s": 300,
        "min_events": 20,
        "group_by": GroupBy.ENTITY,
        "webhook_url": "https://hooks.example.com/lt",
        "webhook_secret": "sdk-secret",
        "description": "buyers failing",
    }
    values.update(fields)
    return AlertRule(name, **values)


def test_rules_are_set_read_back_and_deleted(address: str) -> None:
    with Client(address, timeout=10) as client:
        stored = client.set_alert_rule(failures_rule())
        assert stored.name == "buyer-failures" and stored.kind is AlertKind.RATE
        assert stored.threshold == Decimal("0.2") and isinstance(stored.threshold, Decimal)
        assert stored.filter.types == ("recipient.failed",) and stored.filter.outcomes == (Outcome.FAILURE,)
        assert stored.base is not None and stored.base.types == ("recipient.*",)
        assert (stored.window_s, stored.min_events, stored.group_by) == (300, 20, GroupBy.ENTITY)
        assert stored.webhook_secret == "" and stored.webhook_secret_set
        assert stored.set_at is not None and stored.set_at.tzinfo is not None
        assert "sdk-secret" not in repr(failures_rule())

        by_keywords = client.set_alert_rule(
            "big-losses", kind="lead_margin", filter=EventFilter("flow.completed"), threshold="-25.50"
        )
        assert by_keywords.kind is AlertKind.LEAD_MARGIN and by_keywords.threshold == Decimal("-25.50")
        assert (
            by_keywords.group_by is None and by_keywords.base is None and not by_keywords.webhook_secret_set
        )

        assert [r.name for r in client.list_alert_rules()] == ["big-losses", "buyer-failures"]
        client.delete_alert_rule("big-losses")
        assert [r.name for r in client.list_alert_rules()] == ["buyer-failures"]
        with pytest.raises(NotFoundError):
            client.delete_alert_rule("big-losses")
        client.delete_alert_rule("buyer-failures")


def test_refusals_are_the_sdks_errors(address: str) -> None:
    with Client(address, timeout=10) as client:
        with pytest.raises(InvalidArgumentError) as info:
            client.set_alert_rule(failures_rule(base=None))
        assert "base: required for ALERT_KIND_RATE" in str(info.value)
        with pytest.raises(InvalidArgumentError) as info:
            client.set_alert_rule(failures_rule(webhook_url="file:///etc/passwd"))
        assert "webhook_url:" in str(info.value)
        with pytest.raises(InvalidArgumentError):
            client.list_alerts(limit=1001)
        assert client.list_alert_rules() == []
        assert client.list_alerts() == [] and client.list_alerts(firing_only=True, rule="x", limit=5) == []


def test_the_async_client_answers_as_the_blocking_one(address: str) -> None:
    async def scenario() -> tuple[Any, ...]:
        async with AsyncClient(address, timeout=10) as client:
            stored = await client.set_alert_rule(failures_rule("async-rule"))
            listed = await client.list_alert_rules()
            alerts = await client.list_alerts(firing_only=True)
            with pytest.raises(InvalidArgumentError):
                await client.set_alert_rule(failures_rule("async-rule", threshold="2"))
            await client.delete_alert_rule("async-rule")
            with pytest.raises(NotFoundError):
                await client.delete_alert_rule("async-rule")
            return stored, listed, alerts

    stored, listed, alerts = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert listed == [stored] and alerts == []
    with Client(address, timeout=10) as client:
        again = client.set_alert_rule(failures_rule("async-rule"))
        client.delete_alert_rule("async-rule")
    # The same rule from either client, but for when it was set.
    assert again.set_at is not None and stored.set_at is not None
    assert {**again.__dict__, "set_at": None, "set_after_position": 0} == {
        **stored.__dict__,
        "set_at": None,
        "set_after_position": 0,
    }


def test_the_value_types_check_what_they_are_given() -> None:
    with pytest.raises(TypeError):
        AlertRule("x", AlertKind.COUNT, threshold=0.2)  # type: ignore[arg-type]  # money is never a float
    with pytest.raises(ValueError, match="kind 'often'"):
        AlertRule("x", "often")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group_by"):
        AlertRule("x", AlertKind.COUNT, group_by="type-ish")  # type: ignore[arg-type]
    rule = AlertRule("x", "count", threshold=5, group_by="flow")  # type: ignore[arg-type]
    assert (rule.kind, rule.threshold, rule.group_by) == (AlertKind.COUNT, Decimal(5), GroupBy.FLOW)
    assert EventFilter("recipient.failed").types == ("recipient.failed",)
    with Client("127.0.0.1:1", timeout=1) as client, pytest.raises(TypeError):
        client.set_alert_rule(rule, threshold=3)


def test_rules_outlive_a_restart_with_their_secret_held(tmp_path: Path) -> None:
    process = server_process.ServerProcess(tmp_path / "data", "--http", "off").start()
    try:
        with Client(process.address, timeout=10) as client:
            stored = client.set_alert_rule(failures_rule("kept"))
        process.restart()
        with Client(process.address, timeout=10) as client:
            [again] = client.list_alert_rules()
        assert again == stored and again.webhook_secret_set
    finally:
        assert process.stop() == 0
