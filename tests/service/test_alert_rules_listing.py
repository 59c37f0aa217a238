"""ListAlerts from the log: alert events written server-side (as the evaluator writes them)
into a server running in this process, read back over gRPC. A resolution is paired to its
firing by ``details.fired_event_id``; MATCH and LEAD_MARGIN alerts are instantaneous;
``firing_only``, ``rule`` and ``limit`` narrow the answer; another account's alerts do not
exist."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from leadtrail.server.alerts.model import ALERT_FIRED, ALERT_FLOW, ALERT_RESOLVED, RULE_LEAD_PREFIX
from leadtrail.server.app import LeadTrailServer, ServerConfig
from leadtrail.storage import Event, Outcome
from leadtrail.v1 import alerts_pb2, alerts_pb2_grpc

NOW_MS = 1_796_000_000_000


class InProcessServer:
    """A ``LeadTrailServer`` on its own event loop thread, for writing server-side events."""

    def __init__(self, data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = LeadTrailServer(ServerConfig(data=str(data), listen="127.0.0.1:0", http="off"))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        self.channel = grpc.insecure_channel(self.server.address)
        self.alerts = alerts_pb2_grpc.AlertServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def fired(
        self,
        rule: str,
        group: str,
        at_ms: int,
        *,
        kind: str = "rate",
        value: str = "0.5",
        lead_id: str = "",
        account: str = "default",
    ) -> str:
        event = Event(
            type=ALERT_FIRED,
            lead_id=lead_id or RULE_LEAD_PREFIX + rule,
            flow_id=ALERT_FLOW,
            timestamp_ms=at_ms,
            entity_id=group,
            outcome=Outcome.FAILURE,
            reason=f"{rule} fired for {group or 'everything'}",
            details={
                "rule": rule,
                "kind": kind,
                "group": group,
                "value": value,
                "threshold": "0.2",
                "window_s": 300,
                "sample_event_ids": [],
                "position": 1,
                "rule_version": "1:1",
            },
            account_id=account,
        )
        [result] = self.server.log.append([event])
        return result.id

    def resolved(self, rule: str, group: str, fired_id: str, at_ms: int, account: str = "default") -> str:
        event = Event(
            type=ALERT_RESOLVED,
            lead_id=RULE_LEAD_PREFIX + rule,
            flow_id=ALERT_FLOW,
            timestamp_ms=at_ms,
            entity_id=group,
            outcome=Outcome.SUCCESS,
            reason=f"{rule} cleared for {group or 'everything'}",
            details={
                "rule": rule,
                "kind": "rate",
                "group": group,
                "value": "0.1",
                "fired_event_id": fired_id,
            },
            account_id=account,
        )
        [result] = self.server.log.append([event])
        return result.id

    def list(self, **request: Any) -> list[alerts_pb2.Alert]:
        return list(self.alerts.ListAlerts(alerts_pb2.ListAlertsRequest(**request), timeout=10).alerts)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, dict[str, str]]]:
    server = InProcessServer(tmp_path_factory.mktemp("alerts") / "data")
    ids: dict[str, str] = {}
    ids["old"] = server.fired("fails", "rcp_1", NOW_MS - 50_000)
    ids["old_resolved"] = server.resolved("fails", "rcp_1", ids["old"], NOW_MS - 40_000)
    ids["firing"] = server.fired("fails", "rcp_2", NOW_MS - 30_000, value="0.35")
    ids["down"] = server.fired("service-down", "svc_phone_check", NOW_MS - 20_000, kind="absence", value="0")
    ids["loss"] = server.fired(
        "negative-margin", "", NOW_MS - 10_000, kind="lead_margin", value="-4.75", lead_id="lead-9"
    )
    ids["globex"] = server.fired("fails", "rcp_1", NOW_MS - 5_000, account="globex")
    yield server, ids
    server.close()


def test_alerts_are_listed_newest_first_with_resolutions_paired(
    written: tuple[InProcessServer, dict[str, str]],
) -> None:
    server, ids = written
    alerts = server.list()
    assert [a.event_id for a in alerts] == [ids["loss"], ids["down"], ids["firing"], ids["old"]]
    by_id = {a.event_id: a for a in alerts}
    old = by_id[ids["old"]]
    assert not old.firing and old.resolved_event_id == ids["old_resolved"]
    assert (
        old.resolved_at.ToMilliseconds() == NOW_MS - 40_000
        and old.fired_at.ToMilliseconds() == NOW_MS - 50_000
    )
    firing = by_id[ids["firing"]]
    assert firing.firing and not firing.HasField("resolved_at") and firing.resolved_event_id == ""
    assert (firing.rule, firing.group, firing.value, firing.kind) == (
        "fails",
        "rcp_2",
        "0.35",
        alerts_pb2.ALERT_KIND_RATE,
    )
    assert firing.lead_id == "rule:fails" and firing.reason == "fails fired for rcp_2"
    assert by_id[ids["down"]].firing and by_id[ids["down"]].kind == alerts_pb2.ALERT_KIND_ABSENCE


def test_match_and_lead_margin_alerts_are_instantaneous(
    written: tuple[InProcessServer, dict[str, str]],
) -> None:
    server, ids = written
    [loss] = server.list(rule="negative-margin")
    assert loss.event_id == ids["loss"]
    assert not loss.firing and not loss.HasField("resolved_at")
    assert (loss.kind, loss.value, loss.lead_id, loss.group) == (
        alerts_pb2.ALERT_KIND_LEAD_MARGIN,
        "-4.75",
        "lead-9",
        "",
    )


def test_firing_only_rule_and_limit_narrow_the_answer(
    written: tuple[InProcessServer, dict[str, str]],
) -> None:
    server, ids = written
    assert [a.event_id for a in server.list(firing_only=True)] == [ids["down"], ids["firing"]]
    assert [a.event_id for a in server.list(rule="fails")] == [ids["firing"], ids["old"]]
    assert [a.event_id for a in server.list(rule="fails", firing_only=True)] == [ids["firing"]]
    assert [a.event_id for a in server.list(limit=2)] == [ids["loss"], ids["down"]]
    assert server.list(rule="no-such-rule") == []


def test_another_accounts_alerts_do_not_exist(written: tuple[InProcessServer, dict[str, str]]) -> None:
    server, ids = written
    assert ids["globex"] not in {a.event_id for a in server.list()}
    assert ids["globex"] not in {a.event_id for a in server.list(rule="fails", firing_only=True)}


def test_a_limit_over_the_maximum_is_refused(written: tuple[InProcessServer, dict[str, str]]) -> None:
    server, _ = written
    with pytest.raises(grpc.RpcError) as info:
        server.list(limit=1001)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "limit: 1001 is over the limit of 1000"
