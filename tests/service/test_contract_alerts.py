"""The alerting and /metrics contract of API.md (§ Alerts, § HTTP: /metrics), checked from
outside: a real ``leadtrail serve`` child, raw gRPC stubs of the generated modules, a real
aiohttp receiver for webhooks and a real HTTP client for /metrics.

Nothing here reads the server's code or files: rules are set over ``AlertService``, events
appended over ``SubmissionService`` and every result read back over gRPC or HTTP.

"No firing" is observed with a sentinel: a MATCH rule on ``contract.sentinel``; once the
sentinel event appended after the events under test has fired, those earlier events have
been evaluated too (the evaluator follows the log in commit order).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from leadtrail.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)
from prometheus_client.parser import text_string_to_metric_families

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py

WAIT_S = 20.0
ALERT_TYPES = ["alert.fired", "alert.resolved"]
DETAIL_KEYS = {"rule", "kind", "group", "value", "threshold", "window_s", "sample_event_ids"}
WEBHOOK_POLICY = "timeout=1,first=0.05,max=0.2,give_up=30"
SENTINEL_RULE = "contract-sentinel"
SENTINEL_TYPE = "contract.sentinel"
METRIC_NAMES = {
    "leadtrail_events_appended_total",
    "leadtrail_append_seconds",
    "leadtrail_subscribers",
    "leadtrail_subscriber_lag_events",
    "leadtrail_alerts_firing",
    "leadtrail_sink_lag_events",
}

K = alerts_pb2
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def stamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


# -- a gRPC caller with one key --------------------------------------------------------------------


class Caller:
    """Raw stubs of one channel, every call carrying ``authorization: Bearer <key>``."""

    def __init__(self, address: str, key: str = "") -> None:
        self.channel = grpc.insecure_channel(address)
        self.metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.alerts = alerts_pb2_grpc.AlertServiceStub(self.channel)
        self.submit = submission_pb2_grpc.SubmissionServiceStub(self.channel)
        self.query_stub = query_pb2_grpc.QueryServiceStub(self.channel)
        self.stream = stream_pb2_grpc.StreamServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    # rules and alerts
    def set_rule(self, **fields: Any) -> alerts_pb2.AlertRule:
        return self.alerts.SetAlertRule(K.AlertRule(**fields), metadata=self.metadata, timeout=10)

    def rules(self) -> list[alerts_pb2.AlertRule]:
        return list(
            self.alerts.ListAlertRules(K.ListAlertRulesRequest(), metadata=self.metadata, timeout=10).rules
        )

    def delete_rule(self, name: str) -> None:
        self.alerts.DeleteAlertRule(K.DeleteAlertRuleRequest(name=name), metadata=self.metadata, timeout=10)

    def list_alerts(self, firing_only: bool = False) -> list[alerts_pb2.Alert]:
        request = K.ListAlertsRequest(firing_only=firing_only)
        return list(self.alerts.ListAlerts(request, metadata=self.metadata, timeout=10).alerts)

    # events
    def append(self, *events: event_pb2.Event) -> list[submission_pb2.AppendResult]:
        request = submission_pb2.AppendRequest(events=list(events))
        return list(self.submit.Append(request, metadata=self.metadata, timeout=10).results)

    def query(self, **filter_fields: Any) -> list[event_pb2.Event]:
        found: list[event_pb2.Event] = []
        token = ""
        while True:
            request = query_pb2.QueryEventsRequest(
                filter=event_pb2.EventFilter(**filter_fields), page_size=1000, page_token=token
            )
            page = self.query_stub.QueryEvents(request, metadata=self.metadata, timeout=10)
            found.extend(page.events)
            token = page.next_page_token
            if not token:
                return found

    def get(self, event_id: str) -> event_pb2.Event:
        request = query_pb2.GetEventRequest(id=event_id)
        return self.query_stub.GetEvent(request, metadata=self.metadata, timeout=10)

    def export_jsonl(self, **filter_fields: Any) -> list[dict[str, Any]]:
        request = query_pb2.ExportRequest(
            filter=event_pb2.EventFilter(**filter_fields), format=query_pb2.EXPORT_FORMAT_JSONL
        )
        data = b"".join(c.data for c in self.query_stub.Export(request, metadata=self.metadata, timeout=10))
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def alert_events(self, rule: str) -> list[event_pb2.Event]:
        """The ``alert.fired``/``alert.resolved`` events of one rule, in position order."""
        found = [e for e in self.query(types=ALERT_TYPES) if details(e).get("rule") == rule]
        return sorted(found, key=lambda e: e.position)

    def wait_alerts(
        self, rule: str, done: Callable[[list[event_pb2.Event]], bool], timeout: float = WAIT_S
    ) -> list[event_pb2.Event]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.alert_events(rule)
            if done(found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"rule {rule}: alert events so far {summary(found)}")
            time.sleep(0.05)

    def settle(self) -> None:
        """Returns once a sentinel event appended now has fired the sentinel MATCH rule."""
        lead = unique("sentinel")
        self.append(ev(SENTINEL_TYPE, lead))
        self.wait_alerts(SENTINEL_RULE, lambda f: any(e.lead_id == lead for e in f))


def ev(
    type: str,
    lead: str = "lead-1",
    entity: str = "buyer-a",
    flow: str = "flow-1",
    ts: int | None = None,
    **kw: Any,
) -> event_pb2.Event:
    event = event_pb2.Event(type=type, lead_id=lead, flow_id=flow, entity_id=entity, **kw)
    event.timestamp.CopyFrom(stamp(ts if ts is not None else now_ms()))
    return event


def types_filter(*types: str, **kw: Any) -> event_pb2.EventFilter:
    return event_pb2.EventFilter(types=list(types), **kw)


def details(event: event_pb2.Event) -> dict[str, Any]:
    return MessageToDict(event.details)


def summary(found: list[event_pb2.Event]) -> list[tuple[str, str, str]]:
    return [(e.type, e.entity_id, e.lead_id) for e in found]


def fired(found: list[event_pb2.Event]) -> list[event_pb2.Event]:
    return [e for e in found if e.type == "alert.fired"]


def resolved(found: list[event_pb2.Event]) -> list[event_pb2.Event]:
    return [e for e in found if e.type == "alert.resolved"]


def status_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def assert_alert_shape(
    event: event_pb2.Event,
    *,
    rule: str,
    kind: str,
    group: str,
    lead: str,
    threshold: str | None,
    window_s: int,
) -> dict[str, Any]:
    """The shape API.md fixes for a firing or a resolution event."""
    d = details(event)
    assert event.flow_id == "alerts", event
    assert event.entity_id == group, event
    assert event.lead_id == lead, event
    assert event.reason.strip(), "reason: a sentence a person can read"
    assert set(d) >= DETAIL_KEYS, f"details keys {sorted(d)} lack {sorted(DETAIL_KEYS - set(d))}"
    assert d["rule"] == rule
    assert kind in str(d["kind"]).lower(), d["kind"]
    assert d["group"] == group
    if threshold is not None:
        assert Decimal(str(d["threshold"])) == Decimal(threshold)
    assert int(d["window_s"]) == window_s
    Decimal(str(d["value"]))  # a decimal
    assert isinstance(d["sample_event_ids"], list)
    return d


# -- the webhook receiver --------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1:0; ``fail_first[path]`` answers 500 that many times."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    hang_first: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    """Paths answered 500 until removed from the set."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.requests.append(Received(request.path, dict(request.headers), body))
            hang = self.hang_first.get(request.path, 0) > 0
            if hang:
                self.hang_first[request.path] -= 1
            fail = request.path in self.failing or self.fail_first.get(request.path, 0) > 0
            if self.fail_first.get(request.path, 0) > 0:
                self.fail_first[request.path] -= 1
        if hang:
            await asyncio.sleep(5)  # longer than the server's webhook timeout
        if fail:
            return web.Response(status=500, text="receiver down")
        return web.Response(status=200, text="ok")

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, path: str, count: int, timeout: float = WAIT_S) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.at(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(self.at(path))} requests, wanted {count}")
            time.sleep(0.05)
        return self.at(path)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", hook.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        hook.url = f"http://127.0.0.1:{port}"
        runner_box.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "receiver did not start"
    yield hook
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


# -- the shared server -----------------------------------------------------------------------------


@dataclass
class Keyed:
    server: Any
    keys: dict[str, str]
    callers: dict[str, Caller]

    def __getitem__(self, who: str) -> Caller:
        return self.callers[who]


def start_server(data: Path, *args: str) -> Any:
    previous = os.environ.get("LEADTRAIL_WEBHOOK_POLICY")
    os.environ["LEADTRAIL_WEBHOOK_POLICY"] = WEBHOOK_POLICY
    try:
        return server_process.ServerProcess(data, *args).start()
    finally:
        if previous is None:
            del os.environ["LEADTRAIL_WEBHOOK_POLICY"]
        else:
            os.environ["LEADTRAIL_WEBHOOK_POLICY"] = previous


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """One server with keys: admin, analyst, reader and writer of account ``acme``, admin of ``other``."""
    data = tmp_path_factory.mktemp("alerts") / "data"
    who = {
        "admin": ("acme", "admin"),
        "analyst": ("acme", "analyst"),
        "reader": ("acme", "reader"),
        "writer": ("acme", "writer"),
        "other": ("other", "admin"),
    }
    keys = {name: server_process.create_key(data, account, role) for name, (account, role) in who.items()}
    server = start_server(data)
    callers = {name: Caller(server.address, key) for name, key in keys.items()}
    try:
        for name in ("admin", "other"):
            callers[name].set_rule(
                name=SENTINEL_RULE, kind=K.ALERT_KIND_MATCH, filter=types_filter(SENTINEL_TYPE)
            )
        yield Keyed(server, keys, callers)
    finally:
        for caller in callers.values():
            caller.close()
        assert server.stop() == 0, server.output


# -- every kind fires, and resolves where it resolves -------------------------------------------


def test_match_fires_once_per_matching_event_with_the_lead(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("match")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("hv.delivered"),
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    a = admin.append(ev("hv.delivered", "lead-m1", "buyer-x"), ev("hv.other", "lead-m9", "buyer-x"))
    b = admin.append(ev("hv.delivered", "lead-m2", "buyer-y"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 2)
    admin.settle()
    found = admin.alert_events(rule)
    assert [(e.type, e.entity_id, e.lead_id) for e in found] == [
        ("alert.fired", "buyer-x", "lead-m1"),
        ("alert.fired", "buyer-y", "lead-m2"),
    ]
    d1 = assert_alert_shape(
        found[0], rule=rule, kind="match", group="buyer-x", lead="lead-m1", threshold=None, window_s=0
    )
    assert a[0].id in d1["sample_event_ids"]
    d2 = details(found[1])
    assert b[0].id in d2["sample_event_ids"]


def test_count_fires_per_entity_and_resolves_when_the_window_passes(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("count")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_COUNT,
        filter=types_filter("cnt.failed"),
        threshold="3",
        window_s=2,
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    t = now_ms()
    a = admin.append(*(ev("cnt.failed", f"c{i}", "buyer-a", ts=t) for i in range(3)))
    admin.append(*(ev("cnt.failed", f"d{i}", "buyer-b", ts=t) for i in range(2)))
    admin.append(ev("cnt.delivered", "x", "buyer-b", ts=t))  # another type: not counted
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    admin.settle()
    found = admin.alert_events(rule)
    assert summary(found) == [("alert.fired", "buyer-a", f"rule:{rule}")]
    d = assert_alert_shape(
        found[0], rule=rule, kind="count", group="buyer-a", lead=f"rule:{rule}", threshold="3", window_s=2
    )
    assert Decimal(str(d["value"])) == 3
    assert d["sample_event_ids"] and set(d["sample_event_ids"]) <= {r.id for r in a}
    # the window passes: by the clock, or by a later event whose window holds only itself
    while now_ms() < t + 2500:
        time.sleep(0.05)
    admin.append(ev("cnt.failed", "c9", "buyer-a"))
    found = admin.wait_alerts(rule, lambda f: len(resolved(f)) >= 1)
    assert summary(found)[:2] == [
        ("alert.fired", "buyer-a", f"rule:{rule}"),
        ("alert.resolved", "buyer-a", f"rule:{rule}"),
    ]
    assert_alert_shape(
        found[1], rule=rule, kind="count", group="buyer-a", lead=f"rule:{rule}", threshold="3", window_s=2
    )


def test_count_grouped_by_flow_names_the_flow(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("flowcount")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_COUNT,
        filter=types_filter("fc.failed"),
        threshold="2",
        window_s=3600,
        group_by=query_pb2.GROUP_BY_FLOW,
    )
    # two entities of one flow reach 2 together; the other flow has 1
    admin.append(
        ev("fc.failed", "f1", "buyer-a", flow="flow-red"),
        ev("fc.failed", "f2", "buyer-b", flow="flow-red"),
        ev("fc.failed", "f3", "buyer-a", flow="flow-blue"),
    )
    admin.wait_alerts(rule, lambda f: len(f) >= 1)
    admin.settle()
    found = admin.alert_events(rule)
    assert summary(found) == [("alert.fired", "flow-red", f"rule:{rule}")]
    assert details(found[0])["group"] == "flow-red"
    listed = [(a.group, a.firing, a.event_id) for a in admin.list_alerts() if a.rule == rule]
    assert listed == [("flow-red", True, found[0].id)]


def test_one_firing_per_rule_and_group_until_it_resolves(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("once")
    admin.set_rule(
        name=rule, kind=K.ALERT_KIND_COUNT, filter=types_filter("once.step"), threshold="2", window_s=3600
    )
    for i in range(8):
        admin.append(ev("once.step", f"o{i}"), ev("once.step", f"o{i}"))
    admin.settle()
    found = admin.alert_events(rule)
    assert summary(found) == [("alert.fired", "", f"rule:{rule}")]


def test_rate_fires_with_enough_base_events_and_resolves(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("rate")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_RATE,
        filter=types_filter("rt.failed"),
        base=types_filter("rt.*"),
        threshold="0.5",
        window_s=3600,
        min_events=4,
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    admin.append(*(ev("rt.failed", f"r{i}", "buyer-a") for i in range(3)))  # 3 < min_events
    admin.append(*(ev("rt.delivered", f"s{i}", "buyer-b") for i in range(6)))
    admin.settle()
    assert admin.alert_events(rule) == []
    admin.append(ev("rt.failed", "r9", "buyer-a"))  # 4 of 4
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert summary(found) == [("alert.fired", "buyer-a", f"rule:{rule}")]
    d = assert_alert_shape(
        found[0], rule=rule, kind="rate", group="buyer-a", lead=f"rule:{rule}", threshold="0.5", window_s=3600
    )
    assert Decimal(str(d["value"])) == 1
    admin.append(*(ev("rt.delivered", f"k{i}", "buyer-a") for i in range(6)))  # 4 of 10
    found = admin.wait_alerts(rule, lambda f: len(f) >= 2)
    assert summary(found) == [
        ("alert.fired", "buyer-a", f"rule:{rule}"),
        ("alert.resolved", "buyer-a", f"rule:{rule}"),
    ]
    # resolved, it may fire again: a new alert
    admin.append(*(ev("rt.failed", f"t{i}", "buyer-a") for i in range(10)))  # 14 of 20
    found = admin.wait_alerts(rule, lambda f: len(f) >= 3)
    assert [e.type for e in found] == ["alert.fired", "alert.resolved", "alert.fired"]
    listed = [(a.firing, a.event_id) for a in admin.list_alerts() if a.rule == rule]
    assert listed == [(True, found[2].id), (False, found[0].id)], "ListAlerts: both alerts, newest first"


def test_absence_fires_when_a_service_falls_silent_and_resolves(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("absence")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_ABSENCE,
        filter=types_filter("enh.succeeded"),
        window_s=1,
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    admin.append(ev("enh.succeeded", "e1", "enhancer"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert summary(found) == [("alert.fired", "enhancer", f"rule:{rule}")]
    assert_alert_shape(
        found[0], rule=rule, kind="absence", group="enhancer", lead=f"rule:{rule}", threshold=None, window_s=1
    )
    admin.append(ev("enh.succeeded", "e2", "enhancer"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 2)
    assert summary(found)[:2] == [
        ("alert.fired", "enhancer", f"rule:{rule}"),
        ("alert.resolved", "enhancer", f"rule:{rule}"),
    ]


def test_drop_fires_when_the_share_falls_below_its_baseline_and_resolves(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("drop")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_DROP,
        filter=types_filter("src.accepted"),
        base=types_filter("src.submitted", "src.accepted"),
        threshold="0.3",
        window_s=10,
        baseline_windows=2,
        min_events=5,
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    t = now_ms()
    for back in (18_000, 12_000):  # inside the two previous windows: a share of 0.5
        batch = []
        for i in range(10):
            batch += [ev("src.submitted", f"b{back}-{i}", "src-1", ts=t - back)]
            batch += [ev("src.accepted", f"b{back}-{i}", "src-1", ts=t - back)]
        admin.append(*batch)
    admin.settle()
    assert admin.alert_events(rule) == []
    admin.append(*(ev("src.submitted", f"c{i}", "src-1", ts=t) for i in range(10)))  # a share of 0
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert summary(found) == [("alert.fired", "src-1", f"rule:{rule}")]
    assert_alert_shape(
        found[0], rule=rule, kind="drop", group="src-1", lead=f"rule:{rule}", threshold="0.3", window_s=10
    )
    admin.append(*(ev("src.accepted", f"d{i}", "src-1", ts=t) for i in range(20)))  # 20 of 30
    found = admin.wait_alerts(rule, lambda f: len(f) >= 2)
    assert summary(found) == [
        ("alert.fired", "src-1", f"rule:{rule}"),
        ("alert.resolved", "src-1", f"rule:{rule}"),
    ]


def test_lead_margin_fires_for_a_lead_sold_at_a_loss(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("margin")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_LEAD_MARGIN,
        filter=types_filter("lm.sold"),
        threshold="0",
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    admin.append(
        ev("lm.enhanced", "loss", "enhancer", price="-15.00"),
        ev("lm.enhanced", "gain", "enhancer", price="-5.00"),
    )
    sold = admin.append(
        ev("lm.sold", "loss", "buyer-a", price="10.00"),  # -5 so far: fires
        ev("lm.sold", "gain", "buyer-a", price="20.00"),  # +15 so far: quiet
    )
    admin.wait_alerts(rule, lambda f: len(f) >= 1)
    admin.settle()
    found = admin.alert_events(rule)
    assert summary(found) == [("alert.fired", "buyer-a", "loss")]
    d = assert_alert_shape(
        found[0], rule=rule, kind="margin", group="buyer-a", lead="loss", threshold="0", window_s=0
    )
    assert Decimal(str(d["value"])) == Decimal("-5")
    assert sold[0].id in d["sample_event_ids"]


def test_a_rule_counts_only_events_committed_after_it_was_set(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("after")
    admin.append(*(ev("aft.failed", f"p{i}") for i in range(3)))  # before the rule
    admin.set_rule(
        name=rule, kind=K.ALERT_KIND_COUNT, filter=types_filter("aft.failed"), threshold="3", window_s=3600
    )
    admin.append(*(ev("aft.failed", f"q{i}") for i in range(2)))
    admin.settle()
    assert admin.alert_events(rule) == [], "events before the rule were counted"
    admin.append(ev("aft.failed", "q3"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert Decimal(str(details(found[0])["value"])) == 3


def test_windows_slide_on_event_timestamp(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("evtime")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_COUNT,
        filter=types_filter("evt.failed"),
        threshold="3",
        window_s=10,
        group_by=query_pb2.GROUP_BY_ENTITY,
    )
    t = now_ms()
    # arrive together, but 15 s apart by timestamp: never 3 in one 10 s window
    admin.append(*(ev("evt.failed", f"s{i}", "spread", ts=t - 45_000 + 15_000 * i) for i in range(3)))
    admin.settle()
    assert admin.alert_events(rule) == []
    # arrive apart, but within one second of each other by timestamp
    for i in range(3):
        admin.append(ev("evt.failed", f"c{i}", "close", ts=t + 200 * i))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    admin.settle()
    assert summary(admin.alert_events(rule)) == [("alert.fired", "close", f"rule:{rule}")]
    assert found[0].entity_id == "close"


def test_a_replaced_rule_starts_again_with_empty_windows(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("replaced")
    spec = {
        "name": rule,
        "kind": K.ALERT_KIND_COUNT,
        "filter": types_filter("rep.failed"),
        "threshold": "3",
        "window_s": 3600,
    }
    admin.set_rule(**spec)
    admin.append(ev("rep.failed", "r1"), ev("rep.failed", "r2"))
    admin.settle()
    admin.set_rule(**spec)
    admin.append(ev("rep.failed", "r3"))
    admin.settle()
    assert admin.alert_events(rule) == [], "the replaced rule kept its window"
    admin.append(ev("rep.failed", "r4"), ev("rep.failed", "r5"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert Decimal(str(details(found[0])["value"])) == 3


def test_a_deleted_rules_firing_alert_is_resolved_once(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("deleted")
    admin.set_rule(
        name=rule, kind=K.ALERT_KIND_COUNT, filter=types_filter("del.failed"), threshold="2", window_s=3600
    )
    admin.append(ev("del.failed", "d1"), ev("del.failed", "d2"))
    fired_event = admin.wait_alerts(rule, lambda f: len(f) >= 1)[0]
    admin.delete_rule(rule)
    found = admin.wait_alerts(rule, lambda f: len(f) >= 2)
    admin.append(ev("del.failed", "d3"))
    admin.settle()
    assert [e.type for e in admin.alert_events(rule)] == ["alert.fired", "alert.resolved"]
    resolved = admin.alert_events(rule)[1]
    assert details(resolved)["fired_event_id"] == fired_event.id and "deleted" in resolved.reason
    assert found[0].id == fired_event.id
    mine = [a for a in admin.list_alerts() if a.rule == rule]
    assert [(a.firing, a.event_id, a.resolved_event_id) for a in mine] == [
        (False, fired_event.id, resolved.id)
    ]


def test_absence_never_fires_before_a_first_event(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("neverseen")
    admin.set_rule(name=rule, kind=K.ALERT_KIND_ABSENCE, filter=types_filter("never.seen"), window_s=1)
    t = time.monotonic()
    while time.monotonic() < t + 2.5:
        time.sleep(0.05)
    admin.settle()
    assert admin.alert_events(rule) == []


def test_only_committed_events_count_duplicates_and_refused_batches_do_not(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule, match = unique("dupes"), unique("refused")
    admin.set_rule(
        name=rule, kind=K.ALERT_KIND_COUNT, filter=types_filter("dup.failed"), threshold="2", window_s=3600
    )
    admin.set_rule(name=match, kind=K.ALERT_KIND_MATCH, filter=types_filter("ref.hit"))
    first = ev("dup.failed", "dup-1")
    result = admin.append(first)[0]
    again = event_pb2.Event()
    again.CopyFrom(first)
    again.id = result.id  # the same event sent again: stored once
    assert admin.append(again)[0].duplicate
    bad = ev("ref.hit", "ref-lead")
    error = status_of(lambda: admin.append(bad, event_pb2.Event(type="ref.hit", lead_id="", flow_id="f")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    admin.settle()
    assert admin.alert_events(rule) == [], "a duplicate was counted"
    assert admin.alert_events(match) == [], "a refused batch fired a rule"
    admin.append(ev("dup.failed", "dup-2"))
    admin.wait_alerts(rule, lambda f: len(f) >= 1)


def test_lead_margin_sums_only_the_callers_account(keyed: Keyed) -> None:
    admin, other = keyed["admin"], keyed["other"]
    rule, lead = unique("margin-iso"), unique("shared-lead")
    admin.set_rule(name=rule, kind=K.ALERT_KIND_LEAD_MARGIN, filter=types_filter("lmi.sold"), threshold="0")
    other.append(ev("lmi.enhanced", lead, "enhancer", price="-100.00"))  # another account's cost
    admin.append(ev("lmi.sold", lead, "buyer-a", price="10.00"))
    admin.settle()
    assert admin.alert_events(rule) == [], "another account's prices entered the lead's sum"
    admin.append(ev("lmi.enhanced", lead, "enhancer", price="-30.00"), ev("lmi.sold", lead, "buyer-a"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert Decimal(str(details(found[0])["value"])) == Decimal("-20")


def test_a_rule_filter_applies_all_its_parts(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("filtered")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=event_pb2.EventFilter(
            types=["flt.*"], entity_id="buyer-q", outcomes=[event_pb2.OUTCOME_ERROR], flow_id="flow-q"
        ),
    )
    admin.append(
        ev("flt.failed", "no-outcome", "buyer-q", flow="flow-q", outcome=event_pb2.OUTCOME_FAILURE),
        ev("flt.failed", "no-entity", "buyer-z", flow="flow-q", outcome=event_pb2.OUTCOME_ERROR),
        ev("flt.failed", "no-flow", "buyer-q", flow="flow-z", outcome=event_pb2.OUTCOME_ERROR),
        ev("fltx.failed", "no-type", "buyer-q", flow="flow-q", outcome=event_pb2.OUTCOME_ERROR),
        ev("flt.timeout.hard", "yes", "buyer-q", flow="flow-q", outcome=event_pb2.OUTCOME_ERROR),
    )
    admin.wait_alerts(rule, lambda f: len(f) >= 1)
    admin.settle()
    assert [e.lead_id for e in admin.alert_events(rule)] == ["yes"]


def test_cli_sets_lists_and_removes_rules(keyed: Keyed) -> None:
    admin = keyed["admin"]
    name, secret = unique("cli"), "cli-secret-value"
    remote = ["--server", keyed.server.address, "--api-key", keyed.keys["admin"]]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*server_process.LEADTRAIL, "alerts", *args, *remote], capture_output=True, text=True, timeout=60
        )

    rate = ["--kind", "rate", "--type", "cli.failed", "--base", "cli.*", "--threshold", "0.2"]
    rest = ["--window", "300", "--group-by", "entity", "--webhook", "http://127.0.0.1:9/x"]
    made = cli("set", name, *rate, *rest, "--webhook-secret", secret)
    assert made.returncode == 0, made.stderr
    assert secret not in made.stdout + made.stderr
    (rule,) = [r for r in admin.rules() if r.name == name]
    assert rule.kind == K.ALERT_KIND_RATE and Decimal(rule.threshold) == Decimal("0.2")
    assert list(rule.filter.types) == ["cli.failed"] and list(rule.base.types) == ["cli.*"]
    assert rule.window_s == 300 and rule.group_by == query_pb2.GROUP_BY_ENTITY and rule.webhook_secret_set
    listed = cli("list")
    assert listed.returncode == 0 and name in listed.stdout and secret not in listed.stdout
    shown = cli("show")
    assert shown.returncode == 0, shown.stderr
    bad = cli(
        "set", unique("cli"), "--kind", "count", "--type", "cli.x", "--threshold", "lots", "--window", "5"
    )
    assert bad.returncode in (1, 2) and "threshold" in bad.stderr, (bad.returncode, bad.stderr)
    removed = cli("rm", name)
    assert removed.returncode == 0, removed.stderr
    assert name not in {r.name for r in admin.rules()}
    again = cli("rm", name)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1, again.stderr


def test_alert_events_are_subscribable(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("live")
    admin.set_rule(name=rule, kind=K.ALERT_KIND_MATCH, filter=types_filter("live.hit"))
    request = stream_pb2.SubscribeRequest(filter=types_filter("alert.fired"), from_end=True)
    call = admin.stream.Subscribe(request, metadata=admin.metadata, timeout=WAIT_S)
    try:
        for message in call:
            if message.WhichOneof("message") == "caught_up":
                break
        else:
            raise AssertionError("the subscription ended before caught_up")
        admin.append(ev("live.hit", "live-lead"))
        for message in call:
            if message.WhichOneof("message") == "event" and details(message.event).get("rule") == rule:
                assert message.event.lead_id == "live-lead" and message.event.flow_id == "alerts"
                break
        else:
            raise AssertionError("the subscription ended without the alert.fired event")
    finally:
        call.cancel()


def test_a_catch_all_rule_never_fires_on_alert_events(keyed: Keyed) -> None:
    other = keyed["other"]
    rule = unique("catch-all")
    other.set_rule(name=rule, kind=K.ALERT_KIND_MATCH, filter=event_pb2.EventFilter())
    try:
        other.append(ev("any.thing", "catch-1"))
        other.settle()  # the sentinel event is a client event too
        other.settle()
        leads = sorted(e.lead_id for e in other.alert_events(rule))
        assert leads[0] == "catch-1" and len(leads) == 3, leads
        assert all(not lead.startswith("rule:") for lead in leads), leads
    finally:
        other.delete_rule(rule)


# -- ListAlerts ------------------------------------------------------------------------------------


def test_list_alerts_reports_firing_and_resolved_alerts(keyed: Keyed) -> None:
    admin, reader = keyed["admin"], keyed["reader"]
    rule = unique("listed")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_RATE,
        filter=types_filter("la.failed"),
        base=types_filter("la.*"),
        threshold="0.5",
        window_s=3600,
        min_events=2,
    )
    admin.append(ev("la.failed", "l1"), ev("la.failed", "l2"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    fired_event = found[0]
    mine = [a for a in reader.list_alerts() if a.rule == rule]
    assert len(mine) == 1, mine
    alert = mine[0]
    assert alert.firing and alert.group == ""
    assert alert.HasField("fired_at") and not alert.HasField("resolved_at")
    assert alert.event_id == fired_event.id
    assert Decimal(alert.value) == Decimal(str(details(fired_event)["value"]))
    assert [a.event_id for a in reader.list_alerts(firing_only=True) if a.rule == rule] == [fired_event.id]

    admin.append(*(ev("la.delivered", f"m{i}") for i in range(4)))  # 2 of 6
    admin.wait_alerts(rule, lambda f: len(f) >= 2)
    mine = [a for a in reader.list_alerts() if a.rule == rule]
    assert len(mine) == 1, mine
    assert not mine[0].firing and mine[0].HasField("resolved_at") and mine[0].event_id == fired_event.id
    assert mine[0].resolved_at.ToMilliseconds() >= mine[0].fired_at.ToMilliseconds()
    assert [a for a in reader.list_alerts(firing_only=True) if a.rule == rule] == []
    stamps = [a.fired_at.ToMilliseconds() for a in reader.list_alerts()]
    assert stamps == sorted(stamps, reverse=True), "ListAlerts: newest first"


# -- roles, accounts, secrets, validation ----------------------------------------------------------


def test_only_admins_manage_rules_and_readers_and_up_list_alerts(keyed: Keyed) -> None:
    rule = {"name": unique("role"), "kind": K.ALERT_KIND_MATCH, "filter": types_filter("role.x")}
    for who in ("analyst", "reader", "writer"):
        caller = keyed[who]
        for call in (
            lambda c=caller: c.set_rule(**rule),
            caller.rules,
            lambda c=caller: c.delete_rule(SENTINEL_RULE),
        ):
            assert status_of(call).code() == grpc.StatusCode.PERMISSION_DENIED, who
    assert rule["name"] not in {r.name for r in keyed["admin"].rules()}
    assert SENTINEL_RULE in {r.name for r in keyed["admin"].rules()}
    for who in ("admin", "analyst", "reader"):
        keyed[who].list_alerts()
    assert status_of(keyed["writer"].list_alerts).code() == grpc.StatusCode.PERMISSION_DENIED
    # a writer's appends are the account's events: its rules count them
    hit = unique("by-writer")
    keyed["admin"].set_rule(name=hit, kind=K.ALERT_KIND_MATCH, filter=types_filter("wr.hit"))
    keyed["writer"].append(ev("wr.hit", "writer-lead"))
    assert [e.lead_id for e in keyed["admin"].wait_alerts(hit, lambda f: len(f) >= 1)] == ["writer-lead"]
    unkeyed = Caller(keyed.server.address)
    try:
        assert status_of(unkeyed.list_alerts).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        unkeyed.close()


def test_another_accounts_rules_and_alerts_do_not_exist(keyed: Keyed) -> None:
    admin, other = keyed["admin"], keyed["other"]
    rule = unique("mine")
    admin.set_rule(name=rule, kind=K.ALERT_KIND_MATCH, filter=types_filter("iso.hit"))
    admin.append(ev("iso.hit", "iso-lead"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    assert rule not in {r.name for r in other.rules()}
    assert rule not in {a.rule for a in other.list_alerts()}
    assert found[0].id not in {a.event_id for a in other.list_alerts()}
    assert status_of(lambda: other.delete_rule(rule)).code() == grpc.StatusCode.NOT_FOUND
    assert rule in {r.name for r in admin.rules()}, "the other account deleted the rule"
    assert other.alert_events(rule) == []
    assert status_of(lambda: other.get(found[0].id)).code() == grpc.StatusCode.NOT_FOUND
    assert admin.get(found[0].id).type == "alert.fired"
    # the same name is free in the other account, and acme's events never fire it
    other.set_rule(name=rule, kind=K.ALERT_KIND_MATCH, filter=types_filter("iso.hit"))
    admin.append(ev("iso.hit", "iso-lead-2"))
    admin.wait_alerts(rule, lambda f: len(f) >= 2)
    other.settle()
    assert other.alert_events(rule) == []
    assert [r.filter.types[:] for r in admin.rules() if r.name == rule] == [["iso.hit"]]
    # the other account's own events fire its own rule, in its own account
    other.append(ev("iso.hit", "iso-other"))
    theirs = other.wait_alerts(rule, lambda f: len(f) >= 1)
    assert [e.lead_id for e in theirs] == ["iso-other"]
    admin.settle()
    assert sorted(e.lead_id for e in admin.alert_events(rule)) == ["iso-lead", "iso-lead-2"]
    assert status_of(lambda: admin.get(theirs[0].id)).code() == grpc.StatusCode.NOT_FOUND


def test_delete_rule_then_not_found(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("gone")
    admin.set_rule(name=rule, kind=K.ALERT_KIND_MATCH, filter=types_filter("gone.x"))
    admin.delete_rule(rule)
    assert rule not in {r.name for r in admin.rules()}
    assert status_of(lambda: admin.delete_rule(rule)).code() == grpc.StatusCode.NOT_FOUND


def test_webhook_secret_is_never_returned(keyed: Keyed, receiver: Receiver) -> None:
    admin, reader = keyed["admin"], keyed["reader"]
    rule, secret = unique("secret"), "s3cr3t-" + unique("value")
    answer = admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("sec.hit"),
        webhook_url=f"{receiver.url}/secret",
        webhook_secret=secret,
    )
    assert answer.webhook_secret == "" and secret not in str(answer)
    assert answer.webhook_secret_set
    listed = [r for r in admin.rules() if r.name == rule]
    assert len(listed) == 1 and listed[0].webhook_secret == "" and secret not in str(listed[0])
    assert listed[0].webhook_secret_set
    assert listed[0].webhook_url == f"{receiver.url}/secret"
    admin.append(ev("sec.hit", "sec-lead"))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 1)
    everything = [*found, *admin.query(lead_id="sec-lead"), *admin.list_alerts(), *reader.list_alerts()]
    for message in everything:
        assert secret.encode() not in message.SerializeToString(), message
    exported = admin.export_jsonl(types=["alert.*"])
    assert secret not in json.dumps(exported)
    # set again with the same URL and no secret: the secret stays; another URL drops it
    kept = admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("sec.hit"),
        webhook_url=f"{receiver.url}/secret",
    )
    assert kept.webhook_secret_set and kept.webhook_secret == ""
    admin.append(ev("sec.hit", "sec-lead-2"))
    again = admin.wait_alerts(rule, lambda f: any(e.lead_id == "sec-lead-2" for e in f))
    event = next(e for e in again if e.lead_id == "sec-lead-2")
    deadline = time.monotonic() + WAIT_S
    while not [r for r in receiver.at("/secret") if r.headers.get("X-LeadTrail-Event-Id") == event.id]:
        assert time.monotonic() < deadline, "no webhook for the second firing"
        time.sleep(0.05)
    got = next(r for r in receiver.at("/secret") if r.headers.get("X-LeadTrail-Event-Id") == event.id)
    assert_signed(got, secret, event.id)
    dropped = admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("sec.hit"),
        webhook_url=f"{receiver.url}/other",
    )
    assert not dropped.webhook_secret_set


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    ("bad name", {"name": "Bad Name!"}, "name"),
    ("empty name", {"name": ""}, "name"),
    ("unknown kind", {"kind": 99}, "kind"),
    ("unspecified kind", {"kind": K.ALERT_KIND_UNSPECIFIED}, "kind"),
    ("threshold not a decimal", {"threshold": "lots"}, "threshold"),
    ("rate without base", {"kind": K.ALERT_KIND_RATE, "threshold": "0.5", "min_events": 1}, "base"),
    ("window of 0", {"window_s": 0}, "window"),
    ("webhook not http(s)", {"webhook_url": "ftp://127.0.0.1/hook"}, "webhook_url"),
    ("webhook not a URL", {"webhook_url": "not a url"}, "webhook_url"),
    ("group_by by type", {"group_by": query_pb2.GROUP_BY_TYPE}, "group_by"),
    ("name of 65 chars", {"name": "n" * 65}, "name"),
    ("name in capitals", {"name": "Failures"}, "name"),
    ("name starting with a dash", {"name": "-failures"}, "name"),
    ("name with a trailing newline", {"name": "failures\n"}, "name"),
    ("threshold NaN", {"threshold": "NaN"}, "threshold"),
    ("threshold Infinity", {"threshold": "Infinity"}, "threshold"),
    ("webhook without a host", {"webhook_url": "http://"}, "webhook_url"),
    ("filter type not a type", {"filter": types_filter("NOT A TYPE")}, "filter"),
    (
        "base type not a type",
        {"kind": K.ALERT_KIND_RATE, "threshold": "0.5", "base": types_filter("x.*.y")},
        "base",
    ),
    ("drop without base", {"kind": K.ALERT_KIND_DROP, "threshold": "0.3", "baseline_windows": 2}, "base"),
    ("absence with window 0", {"kind": K.ALERT_KIND_ABSENCE, "threshold": "", "window_s": 0}, "window"),
]


@pytest.mark.parametrize(("case", "change", "field_name"), BAD_RULES, ids=[c[0] for c in BAD_RULES])
def test_invalid_rules_are_refused_naming_the_field_and_store_nothing(
    keyed: Keyed, case: str, change: dict[str, Any], field_name: str
) -> None:
    admin = keyed["admin"]
    name = unique("valid")
    good = {
        "name": name,
        "kind": K.ALERT_KIND_COUNT,
        "filter": types_filter("val.x"),
        "threshold": "3",
        "window_s": 60,
    }
    admin.set_rule(**good)  # a rule the refused one would replace
    before = {r.name: r for r in admin.rules()}
    error = status_of(lambda: admin.set_rule(**{**good, **change}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, error.code(), error.details())
    assert field_name in (error.details() or ""), (case, error.details())
    after = {r.name: r for r in admin.rules()}
    assert after.keys() == before.keys(), case
    assert after[name].kind == before[name].kind and after[name].threshold == before[name].threshold, case
    assert after[name].window_s == before[name].window_s and after[name].webhook_url == "", case


def test_valid_edges_of_a_rule_are_accepted(keyed: Keyed) -> None:
    admin = keyed["admin"]
    name = "9" + "a_-" * 21  # 64 characters, starting with a digit
    answer = admin.set_rule(
        name=name,
        kind=K.ALERT_KIND_COUNT,
        filter=types_filter("edge.x"),
        threshold="3",
        window_s=1,
        webhook_url="https://127.0.0.1:9/hook",
    )
    assert answer.name == name and Decimal(answer.threshold) == 3
    assert answer.webhook_url == "https://127.0.0.1:9/hook" and not answer.webhook_secret_set
    assert name in {r.name for r in admin.rules()}
    admin.delete_rule(name)


@pytest.mark.parametrize("type_", ["alert.fired", "alert.resolved", "alert.delivered", "export.completed"])
def test_clients_cannot_append_server_event_types(keyed: Keyed, type_: str) -> None:
    admin = keyed["admin"]
    lead = unique("forged")
    error = status_of(lambda: admin.append(ev("ok.event", lead), ev(type_, lead)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert admin.query(lead_id=lead) == [], "a refused append stored something"


# -- webhooks --------------------------------------------------------------------------------------


def test_webhook_posts_the_signed_alert_event(keyed: Keyed, receiver: Receiver) -> None:
    admin = keyed["admin"]
    rule, secret = unique("hook"), "hook-secret-1"
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("wh.hit"),
        webhook_url=f"{receiver.url}/ok",
        webhook_secret=secret,
    )
    admin.append(ev("wh.hit", "wh-lead"))
    event = admin.wait_alerts(rule, lambda f: len(f) >= 1)[0]
    (got,) = receiver.wait("/ok", 1)
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["content-type"].split(";")[0].strip() == "application/json"
    assert headers["x-leadtrail-event-id"] == event.id
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-leadtrail-signature"], expected), headers["x-leadtrail-signature"]
    body = json.loads(got.body)
    assert body["id"] == event.id and body["type"] == "alert.fired"
    assert body["lead_id"] == "wh-lead" and body["flow_id"] == "alerts"
    (line,) = [e for e in admin.export_jsonl(types=["alert.fired"], lead_id="wh-lead") if e["id"] == event.id]
    assert body == line, "the body is not the export line of the alert event"


def test_webhook_retries_and_records_each_attempt(keyed: Keyed, receiver: Receiver) -> None:
    admin = keyed["admin"]
    rule, secret = unique("flaky"), "hook-secret-2"
    receiver.fail_first["/flaky"] = 1
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("whf.hit"),
        webhook_url=f"{receiver.url}/flaky",
        webhook_secret=secret,
    )
    admin.append(ev("whf.hit", "whf-lead"))
    event = admin.wait_alerts(rule, lambda f: len(f) >= 1)[0]
    first, second = receiver.wait("/flaky", 2)[:2]
    assert first.body == second.body
    for got in (first, second):
        headers = {k.lower(): v for k, v in got.headers.items()}
        assert headers["x-leadtrail-event-id"] == event.id
        expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
        assert headers["x-leadtrail-signature"] == expected

    def attempts() -> list[event_pb2.Event]:
        found = admin.query(types=["alert.delivered", "alert.delivery_failed"])
        mine = [
            e
            for e in found
            if event.id in json.dumps(MessageToDict(e)) or rule in json.dumps(MessageToDict(e))
        ]
        return sorted(mine, key=lambda e: e.position)

    deadline = time.monotonic() + WAIT_S
    while [e.type for e in attempts()] != ["alert.delivery_failed", "alert.delivered"]:
        assert time.monotonic() < deadline, [(e.type, MessageToDict(e.details)) for e in attempts()]
        time.sleep(0.05)
    assert all(e.flow_id == "alerts" for e in attempts())
    assert secret not in json.dumps([MessageToDict(e) for e in attempts()])


def delivery_attempts(caller: Caller, fired_ids: set[str], rule: str = "") -> list[event_pb2.Event]:
    """The ``alert.delivered``/``alert.delivery_failed`` events naming one of ``fired_ids`` or the rule."""
    found = caller.query(types=["alert.delivered", "alert.delivery_failed"])
    mine = []
    for e in found:
        text = json.dumps(MessageToDict(e))
        if any(i in text for i in fired_ids) or (rule and f'"{rule}"' in text):
            mine.append(e)
    return sorted(mine, key=lambda e: e.position)


def assert_signed(got: Received, secret: str, event_id: str) -> None:
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["content-type"].split(";")[0].strip() == "application/json"
    assert headers["x-leadtrail-event-id"] == event_id
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-leadtrail-signature"], expected), headers["x-leadtrail-signature"]
    assert json.loads(got.body)["id"] == event_id


def test_webhook_notifies_the_firing_and_the_resolution(keyed: Keyed, receiver: Receiver) -> None:
    admin = keyed["admin"]
    rule, secret = unique("both"), "hook-secret-3"
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_RATE,
        filter=types_filter("whb.failed"),
        base=types_filter("whb.*"),
        threshold="0.5",
        window_s=3600,
        min_events=2,
        webhook_url=f"{receiver.url}/both",
        webhook_secret=secret,
    )
    admin.append(ev("whb.failed", "b1"), ev("whb.failed", "b2"))
    admin.wait_alerts(rule, lambda f: len(f) >= 1)
    admin.append(*(ev("whb.delivered", f"c{i}") for i in range(4)))
    found = admin.wait_alerts(rule, lambda f: len(f) >= 2)
    assert [e.type for e in found] == ["alert.fired", "alert.resolved"]
    posts = receiver.wait("/both", 2)
    by_id = {json.loads(p.body)["id"]: p for p in posts}
    assert set(by_id) == {found[0].id, found[1].id}, list(by_id)
    for event in found:
        assert_signed(by_id[event.id], secret, event.id)
        assert json.loads(by_id[event.id].body)["type"] == event.type


def test_webhook_receiver_that_hangs_is_cut_off_and_retried(keyed: Keyed, receiver: Receiver) -> None:
    admin = keyed["admin"]
    rule, secret = unique("hang"), "hook-secret-4"
    receiver.hang_first["/hang"] = 1
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_MATCH,
        filter=types_filter("whh.hit"),
        webhook_url=f"{receiver.url}/hang",
        webhook_secret=secret,
    )
    admin.append(ev("whh.hit", "whh-lead"))
    event = admin.wait_alerts(rule, lambda f: len(f) >= 1)[0]
    first, second = receiver.wait("/hang", 2)[:2]
    assert_signed(first, secret, event.id)
    assert_signed(second, secret, event.id)
    deadline = time.monotonic() + WAIT_S
    while [e.type for e in delivery_attempts(admin, {event.id}, rule)][-1:] != ["alert.delivered"]:
        assert time.monotonic() < deadline, [e.type for e in delivery_attempts(admin, {event.id}, rule)]
        time.sleep(0.05)
    assert next(e.type for e in delivery_attempts(admin, {event.id}, rule)) == "alert.delivery_failed"


# -- /metrics --------------------------------------------------------------------------------------


def scrape(keyed: Keyed, key: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{keyed.server.http_address}/metrics")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, [])
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def test_metrics_need_an_admin_or_analyst_key(keyed: Keyed) -> None:
    assert keyed.server.http_address, keyed.server.output
    assert scrape(keyed, None)[0] == 401
    assert scrape(keyed, "not-a-key")[0] == 401
    assert scrape(keyed, keyed.keys["reader"])[0] == 403
    assert scrape(keyed, keyed.keys["writer"])[0] == 403
    for who in ("admin", "analyst"):
        status, text = scrape(keyed, keyed.keys[who])
        assert status == 200, who
        assert "leadtrail_" in text


def test_metrics_name_the_six_metrics_and_count_appends(keyed: Keyed) -> None:
    admin = keyed["admin"]
    kind = "met." + unique("x").replace("-", "_")
    admin.append(*(ev(kind, f"mm{i}", outcome=event_pb2.OUTCOME_FAILURE) for i in range(3)))
    admin.append(*(ev(kind, f"mn{i}", outcome=event_pb2.OUTCOME_SUCCESS) for i in range(2)))
    refused = status_of(
        lambda: admin.append(ev(kind, "mx"), event_pb2.Event(type=kind, lead_id="", flow_id="f"))
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    deadline = time.monotonic() + 20
    while True:  # counted as each group commits, just after its appends are acknowledged
        status, text = scrape(keyed, keyed.keys["admin"])
        assert status == 200
        found = samples(text)
        seen = [
            v for labels, v in found.get("leadtrail_events_appended_total", []) if labels.get("type") == kind
        ]
        if sum(seen) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    families = {f.name for f in text_string_to_metric_families(text)}
    for name in METRIC_NAMES:
        assert name in found or name.removesuffix("_total") in families, (name, sorted(families))
    assert "histogram" in {
        f.type for f in text_string_to_metric_families(text) if f.name == "leadtrail_append_seconds"
    }
    counted = [
        (labels, value)
        for labels, value in found.get("leadtrail_events_appended_total", [])
        if labels.get("type") == kind
    ]
    assert {"type", "outcome"} <= set(counted[0][0]) if counted else False, found.get(
        "leadtrail_events_appended_total"
    )
    assert sum(v for _, v in counted) == 5, counted
    by_outcome = {labels["outcome"].lower(): v for labels, v in counted}
    assert [v for o, v in by_outcome.items() if "failure" in o] == [3], by_outcome
    assert [v for o, v in by_outcome.items() if "success" in o] == [2], by_outcome


def test_metrics_alerts_firing_is_one_while_the_rule_fires(keyed: Keyed) -> None:
    admin = keyed["admin"]
    rule = unique("gauge")
    admin.set_rule(
        name=rule,
        kind=K.ALERT_KIND_RATE,
        filter=types_filter("gg.failed"),
        base=types_filter("gg.*"),
        threshold="0.5",
        window_s=3600,
        min_events=2,
    )

    def firing_value() -> float | None:
        status, text = scrape(keyed, keyed.keys["analyst"])
        assert status == 200
        values = [
            v for labels, v in samples(text).get("leadtrail_alerts_firing", []) if labels.get("rule") == rule
        ]
        return values[0] if values else None

    assert firing_value() in (None, 0)
    admin.append(ev("gg.failed", "g1"), ev("gg.failed", "g2"))
    admin.wait_alerts(rule, lambda f: len(f) >= 1)
    deadline = time.monotonic() + WAIT_S
    while firing_value() != 1:
        assert time.monotonic() < deadline, firing_value()
        time.sleep(0.05)
    admin.append(*(ev("gg.delivered", f"h{i}") for i in range(4)))
    admin.wait_alerts(rule, lambda f: len(f) >= 2)
    deadline = time.monotonic() + WAIT_S
    while firing_value() not in (None, 0):
        assert time.monotonic() < deadline, firing_value()
        time.sleep(0.05)


def histogram_count(text: str) -> float:
    return sum(v for _, v in samples(text).get("leadtrail_append_seconds_count", []))


def test_metrics_append_seconds_and_subscribers_move(keyed: Keyed) -> None:
    admin = keyed["admin"]
    status, text = scrape(keyed, keyed.keys["admin"])
    assert status == 200
    count_before = histogram_count(text)
    subscribers_before = sum(v for _, v in samples(text).get("leadtrail_subscribers", []))
    for i in range(3):
        admin.append(ev("hist.step", f"h{i}"))
    status, text = scrape(keyed, keyed.keys["admin"])
    assert histogram_count(text) >= count_before + 3, (count_before, histogram_count(text))
    request = stream_pb2.SubscribeRequest(filter=types_filter("nothing.here"), from_end=True)
    call = admin.stream.Subscribe(request, metadata=admin.metadata, timeout=60)
    try:
        next(call)  # caught_up or a checkpoint: the subscription is open
        deadline = time.monotonic() + WAIT_S
        while True:
            status, text = scrape(keyed, keyed.keys["admin"])
            now = sum(v for _, v in samples(text).get("leadtrail_subscribers", []))
            if now >= subscribers_before + 1:
                break
            assert time.monotonic() < deadline, (subscribers_before, now)
            time.sleep(0.05)
    finally:
        call.cancel()
    deadline = time.monotonic() + WAIT_S
    while True:
        status, text = scrape(keyed, keyed.keys["admin"])
        now = sum(v for _, v in samples(text).get("leadtrail_subscribers", []))
        if now == subscribers_before:
            break
        assert time.monotonic() < deadline, (subscribers_before, now)
        time.sleep(0.05)


# -- restart ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_neither_repeats_nor_misses_a_firing(tmp_path: Path, receiver: Receiver, sig: int) -> None:
    server = start_server(tmp_path / "data")
    hook = f"/restart-{sig}"
    receiver.failing.add(hook)  # a webhook still being retried when the server stops
    caller = Caller(server.address)
    try:
        # a store without keys serves /metrics to anyone
        with urllib.request.urlopen(f"http://{server.http_address}/metrics", timeout=10) as answer:
            assert answer.status == 200
            assert "leadtrail_alerts_firing" in {
                f.name for f in text_string_to_metric_families(answer.read().decode())
            }
        caller.set_rule(name=SENTINEL_RULE, kind=K.ALERT_KIND_MATCH, filter=types_filter(SENTINEL_TYPE))
        caller.set_rule(
            name="busy", kind=K.ALERT_KIND_COUNT, filter=types_filter("rs.step"), threshold="2", window_s=3600
        )
        caller.set_rule(
            name="share",
            kind=K.ALERT_KIND_RATE,
            filter=types_filter("rs.failed"),
            base=types_filter("rs.failed", "rs.delivered"),
            threshold="0.5",
            window_s=3600,
            min_events=2,
        )
        caller.set_rule(name="quiet", kind=K.ALERT_KIND_ABSENCE, filter=types_filter("rs.ping"), window_s=1)
        caller.set_rule(name="gap", kind=K.ALERT_KIND_ABSENCE, filter=types_filter("rs.beat"), window_s=2)
        caller.set_rule(
            name="hit",
            kind=K.ALERT_KIND_MATCH,
            filter=types_filter("rs.hit"),
            webhook_url=f"{receiver.url}{hook}",
            webhook_secret="restart-secret",
        )
        caller.append(ev("rs.step", "s1"), ev("rs.step", "s2"), ev("rs.hit", "before"))
        caller.append(ev("rs.failed", "f1"), ev("rs.failed", "f2"))
        caller.wait_alerts("busy", lambda f: len(f) >= 1)
        caller.wait_alerts("share", lambda f: len(f) >= 1)
        before = caller.wait_alerts("hit", lambda f: len(f) >= 1)[0]
        receiver.wait(hook, 1)  # its first delivery failed: retries go on
        caller.append(ev("rs.ping", "p1", "pinger"))
        caller.wait_alerts("quiet", lambda f: len(f) >= 1)  # silent for 1 s: fired
        caller.append(ev("rs.beat", "b1", "beater"))  # silent for 2 s only after the stop
        # a commit whose firing may not be written yet when the server stops
        caller.append(ev("rs.hit", "at-stop"))
        caller.close()
        status = server.stop(sig)
        assert status == (0 if sig == signal.SIGTERM else -signal.SIGKILL), server.output
        receiver.failing.discard(hook)
        server.start()
        caller = Caller(server.address)
        caller.append(ev("rs.step", "s3"), ev("rs.hit", "after"))
        caller.append(*(ev("rs.delivered", f"d{i}") for i in range(4)))  # "share" clears: 2 of 6
        found = caller.wait_alerts("hit", lambda f: {"before", "at-stop", "after"} <= {e.lead_id for e in f})
        caller.wait_alerts("share", lambda f: len(f) >= 2)
        caller.settle()
        assert sorted(e.lead_id for e in caller.alert_events("hit")) == ["after", "at-stop", "before"]
        assert summary(caller.alert_events("busy")) == [("alert.fired", "", "rule:busy")]
        assert [e.type for e in caller.alert_events("share")] == ["alert.fired", "alert.resolved"]
        assert [a.rule for a in caller.list_alerts(firing_only=True) if a.rule == "busy"] == ["busy"]
        gap = caller.wait_alerts("gap", lambda f: len(f) >= 1)
        caller.settle()
        assert summary(caller.alert_events("quiet")) == [("alert.fired", "", "rule:quiet")]
        assert summary(gap) == [("alert.fired", "", "rule:gap")]
        assert len(found) == 3
        # the webhook of the firing before the stop is delivered after the restart, for the same event
        fired_ids = {e.id for e in found}
        deadline = time.monotonic() + WAIT_S
        while "alert.delivered" not in [e.type for e in delivery_attempts(caller, {before.id})]:
            assert time.monotonic() < deadline, [
                (e.type, details(e)) for e in delivery_attempts(caller, fired_ids, "hit")
            ]
            time.sleep(0.05)
        ids = {r.headers.get("X-LeadTrail-Event-Id") for r in receiver.at(hook)}
        assert ids <= fired_ids, ids
        assert before.id in ids
    finally:
        caller.close()
        receiver.failing.discard(hook)
        if server.child is not None and server.child.proc.poll() is None:
            assert server.stop() == 0, server.output
